/**
 * Internal snapshots: create, apply (goto), delete, and reads through a snapshot's L1 table.
 *
 * A snapshot is an entry of the snapshot table pointing to a copy of the active L1 table. Every L1 view
 * (the active one and each snapshot's) counts one reference on each L2 table and data cluster it reaches.
 *
 * Ordering, so that a crash leaves at worst leaked clusters:
 *  - create: copy L1, increment the tree and clear COPIED (flushed), then the new snapshot table, then the header;
 *  - apply: increment the snapshot's tree (flushed), then the new active L1 (flushed), then decrement the old tree;
 *  - delete: the snapshot table without it and the header (flushed), then decrement its tree.
 * The VM state (savevm) lives in the guest address space past the disk, at an L1-entry boundary, and belongs to
 * the snapshot only: the active layer drops it right after the snapshot is taken.
 */
import { alignUp, viewOf } from "../../format/bytes.js";
import { ClusterType, type L2Entry } from "../../format/l1l2.js";
import { MAX_SNAPSHOT_TABLE_BYTES, MAX_SNAPSHOTS } from "../../format/header.js";
import { serializeSnapshotTable, snapshotTableSize, type SnapshotEntry } from "../../format/snapshot-table.js";
import { encodeL1 } from "../../format/l1l2.js";
import { ImageFormatError, SnapshotError } from "../errors.js";
import { walkL2Entries, walkL2Slices } from "../tables/l2-walk.js";
import type { ImageCore } from "../image-core.js";
import type { SnapshotCreateOptions, SnapshotInfo } from "../types.js";

export function toInfo(s: SnapshotEntry): SnapshotInfo {
  return {
    id: s.id,
    name: s.name,
    vmStateSize: s.vmStateSize,
    dateSec: s.dateSec,
    dateNsec: s.dateNsec,
    vmClockNsec: s.vmClockNsec,
    icount: s.icount,
    l1Size: s.l1Size,
    l1TableOffset: s.l1TableOffset,
    diskSize: s.diskSize,
  };
}

/** Finds a snapshot by id, then by name (as QEMU's find_snapshot_by_id_or_name). */
export function findSnapshot(img: ImageCore, idOrName: string): SnapshotEntry {
  const sn = img.snapshots.find((s) => s.id === idOrName) ?? img.snapshots.find((s) => s.name === idOrName);
  if (!sn) throw new SnapshotError(`snapshot '${idOrName}' does not exist`);
  return sn;
}

function vmStateIndex(img: ImageCore): number {
  return img.vmStateOffset / (img.clusterSize * img.l2Entries);
}

export function createSnapshot(img: ImageCore, name: string, opts: SnapshotCreateOptions): SnapshotInfo {
  if (!name) throw new SnapshotError("snapshot name must not be empty");
  if (img.snapshots.length >= MAX_SNAPSHOTS) throw new SnapshotError(`too many snapshots (at most ${MAX_SNAPSHOTS})`);
  if (img.refcounts.codec.max < 2) throw new SnapshotError(`internal snapshots need refcounts of at least 2 bits (image has ${img.refcounts.codec.bits})`);
  const vmState = opts.vmState;
  if (vmState && vmState.length) img.writeGuest(img.vmStateOffset, vmState);
  img.flushMetadata();
  ensureHeadroom(img, img.l1, "create the snapshot");

  // 1. The snapshot's copy of the active L1 table.
  const { l1Offset, l1Size } = copyActiveL1(img);

  // 2. One more reference on everything the active layer reaches; nothing in it is exclusive any more.
  const copied = img.scheme.maintainsCopied;
  adjustTree(img, img.l1, +1, copied);
  for (let i = 0; i < img.l1.length && copied; i++) {
    if (img.l1Copied[i]) {
      img.l1Copied[i] = false;
      img.dirtyL1.add(i);
    }
  }
  img.flushMetadata();

  // 3. The new snapshot table, then the header that points to it.
  const entry = newEntry(img, name, l1Offset, l1Size, opts);
  writeSnapshotTable(img, [...img.snapshots, entry]);

  // 4. The VM state belongs to the snapshot only.
  if (vmState && vmState.length) dropActiveVmState(img);
  return toInfo(entry);
}

