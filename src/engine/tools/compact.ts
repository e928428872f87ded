/**
 * Compaction: moves clusters down into the free space inside the file, so that no free cluster is left
 * below the last one in use, rewrites every reference, then truncates the file.
 *
 * What moves: guest data (normal, preallocated-zero and compressed clusters, VM state), L2 tables, L1 tables
 * (active and of every snapshot), the snapshot table, refcount blocks and the refcount table, the persistent
 * bitmaps' directory, tables and data clusters. The header
 * cluster stays. Structures spanning several clusters (L1 tables, refcount and snapshot tables, compressed
 * data that crosses a cluster boundary) move as one unit into a free run of their length.
 *
 * One pass:
 *   1. plan: the units in use, from the top of the file down, each into the lowest free run below it. Only
 *      clusters no structure on disk references are targets; a unit's old place is never a target in the
 *      same pass, so nothing still referenced is ever overwritten;
 *   2. set the dirty bit (and clear the autoclear bits refcow does not maintain; the bitmaps' stays: they move
 *      like the tables, consistent at every step);
 *   3. write every moved unit at its target: data copied, tables rewritten with the new offsets, refcount
 *      blocks with the counts of the new layout — then flush;
 *   4. rewrite in place the tables that stay where they are but point to moved clusters — then flush. Each
 *      entry then holds either its old value (whose cluster is intact) or its new one (durable since 3);
 *   5. the header switches to the new L1 table, refcount table and snapshot table — then flush;
 *   6. truncate past the last cluster in use, clear the dirty bit.
 * A crash anywhere leaves an image whose tables are consistent; its refcounts may be stale (written in 3 and
 * 4 for the new layout) but the dirty bit is set, so refcow or QEMU rebuilds them at the next open, exactly
 * as after a crash under lazy refcounts. What the guest wrote before compaction began is never lost.
 *
 * Passes repeat while one still moves something (a multi-cluster unit may find room only once the previous
 * pass freed the old places). Needs a version 3 image (for the dirty bit) and an image that passes check.
 */
import type { BlockFile, IoPurpose } from "../../io/block-file.js";
import { readU64, viewOf, writeU64 } from "../../format/bytes.js";
import { parseBitmapTable } from "../../format/bitmaps.js";
import { AUTOCLEAR_BITMAPS, INCOMPAT_DIRTY } from "../../format/features.js";
import { ClusterType, decodeL1, encodeL1 } from "../../format/l1l2.js";
import { encodeReftableEntry } from "../../format/refcount-block.js";
import { snapshotTableSize } from "../../format/snapshot-table.js";
import { checkImage, referenceCounts } from "../check/check.js";
import { ImageFormatError, RequestError, UnsupportedFeatureError } from "../errors.js";
import type { ImageCore } from "../image-core.js";
import { openImage } from "../open/image-open.js";
import type { SchemeCatalog } from "../allocation/scheme-seam.js";
import type { ImageOpenOptions } from "../types.js";

/** The scheme to open the image with (its close leaves plain qcow2 before anything moves); read-only is refused. */
export interface CompactOptions extends Pick<ImageOpenOptions, "scheme" | "schemeOptions" | "readOnly"> {
  /** The scheme catalog the image is opened with (OpenOptions.schemes). */
  schemes: SchemeCatalog;
}

/** Clusters moved, by what they hold. */
export interface MovedClusters {
  data: number;
  l2: number;
  l1: number;
  refcount: number;
  snapshotTable: number;
  /** The persistent bitmaps' directory, tables and data. */
  bitmaps: number;
}

export interface CompactResult {
  /** File size before and after, in bytes. */
  bytesBefore: number;
  bytesAfter: number;
  clusterSize: number;
  /** Clusters moved over all passes. */
  clustersMoved: number;
  moved: MovedClusters;
  /** Passes that changed the file. */
  passes: number;
  /** Clusters in use after compaction (the file holds exactly these). */
  clustersInUse: number;
}

type Role = "header" | "reftable" | "refblock" | "l1" | "l2" | "data" | "snaptable" | "bitmapdir" | "bitmaptable" | "bitmapdata";

/** Clusters that move together, with their place after the pass (-1: they stay). */
interface Unit {
  start: number;
  len: number;
  role: Role;
  target: number;
}

