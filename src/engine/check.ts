/**
 * Consistency check and repair, with qemu-img check's semantics:
 *  - the expected count of each host cluster is the number of references reaching it: the header, the active
 *    L1 table and each L2 table and data cluster it reaches, the same for every snapshot, the snapshot table,
 *    the refcount table and the refcount blocks (compressed data counts once per host cluster it touches);
 *  - on-disk count > references is a leak (harmless), < references a corruption;
 *  - a COPIED flag in the active tables that disagrees with "refcount == 1" is a corruption.
 * Repair: "leaks" lowers over-counts; "all" also rebuilds the refcount structures when a count is too low and
 * fixes COPIED flags, then clears the dirty and corrupt bits.
 */
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from "../format/features.js";
import { snapshotTableSize } from "../format/snapshot-table.js";
import { ClusterType } from "../format/l1l2.js";
import { ImageFormatError } from "./errors.js";
import type { Qcow2Image } from "./qcow2-image.js";
import { recomputeCopied } from "./snapshots.js";
import type { CheckResult, RepairMode } from "./types.js";

class References {
  counts: Uint32Array = new Uint32Array(1024);
  max = -1;
  add(cluster: number): void {
    if (cluster >= this.counts.length) {
      let n = this.counts.length;
      while (n <= cluster) n *= 2;
      const next = new Uint32Array(n);
      next.set(this.counts);
      this.counts = next;
    }
    this.counts[cluster]++;
    if (cluster > this.max) this.max = cluster;
  }
  get(cluster: number): number {
    return cluster < this.counts.length ? this.counts[cluster] : 0;
  }
}

interface Walk {
  refs: References;
  messages: string[];
  corruptions: number;
  allocated: number;
  fragmented: number;
  compressed: number;
  /** Active-layer COPIED flags to verify once counts are known: [cluster, copied flag, description]. */
  copiedChecks: [number, boolean, string][];
}

export function checkImage(img: Qcow2Image, repair?: RepairMode): CheckResult {
  const first = scan(img);
  if (!repair || (first.leaks === 0 && first.corruptions === 0)) return publicResult(first);

  const rc = img.refcounts;
  const walk = first.walk;
  const messages: string[] = [];
  let leaksFixed = 0;
  let corruptionsFixed = 0;
  const tooLow = first.mismatches.some(([, onDisk, ref]) => onDisk < ref);
  const copiedErrors = first.copiedErrors;
  if (repair === "all" && (tooLow || first.structureErrors)) {
    messages.push("Rebuilding refcount structure");
    img.flushMetadata();
    const counts = walk.refs.counts.subarray(0, walk.refs.max + 1);
    rc.rebuild(counts);
    corruptionsFixed += first.mismatches.filter(([, d, r]) => d < r).length;
    leaksFixed += first.mismatches.filter(([, d, r]) => d > r).length;
  } else {
    for (const [c, onDisk, ref] of first.mismatches) {
      if (onDisk > ref || repair === "all") {
        rc.set(c, ref);
        if (onDisk > ref) leaksFixed++;
        else corruptionsFixed++;
      }
    }
  }
  // COPIED flags follow the repaired counts (QEMU checks them after fixing refcounts): "all" fixes them;
  // "leaks" too when nothing else is wrong (QEMU 3.0+).
  if (repair === "all" || first.corruptions === copiedErrors) {
    recomputeCopied(img);
    corruptionsFixed += copiedErrors;
  }
  img.flushMetadata();
  if (img.refcounts.cache.hasDirty()) {
    img.refcounts.cache.writeDirty();
    img.sync();
  }
  const second = scan(img);
  if (repair === "all" && second.corruptions === 0 && second.leaks === 0 && img.header.incompatibleFeatures & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT)) {
    img.header.incompatibleFeatures &= ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    img.writeHeader();
  }
  return {
    ...publicResult(second),
    corruptionsFixed,
    leaksFixed,
    messages: [...first.messages.map((m) => m.replace(/^(Leaked cluster|ERROR cluster)/, "Repairing cluster")), ...messages, ...second.messages],
  };
}

function publicResult(s: Scan): CheckResult {
  const { walk: _w, mismatches: _m, copiedErrors: _c, structureErrors: _s, ...result } = s;
  return result;
}

interface Scan extends CheckResult {
  walk: Walk;
  mismatches: [cluster: number, onDisk: number, ref: number][];
  copiedErrors: number;
  structureErrors: number;
}