/** Writes a copy of the active L1 table (COPIED flags clear) to new clusters, for a snapshot entry. */
export function copyActiveL1(img: ImageCore): { l1Offset: number; l1Size: number } {
  const l1Size = img.l1.length;
  const l1Bytes = l1Size * 8;
  const l1Offset = l1Size ? img.scheme.allocate(Math.ceil(l1Bytes / img.clusterSize), "meta") : 0;
  const raw = new Uint8Array(l1Bytes);
  const v = new DataView(raw.buffer);
  for (let i = 0; i < l1Size; i++) encodeL1(v, i * 8, img.l1[i], false);
  if (l1Bytes) img.file.write(raw, l1Offset, "l1");
  return { l1Offset, l1Size };
}

/** A snapshot table entry for a snapshot taken now. */
export function newEntry(img: ImageCore, name: string, l1Offset: number, l1Size: number, opts: SnapshotCreateOptions): SnapshotEntry {
  const ms = (opts.date ?? new Date()).getTime();
  return {
    l1TableOffset: l1Offset,
    l1Size,
    id: String(nextId(img)),
    name,
    dateSec: Math.floor(ms / 1000),
    dateNsec: (ms % 1000) * 1_000_000,
    vmClockNsec: opts.vmClockNsec ?? 0,
    vmStateSize: opts.vmState?.length ?? 0,
    diskSize: img.size,
    icount: opts.icount,
    unknownExtra: new Uint8Array(0),
  };
}

/**
 * For schemes whose active layer is not counted on disk: makes the snapshot's tables the active layer by
 * writing its L1 entries (up to the VM-state area) over the active L1 table, durably, COPIED flags clear.
 * Reference counts are the caller's business.
 */
export function replaceActiveL1(img: ImageCore, sn: SnapshotEntry): void {
  if (sn.diskSize !== undefined && sn.diskSize !== img.size) {
    throw new SnapshotError(`snapshot '${sn.name}' has a different disk size (${sn.diskSize} bytes, image has ${img.size}); resizing on apply is not supported`);
  }
  img.flushMetadata();
  const snL1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
  const wanted = snL1.slice(0, Math.min(snL1.length, vmStateIndex(img)));
  if (wanted.length > img.l1.length) img.resizeL1(wanted.length);
  const raw = new Uint8Array(img.l1.length * 8);
  const v = new DataView(raw.buffer);
  for (let i = 0; i < img.l1.length; i++) {
    img.l1[i] = i < wanted.length ? wanted[i] : 0;
    img.l1Copied[i] = false;
    encodeL1(v, i * 8, img.l1[i], false);
  }
  img.dirtyL1.clear();
  img.file.write(raw, img.header.l1TableOffset, "l1");
  img.sync("l1");
}

export function nextId(img: ImageCore): number {
  let max = 0;
  for (const s of img.snapshots) {
    const n = Number.parseInt(s.id, 10);
    if (Number.isFinite(n) && n > max) max = n;
  }
  return max + 1;
}

/** Writes a new snapshot table (copy on write), switches the header to it and frees the old one. */
export function writeSnapshotTable(img: ImageCore, entries: SnapshotEntry[]): void {
  const cs = img.clusterSize;
  const size = snapshotTableSize(entries);
  if (size > MAX_SNAPSHOT_TABLE_BYTES) throw new SnapshotError("snapshot table would be too large");
  const offset = entries.length ? img.scheme.allocate(Math.ceil(size / cs), "meta") : 0;
  if (entries.length) {
    const buf = new Uint8Array(alignUp(size, 8));
    buf.set(serializeSnapshotTable(entries));
    img.file.write(buf, offset, "snapshot-table");
  }
  img.refcounts.cache.writeDirty();
  img.sync();
  const oldOffset = img.header.snapshotsOffset;
  const oldClusters = img.header.nbSnapshots ? Math.ceil(snapshotTableSize(img.snapshots) / cs) : 0;
  img.header.snapshotsOffset = offset;
  img.header.nbSnapshots = entries.length;
  img.writeHeader();
  img.snapshots = entries;
  for (let i = 0; i < oldClusters; i++) img.scheme.releaseNow(oldOffset / cs + i, "meta");
  img.refcounts.cache.writeDirty();
}

/** Removes the VM-state area from the active L1 (its tables stay with the snapshot). */
export function dropActiveVmState(img: ImageCore): void {
  const first = vmStateIndex(img);
  const dropped: number[] = [];
  for (let i = first; i < img.l1.length; i++) {
    if (img.l1[i]) {
      dropped.push(img.l1[i]);
      img.l1[i] = 0;
      img.l1Copied[i] = false;
      img.dirtyL1.add(i);
    }
  }
  if (!dropped.length) return;
  // The active layer's references go once the L1 without them is on disk.
  forEachReference(img, dropped, (c, kind) => img.scheme.release(c, kind));
  img.flushMetadata();
}