const MAX_PASSES = 8;
/** Largest single copy of data clusters. */
const COPY_BYTES = 4 * 1024 * 1024;

/**
 * Compacts the qcow2 image in `file` (which must be writable and closed everywhere else). The file stays open.
 * Throws before moving anything for a read-only open, a version 2 image or an image that fails the check (the
 * open and close of a scheme other than eager may still have rewritten its own structures by then).
 */
export function compactImage(file: BlockFile, opts: CompactOptions): CompactResult {
  if (opts.readOnly || file.readOnly) throw new RequestError("cannot compact an image opened read-only");
  const bytesBefore = file.size();
  const moved: MovedClusters = emptyMoved();
  let passes = 0;
  let clusterSize = 0;
  let inUse = 0;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    // The first open is with the caller's scheme (which may have leftovers to recover); later passes find a
    // plain image.
    const img = openImage(file, { schemes: opts.schemes, scheme: pass === 0 ? opts.scheme : "eager", schemeOptions: pass === 0 ? opts.schemeOptions : undefined, noBacking: true, noPrepare: true, cache: "writeback" }, opts.schemes);
    let r: PassResult;
    try {
      clusterSize = img.clusterSize;
      r = compactPass(img, pass === 0);
    } finally {
      img.abandon();
    }
    inUse = r.clustersInUse;
    if (!r.changed) break;
    passes++;
    for (const k of Object.keys(moved) as (keyof MovedClusters)[]) moved[k] += r.moved[k];
    // Another pass can only help when this one moved something (old places are free now).
    if (Object.values(r.moved).every((n) => n === 0)) break;
  }
  const clustersMoved = Object.values(moved).reduce((a, b) => a + b, 0);
  return { bytesBefore, bytesAfter: file.size(), clusterSize, clustersMoved, moved, passes, clustersInUse: inUse };
}

interface PassResult {
  changed: boolean;
  moved: MovedClusters;
  clustersInUse: number;
}

function compactPass(img: ImageCore, first: boolean): PassResult {
  const h = img.header;
  const cs = img.clusterSize;
  if (h.version !== 3) {
    throw new UnsupportedFeatureError("compaction needs a version 3 (compat=1.1) image: its crash safety relies on the dirty bit (convert with 'qemu-img amend -o compat=1.1')");
  }
  // Plain qcow2 with exact refcounts from here on; the scheme's in-memory state would not survive the moves.
  img.detachScheme();
  if (first) {
    const check = checkImage(img);
    if (check.corruptions > 0 || check.checkErrors > 0) {
      const n = check.corruptions + check.checkErrors;
      throw new ImageFormatError(`image has ${n} error${n === 1 ? "" : "s"} (${check.messages.slice(0, 2).join("; ")}): repair it with 'check -r all' before compacting`);
    }
  }
  const layout = catalog(img);
  const plan = place(img, layout);
  const noop = plan.units.every((u) => u.target < 0) && plan.end * cs >= img.file.size() && !plan.countsDiffer;
  if (noop) return { changed: false, moved: emptyMoved(), clustersInUse: plan.end };
  execute(img, layout, plan);
  const moved = emptyMoved();
  for (const u of plan.units) {
    if (u.target < 0) continue;
    const key: keyof MovedClusters =
      u.role === "data" ? "data" : u.role === "l2" ? "l2" : u.role === "l1" ? "l1" : u.role === "snaptable" ? "snapshotTable" : u.role.startsWith("bitmap") ? "bitmaps" : "refcount";
    moved[key] += u.len;
  }
  return { changed: true, moved, clustersInUse: plan.end };
}

function emptyMoved(): MovedClusters {
  return { data: 0, l2: 0, l1: 0, refcount: 0, snapshotTable: 0, bitmaps: 0 };
}

// ------------------------------------------------------------------------------------------------ catalog

/** Every structure of the image and where it lies. */
interface Layout {
  /** Reference count of each cluster, from the tables (what the refcounts must say). */
  refs: Uint32Array;
  /** L2 tables (old offset → raw contents), active and snapshot views together. */
  l2: Map<number, Uint8Array>;
  /** L1 tables: active first, then one per snapshot (in snapshot-table order). */
  l1: { offset: number; raw: Uint8Array }[];
  snapshotTable: { offset: number; raw: Uint8Array } | null;
  /** The bitmaps' directory and tables (raw), when the image has bitmaps. */
  bitmaps: ReturnType<ImageCore["bitmaps"]["rawLayout"]>;
  units: Unit[];
  fileClusters: number;
}