function scan(img: Qcow2Image): Scan {
  const cs = img.clusterSize;
  const h = img.header;
  const walk: Walk = { refs: new References(), messages: [], corruptions: 0, allocated: 0, fragmented: 0, compressed: 0, copiedChecks: [] };
  let checkErrors = 0;
  let structureErrors = 0;
  const addRange = (offset: number, bytes: number) => {
    for (let c = Math.floor(offset / cs); c < Math.ceil((offset + bytes) / cs); c++) walk.refs.add(c);
  };
  img.flushMetadata();

  walk.refs.add(0); // header
  addRange(h.l1TableOffset, h.l1Size * 8);
  walkTree(img, img.l1, walk, true);
  for (const sn of img.snapshots) {
    addRange(sn.l1TableOffset, sn.l1Size * 8);
    try {
      const l1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, Number.MAX_SAFE_INTEGER, `snapshot '${sn.name}' L1 table`).offsets;
      walkTree(img, l1, walk, false);
    } catch (e) {
      walk.messages.push(`ERROR ${(e as Error).message}`);
      walk.corruptions++;
    }
  }
  if (h.nbSnapshots) addRange(h.snapshotsOffset, snapshotTableSize(img.snapshots));
  const rc = img.refcounts;
  addRange(rc.tableOffset, rc.tableClusters * cs);
  for (const block of rc.table) if (block) walk.refs.add(block / cs);

  // Compare with the on-disk counts.
  const fileClusters = Math.ceil(img.file.size() / cs);
  const last = Math.max(fileClusters, walk.refs.max + 1, rc.table.length ? 0 : 0);
  const limit = Math.min(rc.table.length * rc.entriesPerBlock, Number.MAX_SAFE_INTEGER);
  const mismatches: [number, number, number][] = [];
  let leaks = 0;
  let corruptions = walk.corruptions;
  let highest = 0;
  const messages = walk.messages;
  for (let c = 0; c < Math.max(last, 0); c++) {
    let onDisk = 0;
    try {
      onDisk = c < limit ? rc.get(c) : 0;
    } catch (e) {
      checkErrors++;
      messages.push(`ERROR reading refcount of cluster ${c}: ${(e as Error).message}`);
      continue;
    }
    const ref = walk.refs.get(c);
    if (onDisk || ref) highest = c;
    if (onDisk === ref) continue;
    mismatches.push([c, onDisk, ref]);
    if (onDisk < ref) {
      corruptions++;
      messages.push(`ERROR cluster ${c} refcount=${onDisk} reference=${ref}`);
    } else {
      leaks++;
      messages.push(`Leaked cluster ${c} refcount=${onDisk} reference=${ref}`);
    }
  }
  // Refcounts of clusters past the file end without a reference are leaks QEMU also reports (refblocks cover them).
  // COPIED flags of the active layer.
  let copiedErrors = 0;
  for (const [c, flag, what] of walk.copiedChecks) {
    let onDisk: number;
    try {
      onDisk = rc.get(c);
    } catch {
      continue;
    }
    if ((onDisk === 1) !== flag) {
      copiedErrors++;
      corruptions++;
      messages.push(`ERROR OFLAG_COPIED ${what}: refcount=${onDisk}`);
    }
  }
  for (const block of rc.table) {
    if (block && block / cs >= fileClusters) {
      structureErrors++;
    }
  }
  return {
    checkErrors,
    corruptions,
    leaks,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: (highest + 1) * cs,
    totalClusters: Math.ceil(img.size / cs),
    allocatedClusters: walk.allocated,
    fragmentedClusters: walk.fragmented,
    compressedClusters: walk.compressed,
    messages,
    walk,
    mismatches,
    copiedErrors,
    structureErrors,
  };
}

/** Counts the references of one L1 view. `active`: also collect COPIED checks and allocation statistics. */
function walkTree(img: Qcow2Image, l1: number[], walk: Walk, active: boolean): void {
  const cs = img.clusterSize;
  let nextContiguous = 0;
  const diskL1Entries = Math.ceil(img.size / (cs * img.l2Entries));
  for (let i = 0; i < l1.length; i++) {
    const l2Offset = l1[i];
    if (!l2Offset) continue;
    walk.refs.add(l2Offset / cs);
    if (active) walk.copiedChecks.push([l2Offset / cs, img.l1Copied[i], `L2 cluster: l1_index=${i} l1_entry=${l2Offset.toString(16)}`]);
    for (let s = 0; s < cs; s += img.sliceBytes) {
      let buf: Uint8Array;
      try {
        buf = img.l2Cache.get(l2Offset + s);
      } catch (e) {
        if (!(e instanceof ImageFormatError)) throw e;
        walk.messages.push(`ERROR ${e.message}`);
        walk.corruptions++;
        continue;
      }
      const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      for (let j = 0; j < img.sliceEntries; j++) {
        const e = img.l2.decode(view, j);
        const guestCluster = i * img.l2Entries + s / img.l2.entryBytes + j;
        const inDisk = i < diskL1Entries;
        if (e.type === ClusterType.Compressed) {
          const [a, b] = img.l2.compressedClusters(e);
          for (let c = a; c <= b; c++) walk.refs.add(c);
          if (active && inDisk) {
            walk.allocated++;
            walk.compressed++;
          }
        } else if (e.offset) {
          walk.refs.add(e.offset / cs);
          if (active) {
            walk.copiedChecks.push([e.offset / cs, e.copied, `data cluster: l2_entry=${(e.offset + (e.copied ? 2 ** 63 : 0)).toString(16)}`]);
            if (inDisk) {
              walk.allocated++;
              if (nextContiguous && e.offset !== nextContiguous) walk.fragmented++;
              nextContiguous = e.offset + cs;
            }
          }
        }
        void guestCluster;
      }
    }
  }
}