/**
 * The host clusters an L2 entry references, checked to lie inside the file: an entry that points a cluster or
 * more past its end is a corruption (QEMU's check calls it one), and counting it would create refcount
 * structures out there.
 */
function referencedClusters(img: ImageCore, e: L2Entry, fileClusters: number): [number, number] | undefined {
  let range: [number, number];
  if (e.type === ClusterType.Compressed) range = img.l2.compressedClusters(e);
  else if (e.offset) range = [e.offset / img.clusterSize, e.offset / img.clusterSize];
  else return undefined;
  if (range[1] >= fileClusters) {
    throw new ImageFormatError(`an L2 entry references host offset 0x${(range[1] * img.clusterSize).toString(16)}, past the end of the image (${img.file.size()} bytes)`);
  }
  return range;
}

/** Calls `fn` for every host cluster an L1 view references: its L2 tables ("l2") and their data ("data"). */
export function forEachReference(img: ImageCore, l1: number[], fn: (cluster: number, kind: "l2" | "data") => void): void {
  const fileClusters = Math.ceil(img.file.size() / img.clusterSize);
  walkL2Slices(
    img.tables,
    l1,
    ({ view }) => {
      // A slice's references are all checked before any is reported.
      const found: number[] = [];
      for (let i = 0; i < img.sliceEntries; i++) {
        const r = referencedClusters(img, img.l2.decode(view, i), fileClusters);
        if (r) for (let c = r[0]; c <= r[1]; c++) found.push(c);
      }
      for (const c of found) fn(c, "data");
    },
    { afterTable: (l2Offset) => fn(l2Offset / img.clusterSize, "l2") },
  );
}

export function applySnapshot(img: ImageCore, idOrName: string): void {
  const sn = findSnapshot(img, idOrName);
  if (sn.diskSize !== undefined && sn.diskSize !== img.size) {
    throw new SnapshotError(`snapshot '${sn.name}' has a different disk size (${sn.diskSize} bytes, image has ${img.size}); resizing on apply is not supported`);
  }
  img.flushMetadata();
  const snL1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
  const limit = vmStateIndex(img);
  const wanted = snL1.slice(0, Math.min(snL1.length, limit));
  if (wanted.length > img.l1.length) img.resizeL1(wanted.length);

  ensureHeadroom(img, wanted, "apply the snapshot");
  // 1. References for the snapshot's tree, durable before the active L1 points to it.
  adjustTree(img, wanted, +1, false);
  img.refcounts.cache.writeDirty();
  img.sync();

  // 2. The new active L1.
  const old = img.l1.slice();
  for (let i = 0; i < img.l1.length; i++) {
    img.l1[i] = i < wanted.length ? wanted[i] : 0;
    img.l1Copied[i] = false;
    img.dirtyL1.add(i);
  }
  img.flushMetadata();

  // 3. The old active tree loses its references; then COPIED flags follow the new counts.
  adjustTree(img, old, -1, false);
  if (img.scheme.maintainsCopied) recomputeCopied(img);
  img.flushMetadata();
}

export function deleteSnapshot(img: ImageCore, idOrName: string): void {
  const sn = findSnapshot(img, idOrName);
  img.flushMetadata();
  const snL1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
  writeSnapshotTable(img, img.snapshots.filter((s) => s !== sn));
  adjustTree(img, snL1, -1, false);
  const cs = img.clusterSize;
  for (let i = 0; i < Math.ceil((sn.l1Size * 8) / cs); i++) img.scheme.releaseNow(sn.l1TableOffset / cs + i, "meta");
  if (img.scheme.maintainsCopied) recomputeCopied(img);
  img.flushMetadata();
}

/**
 * Refuses, before anything is written, an operation that would push a refcount past what the refcount width
 * can hold (QEMU fails there too, but has to undo half-done updates).
 */