function catalog(img: ImageCore): Layout {
  const cs = img.clusterSize;
  const h = img.header;
  const file = img.file;
  const fileClusters = Math.ceil(file.size() / cs);
  const ranges: { start: number; len: number; role: Role }[] = [];
  const roles = new Map<number, Role>();
  const add = (start: number, len: number, role: Role) => {
    for (let c = start; c < start + len; c++) {
      const had = roles.get(c);
      if (had && had !== role) throw new ImageFormatError(`cluster ${c} is used both as ${describe(had)} and as ${describe(role)}: the image is corrupt, refusing to compact it`);
      roles.set(c, role);
    }
    ranges.push({ start, len, role });
  };
  add(0, 1, "header");
  const rc = img.refcounts;
  add(rc.tableOffset / cs, rc.tableClusters, "reftable");
  for (const block of rc.table) if (block) add(block / cs, 1, "refblock");
  const l1: Layout["l1"] = [];
  const readL1 = (offset: number, entries: number) => {
    const raw = new Uint8Array(entries * 8);
    if (entries) file.read(raw, offset, "l1");
    l1.push({ offset, raw });
    if (entries) add(offset / cs, Math.ceil((entries * 8) / cs), "l1");
  };
  readL1(h.l1TableOffset, h.l1Size);
  for (const sn of img.snapshots) readL1(sn.l1TableOffset, sn.l1Size);
  let snapshotTable: Layout["snapshotTable"] = null;
  if (h.nbSnapshots) {
    const raw = new Uint8Array(snapshotTableSize(img.snapshots));
    file.read(raw, h.snapshotsOffset, "snapshot-table");
    snapshotTable = { offset: h.snapshotsOffset, raw };
    add(h.snapshotsOffset / cs, Math.ceil(raw.length / cs), "snaptable");
  }
  // L2 tables of every view, once each, and the data they map.
  const l2 = new Map<number, Uint8Array>();
  for (const t of l1) {
    const v = viewOf(t.raw);
    for (let i = 0; i < t.raw.length / 8; i++) {
      const off = decodeL1(v, i * 8).l2Offset;
      if (!off || l2.has(off)) continue;
      const raw = new Uint8Array(cs);
      file.read(raw, off, "l2");
      l2.set(off, raw);
      add(off / cs, 1, "l2");
    }
  }
  for (const raw of l2.values()) {
    const v = viewOf(raw);
    for (let i = 0; i < img.l2Entries; i++) {
      const e = img.l2.decode(v, i);
      if (e.type === ClusterType.Compressed) {
        const [a, b] = img.l2.compressedClusters(e);
        add(a, b - a + 1, "data");
      } else if (e.offset) {
        add(e.offset / cs, 1, "data");
      }
    }
  }
  const bitmaps = img.bitmaps.rawLayout();
  if (bitmaps) {
    add(bitmaps.directory.offset / cs, Math.ceil(bitmaps.directory.raw.length / cs), "bitmapdir");
    for (const t of bitmaps.tables) {
      add(t.offset / cs, Math.ceil(t.raw.length / cs), "bitmaptable");
      for (const e of parseBitmapTable(t.raw, cs)) if (e.offset) add(e.offset / cs, 1, "bitmapdata");
    }
  }
  return { refs: referenceCounts(img), l2, l1, snapshotTable, bitmaps, units: mergeRanges(ranges), fileClusters };
}

function describe(role: Role): string {
  return {
    header: "the header",
    reftable: "the refcount table",
    refblock: "a refcount block",
    l1: "an L1 table",
    l2: "an L2 table",
    data: "guest data",
    snaptable: "the snapshot table",
    bitmapdir: "the bitmap directory",
    bitmaptable: "a bitmap table",
    bitmapdata: "bitmap data",
  }[role];
}

/** Units: overlapping ranges (of one role, as the catalog checked) merged. */
function mergeRanges(ranges: { start: number; len: number; role: Role }[]): Unit[] {
  ranges.sort((a, b) => a.start - b.start);
  const units: Unit[] = [];
  for (const r of ranges) {
    const last = units[units.length - 1];
    if (last && r.start < last.start + last.len) {
      last.len = Math.max(last.len, r.start + r.len - last.start);
    } else {
      units.push({ start: r.start, len: r.len, role: r.role, target: -1 });
    }
  }
  return units;
}

// ------------------------------------------------------------------------------------------------- plan

interface Plan {
  units: Unit[];
  /** New place of every cluster in use (index: old cluster; NaN when unused). */
  dest: Float64Array;
  /** Refcount block per range in the new layout (cluster index), and which of them are new. */
  blocks: Map<number, number>;
  newBlocks: Set<number>;
  /** Clusters in use after the pass (the new end of the file). */
  end: number;
  /** Count of every cluster of the new layout. */
  counts: Float64Array;
  /** Whether the counts on disk differ from the new layout's (leaks to drop even when nothing moves). */
  countsDiffer: boolean;
}

function place(img: ImageCore, layout: Layout): Plan {
  const rc = img.refcounts;
  const cs = img.clusterSize;
  const epb = rc.entriesPerBlock;
  const units = layout.units;
  let maxOld = layout.fileClusters;
  for (const u of units) maxOld = Math.max(maxOld, u.start + u.len);
  // Room for a few new refcount blocks past the end.
  const used = new Uint8Array(maxOld + 64);
  for (const u of units) used.fill(1, u.start, u.start + u.len);
  // Lowest free run of each length: it only moves up, as clusters only become used during planning.
  const lowest = new Map<number, number>();
  const freeRun = (len: number, limit: number): number => {
    let c = Math.max(1, lowest.get(len) ?? 1);
    let run = 0;
    for (; c < limit; c++) {
      if (used[c]) {
        run = 0;
      } else if (++run === len) {
        const s = c - len + 1;
        lowest.set(len, s);
        return s;
      }
    }
    lowest.set(len, Math.max(1, c - run));
    return -1;
  };
  // Longer units first (first-fit decreasing): a run of several clusters placed after the single clusters
  // could be left above a gap too short for it, and nothing above to fill the gap. Ties from the top down.
  for (const u of [...units].sort((a, b) => b.len - a.len || b.start - a.start)) {
    if (u.role === "header") continue;
    const t = freeRun(u.len, u.start);
    if (t < 0) continue;
    u.target = t;
    used.fill(1, t, t + u.len);
  }
  const dest = new Float64Array(maxOld).fill(NaN);
  /** Clusters in use in the new layout. */
  const final = new Uint8Array(used.length);
  let end = 0;
  for (const u of units) {
    const base = u.target < 0 ? u.start : u.target;
    for (let i = 0; i < u.len; i++) dest[u.start + i] = base + i;
    final.fill(1, base, base + u.len);
    end = Math.max(end, base + u.len);
  }
  // Refcount blocks of the new layout: every existing block (moved or not) keeps its range; a range that now
  // holds clusters and had no block gets a new one, in the lowest free cluster.
  const blocks = new Map<number, number>();
  rc.table.forEach((b, r) => {
    if (b) blocks.set(r, dest[b / cs]);
  });
  const newBlocks = new Set<number>();
  for (;;) {
    const missing: number[] = [];
    for (let r = 0; r <= Math.floor((end - 1) / epb); r++) {
      if (blocks.has(r)) continue;
      let needed = false;
      for (let c = r * epb; c < Math.min(end, (r + 1) * epb) && !needed; c++) needed = final[c] === 1;
      if (needed) missing.push(r);
    }
    if (!missing.length) break;
    for (const r of missing) {
      const c = freeRun(1, used.length);
      if (c < 0) throw new ImageFormatError("no room for a new refcount block");
      used[c] = 1;
      final[c] = 1;
      blocks.set(r, c);
      newBlocks.add(c);
      end = Math.max(end, c + 1);
    }
  }
  const tableEntries = (rc.tableClusters * cs) / 8;
  for (const r of blocks.keys()) {
    if (r >= tableEntries) throw new ImageFormatError(`the refcount table (${tableEntries} entries) cannot describe the compacted image`);
  }
  // Counts of the new layout: each cluster keeps the count of the cluster it comes from; new blocks count 1.
  const counts = new Float64Array(end);
  for (let c = 0; c < Math.min(layout.refs.length, dest.length); c++) {
    if (layout.refs[c] && !Number.isNaN(dest[c])) counts[dest[c]] = layout.refs[c];
  }
  for (const c of newBlocks) counts[c] = 1;
  let countsDiffer = false;
  const limit = Math.max(end, layout.fileClusters);
  const covered = rc.table.length * epb;
  for (let c = 0; c < limit && !countsDiffer; c++) {
    const onDisk = c < covered ? rc.get(c) : 0;
    if (onDisk !== (c < end ? counts[c] : 0)) countsDiffer = true;
  }
  return { units, dest, blocks, newBlocks, end, counts, countsDiffer };
}