export function ensureHeadroom(img: ImageCore, l1: number[], what: string): void {
  const cs = img.clusterSize;
  const rc = img.refcounts;
  const adds = new Map<number, number>();
  const bump = (c: number) => adds.set(c, (adds.get(c) ?? 0) + 1);
  const fileClusters = Math.ceil(img.file.size() / cs);
  walkL2Entries(
    img.tables,
    l1,
    (e) => {
      const r = referencedClusters(img, e, fileClusters);
      if (r) for (let c = r[0]; c <= r[1]; c++) bump(c);
    },
    { beforeTable: (l2Offset) => bump(l2Offset / cs) },
  );
  const uncounted = img.scheme.uncountedReferences?.bind(img.scheme);
  for (const [c, n] of adds) {
    if (rc.get(c) + n + (uncounted ? uncounted(c) : 0) > rc.codec.max) {
      throw new SnapshotError(`cannot ${what}: cluster ${c} would have more references than ${rc.codec.bits}-bit refcounts can hold (${rc.codec.max})`);
    }
  }
}

/**
 * Adds `delta` to the count of every L2 table in `l1` and every host cluster those tables reference.
 * With `clearCopied`, also clears the COPIED flag of the L2 entries (they become shared).
 */
export function adjustTree(img: ImageCore, l1: number[], delta: number, clearCopied: boolean): void {
  const cs = img.clusterSize;
  const rc = img.refcounts;
  const fileClusters = Math.ceil(img.file.size() / cs);
  walkL2Slices(
    img.tables,
    l1,
    ({ slice }) => {
      let view = viewOf(img.l2Cache.get(slice));
      let dirty = false;
      for (let i = 0; i < img.sliceEntries; i++) {
        const e = img.l2.decode(view, i);
        referencedClusters(img, e, fileClusters);
        if (e.type === ClusterType.Compressed) {
          const [a, b] = img.l2.compressedClusters(e);
          for (let c = a; c <= b; c++) rc.change(c, delta);
        } else if (e.offset) {
          rc.change(e.offset / cs, delta);
          if (clearCopied && e.copied) {
            view = viewOf(img.l2Cache.get(slice)); // the refcount updates go through the other cache; re-got all the same
            img.l2.setCopied(view, i, false);
            dirty = true;
          }
        }
      }
      if (dirty) img.l2Cache.markDirty(slice);
    },
    { afterTable: (l2Offset) => rc.change(l2Offset / cs, delta) },
  );
}

/** Sets COPIED on exactly the active entries whose cluster has a refcount of 1 (QEMU's addend-0 pass). */
export function recomputeCopied(img: ImageCore): number {
  const cs = img.clusterSize;
  const rc = img.refcounts;
  let changed = 0;
  // Shared tables too: a scheme that does not keep COPIED exact while open leaves stale flags anywhere.
  walkL2Slices(
    img.tables,
    img.l1,
    ({ slice, view }) => {
      const changes: [number, boolean][] = [];
      for (let j = 0; j < img.sliceEntries; j++) {
        const e = img.l2.decode(view, j);
        if (e.type !== ClusterType.Normal && e.type !== ClusterType.ZeroAlloc) continue;
        const want = rc.get(e.offset / cs) === 1;
        if (want !== e.copied) changes.push([j, want]);
      }
      if (changes.length) {
        const v2 = viewOf(img.l2Cache.get(slice));
        for (const [j, want] of changes) img.l2.setCopied(v2, j, want);
        img.l2Cache.markDirty(slice);
        changed += changes.length;
      }
    },
    {
      beforeTable: (l2Offset, i) => {
        const exclusive = rc.get(l2Offset / cs) === 1;
        if (img.l1Copied[i] !== exclusive) {
          img.l1Copied[i] = exclusive;
          img.dirtyL1.add(i);
          changed++;
        }
      },
    },
  );
  return changed;
}

const snapshotL1Cache = new WeakMap<ImageCore, Map<SnapshotEntry, number[]>>();

function snapshotL1(img: ImageCore, sn: SnapshotEntry): number[] {
  let m = snapshotL1Cache.get(img);
  if (!m) {
    m = new Map();
    snapshotL1Cache.set(img, m);
  }
  let l1 = m.get(sn);
  if (!l1) {
    l1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
    m.set(sn, l1);
  }
  return l1;
}

export function readSnapshotData(img: ImageCore, idOrName: string, buf: Uint8Array, offset: number): void {
  const sn = findSnapshot(img, idOrName);
  img.readThrough(snapshotL1(img, sn), buf, offset, true);
}

export function readVmState(img: ImageCore, idOrName: string): Uint8Array {
  const sn = findSnapshot(img, idOrName);
  const buf = new Uint8Array(sn.vmStateSize);
  if (sn.vmStateSize) img.readThrough(snapshotL1(img, sn), buf, img.vmStateOffset, false);
  return buf;
}