// ---------------------------------------------------------------------------------------------- execute

function execute(img: ImageCore, layout: Layout, plan: Plan): void {
  const cs = img.clusterSize;
  const h = img.header;
  const file = img.file;
  const move = (c: number) => {
    const d = plan.dest[c];
    if (Number.isNaN(d)) throw new ImageFormatError(`internal: cluster ${c} is referenced but was not catalogued`);
    return d;
  };
  const inPlace: { data: Uint8Array; offset: number; purpose: IoPurpose }[] = [];
  const put = (oldOffset: number, data: Uint8Array, changed: boolean, purpose: IoPurpose) => {
    const target = move(oldOffset / cs) * cs;
    if (target !== oldOffset) file.write(data, target, purpose);
    else if (changed) inPlace.push({ data, offset: target, purpose });
  };

  // 2. From here until the header switch, refcounts on disk may disagree with the tables.
  h.autoclearFeatures &= AUTOCLEAR_BITMAPS;
  h.incompatibleFeatures |= INCOMPAT_DIRTY;
  img.writeHeader();

  // 3. Moved data first, in runs of neighbouring clusters.
  copyData(img, plan.units.filter((u) => (u.role === "data" || u.role === "bitmapdata") && u.target >= 0));
  // L2 tables with the new offsets of what they map.
  for (const [off, raw] of layout.l2) {
    const changed = remapL2(img, raw, move);
    put(off, raw, changed, "l2");
  }
  // L1 tables.
  for (const t of layout.l1) {
    if (!t.raw.length) continue;
    const v = viewOf(t.raw);
    let changed = false;
    for (let i = 0; i < t.raw.length / 8; i++) {
      const e = decodeL1(v, i * 8);
      if (!e.l2Offset) continue;
      const n = move(e.l2Offset / cs) * cs;
      if (n !== e.l2Offset) {
        encodeL1(v, i * 8, n, e.copied);
        changed = true;
      }
    }
    put(t.offset, t.raw, changed, "l1");
  }
  // The snapshot table: each entry's L1 offset, patched in the bytes as they are (nothing else changes).
  if (layout.snapshotTable) {
    const raw = layout.snapshotTable.raw;
    const v = viewOf(raw);
    let changed = false;
    let pos = 0;
    for (let i = 0; i < img.snapshots.length; i++) {
      const old = readU64(v, pos, "snapshot L1 offset");
      const l1Size = v.getUint32(pos + 8);
      if (l1Size) {
        const n = move(old / cs) * cs;
        if (n !== old) {
          writeU64(v, pos, n);
          changed = true;
        }
      }
      pos += Math.ceil((40 + v.getUint32(pos + 36) + v.getUint16(pos + 12) + v.getUint16(pos + 14)) / 8) * 8;
    }
    put(layout.snapshotTable.offset, raw, changed, "snapshot-table");
  }
  // Bitmap tables with the new places of their data clusters, and the directory with those of the tables.
  if (layout.bitmaps) {
    for (const t of layout.bitmaps.tables) {
      const v = viewOf(t.raw);
      let changed = false;
      for (let i = 0; i < t.raw.length / 8; i++) {
        const off = Number(v.getBigUint64(i * 8) & 0x00fffffffffffe00n);
        if (!off) continue;
        const n = move(off / cs) * cs;
        if (n !== off) {
          writeU64(v, i * 8, n);
          changed = true;
        }
      }
      put(t.offset, t.raw, changed, "bitmap");
    }
    const dir = layout.bitmaps.directory.raw;
    const v = viewOf(dir);
    let changed = false;
    for (let pos = 0; pos < dir.length; ) {
      const old = readU64(v, pos, "bitmap table offset");
      const n = move(old / cs) * cs;
      if (n !== old) {
        writeU64(v, pos, n);
        changed = true;
      }
      pos += Math.ceil((24 + v.getUint32(pos + 20) + v.getUint16(pos + 18)) / 8) * 8;
    }
    put(layout.bitmaps.directory.offset, dir, changed, "bitmap");
  }
  // Refcount blocks holding the counts of the new layout, and the table pointing to them.
  const rc = img.refcounts;
  const epb = rc.entriesPerBlock;
  const oldBlockAt = new Map<number, number>();
  rc.table.forEach((b, r) => {
    if (b) oldBlockAt.set(r, b);
  });
  for (const [r, c] of plan.blocks) {
    const buf = new Uint8Array(cs);
    for (let i = 0; i < epb; i++) {
      const n = r * epb + i;
      if (n >= plan.end) break;
      if (plan.counts[n]) rc.codec.set(buf, i, plan.counts[n]);
    }
    const old = oldBlockAt.get(r);
    if (old === undefined || old !== c * cs) file.write(buf, c * cs, "refcount");
    else inPlace.push({ data: buf, offset: old, purpose: "refcount" });
  }
  const table = new Uint8Array(rc.tableClusters * cs);
  for (const [r, c] of plan.blocks) encodeReftableEntry(viewOf(table), r, c * cs);
  put(rc.tableOffset, table, true, "refcount");
  img.sync("refcount");

  // 4. Tables that stay where they are: entries switch from intact old places to durable new ones.
  for (const w of inPlace) file.write(w.data, w.offset, w.purpose);
  img.sync("l1");

  // 5. The header switches to the moved tables.
  h.l1TableOffset = h.l1Size ? move(h.l1TableOffset / cs) * cs : h.l1TableOffset;
  if (h.nbSnapshots) h.snapshotsOffset = move(h.snapshotsOffset / cs) * cs;
  h.refcountTableOffset = move(rc.tableOffset / cs) * cs;
  if (layout.bitmaps) img.bitmaps.directoryMoved(move(layout.bitmaps.directory.offset / cs) * cs);
  img.writeHeader();

  // 6. Nothing references the old places any more.
  if (file.size() !== plan.end * cs) {
    file.truncate(plan.end * cs);
    img.sync("header");
  }
  h.incompatibleFeatures &= ~INCOMPAT_DIRTY;
  img.writeHeader();
}

/** Copies moved data units to their targets, coalescing neighbours into larger reads and writes. */
function copyData(img: ImageCore, units: Unit[]): void {
  const cs = img.clusterSize;
  const runs: { src: number; dst: number; len: number }[] = [];
  for (const u of [...units].sort((a, b) => a.start - b.start)) {
    const last = runs[runs.length - 1];
    if (last && last.src + last.len === u.start && last.dst + last.len === u.target && (last.len + u.len) * cs <= COPY_BYTES) last.len += u.len;
    else runs.push({ src: u.start, dst: u.target, len: u.len });
  }
  for (const r of runs) {
    const buf = new Uint8Array(r.len * cs);
    img.file.read(buf, r.src * cs, "guest-data");
    img.file.write(buf, r.dst * cs, "guest-data");
  }
}

/** Rewrites the host offsets of an L2 table's entries; returns whether any changed. */
function remapL2(img: ImageCore, raw: Uint8Array, move: (c: number) => number): boolean {
  const cs = img.clusterSize;
  const codec = img.l2;
  const v = viewOf(raw);
  const offsetBits = BigInt(62 - (img.clusterBits - 8));
  const offsetMask = (1n << offsetBits) - 1n;
  let changed = false;
  for (let i = 0; i < img.l2Entries; i++) {
    const e = codec.decode(v, i);
    if (e.type === ClusterType.Compressed) {
      // The whole compressed run moved as one unit: its byte offset shifts by the unit's displacement.
      const first = Math.floor(e.offset / cs);
      const shift = (move(first) - first) * cs;
      if (!shift) continue;
      const pos = i * codec.entryBytes;
      const rawEntry = v.getBigUint64(pos);
      v.setBigUint64(pos, (rawEntry & ~offsetMask) | BigInt(e.offset + shift));
      changed = true;
    } else if (e.offset) {
      const n = move(e.offset / cs) * cs;
      if (n === e.offset) continue;
      const zero = !codec.extended && (v.getUint32(i * codec.entryBytes + 4) & 1) !== 0;
      codec.encodeStandard(v, i, n, { copied: e.copied, zero });
      changed = true;
    }
  }
  return changed;
}
