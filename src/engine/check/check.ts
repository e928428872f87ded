/**
 * Consistency check and repair, with qemu-img check's semantics:
 *  - the expected count of each host cluster is the number of references reaching it: the header, the active
 *    L1 table and each L2 table and data cluster it reaches, the same for every snapshot, the snapshot table,
 *    the refcount table and the refcount blocks (compressed data counts once per host cluster it touches), the
 *    persistent bitmaps' directory, tables and data clusters;
 *  - on-disk count > references is a leak (harmless), < references a corruption;
 *  - a COPIED flag in the active tables that disagrees with "refcount == 1" is a corruption.
 * Repair: "leaks" lowers over-counts; "all" also rebuilds the refcount structures when a count is too low and
 * fixes COPIED flags; either clears the dirty and corrupt bits when no corruption is left.
 */
import { alignUp } from "../../format/bytes.js";
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from "../../format/features.js";
import { snapshotTableSize } from "../../format/snapshot-table.js";
import { ClusterType } from "../../format/l1l2.js";
import { ImageFormatError } from "../errors.js";
import type { ImageCore } from "../image-core.js";
import { walkL2Entries, walkL2Slices } from "../tables/l2-walk.js";
import { recomputeCopied } from "../snapshots/snapshots.js";
import type { CheckResult, RepairMode } from "../types.js";

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
  /**
   * Corrupt table entries no repair can fix (unaligned, reserved bits, past the end of the file...): their
   * references cannot be counted, so no count may be lowered on their account either.
   */
  unfixable: number;
}

export function checkImage(img: ImageCore, repair?: RepairMode): CheckResult {
  if (!repair) return { ...publicResult(scan(img, true)), ...inUseBitmaps(img) };
  // Repair follows qemu-img: counts first (a count of 0 for a referenced cluster means a rebuild, other
  // mismatches are fixed in place when the mode allows), then COPIED flags against the repaired counts.
  const first = scan(img, false);
  const rc = img.refcounts;
  // First the findings, as a report (qemu-img's first compare pass).
  const messages: string[] = [...first.messages];
  for (const [c, onDisk, ref] of first.mismatches) messages.push(`${onDisk < ref ? "ERROR" : "Leaked"} cluster ${c} refcount=${onDisk} reference=${ref}`);
  let leaksFixed = 0;
  let corruptionsFixed = 0;
  const rebuild = first.structureErrors > 0 || first.mismatches.some(([, d, r]) => d === 0 && r > 0);
  if (repair === "leaks" && (img.refcountProblems.some((p) => p.rebuild) || first.mismatches.some(([, d, r]) => d === 0 && r > 0))) {
    // As qemu-img: a leak repair cannot rebuild the refcount structures; the check fails.
    messages.push("ERROR need to rebuild refcount structures");
    return { ...publicResult(first), messages, failure: "need to rebuild refcount structures: repair with -r all" };
  }
  if (first.unfixable > 0) {
    // Entries whose references cannot be counted: any count lowered now could be one of theirs. Nothing is
    // changed; the report says what is wrong.
    const report = scan(img, true);
    const what = first.messages.find((m) => m.startsWith("ERROR")) ?? "";
    return {
      ...publicResult(report),
      refused: `cannot repair: ${first.unfixable} corrupt table entr${first.unfixable === 1 ? "y" : "ies"} no repair can fix (${what.replace(/^ERROR:? /, "")}); nothing was changed. Copy out what is readable with 'convert'`,
    };
  }
  if (rebuild && repair === "all") {
    messages.push("Rebuilding refcount structure");
    img.flushMetadata();
    const oldTable = { offset: rc.tableOffset, clusters: rc.tableClusters, blocks: rc.table.filter((b) => b) };
    rc.rebuild(first.walk.refs.counts.subarray(0, first.walk.refs.max + 1));
    // The invalid entries of the old table went with it.
    img.refcountProblems.length = 0;
    // The old refcount structures are not referenced any more: QEMU reports them as repaired leaks.
    const old = new Set<number>(oldTable.blocks.map((b) => b / img.clusterSize));
    for (let i = 0; i < oldTable.clusters; i++) old.add(oldTable.offset / img.clusterSize + i);
    for (const c of [...old].sort((a, b) => a - b)) messages.push(`Repairing cluster ${c} refcount=1 reference=0`);
    corruptionsFixed += first.mismatches.filter(([, d, r]) => d < r).length;
    leaksFixed += first.mismatches.filter(([, d, r]) => d > r).length;
  } else {
    // Then the fixes the mode allows (qemu-img's second compare pass).
    for (const [c, onDisk, ref] of first.mismatches) {
      const fixable = onDisk !== 0 && (onDisk > ref || repair === "all");
      messages.push(`${fixable ? "Repairing" : onDisk < ref ? "ERROR" : "Leaked"} cluster ${c} refcount=${onDisk} reference=${ref}`);
      if (!fixable) continue;
      rc.set(c, ref);
      if (onDisk > ref) leaksFixed++;
      else corruptionsFixed++;
    }
    // Counts past the end of the file are not compared (as qemu-img does not), but a repair clears those that
    // nothing references: a crash can leave the count of a cluster whose write never extended the file, and
    // it would show as a leak once the file grows over it.
    leaksFixed += clearCountsPastEnd(img, first.walk.refs, messages);
  }
  // COPIED flags follow the repaired counts ("leaks" fixes them only when nothing else is wrong).
  if (repair === "all" || first.corruptions === 0) {
    const fixed = fixCopied(img);
    for (const m of fixed) messages.push(`Repairing ${m}`);
    corruptionsFixed += fixed.length;
  }
  img.flushMetadata();
  if (img.refcounts.cache.hasDirty()) {
    img.refcounts.cache.writeDirty();
    img.sync("refcount");
  }
  const after = scan(img, true);
  // As QEMU (qcow2_co_check_locked): a repair that leaves no corruption clears the dirty and corrupt bits,
  // whichever mode it ran in (leaks left by -r leaks are harmless).
  if (after.corruptions === 0 && after.checkErrors === 0 && img.header.incompatibleFeatures & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT)) {
    img.header.incompatibleFeatures &= ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    img.writeHeader();
  }
  return { ...publicResult(after), corruptionsFixed, leaksFixed, messages, ...inUseBitmaps(img) };
}

/** Zeroes the counts of unreferenced clusters past the end of the file; returns how many. */
function clearCountsPastEnd(img: ImageCore, refs: References, messages: string[]): number {
  const rc = img.refcounts;
  const epb = rc.entriesPerBlock;
  const fileClusters = Math.ceil(img.file.size() / img.clusterSize);
  let cleared = 0;
  for (let r = Math.floor(fileClusters / epb); r < rc.table.length; r++) {
    if (!rc.table[r]) continue;
    for (let c = Math.max(r * epb, fileClusters); c < (r + 1) * epb; c++) {
      const n = rc.get(c);
      if (n === 0 || refs.get(c) !== 0) continue;
      messages.push(`Repairing cluster ${c} refcount=${n} reference=0`);
      rc.set(c, 0);
      cleared++;
    }
  }
  return cleared;
}

/** Sets the COPIED flags of the active tables from the counts; returns a description of each change. */
function fixCopied(img: ImageCore): string[] {
  const cs = img.clusterSize;
  const rc = img.refcounts;
  const out: string[] = [];
  walkL2Entries(
    img.tables,
    img.l1,
    (e) => {
      if (e.type !== ClusterType.Normal && e.type !== ClusterType.ZeroAlloc) return;
      const n = rc.get(e.offset / cs);
      if ((n === 1) !== e.copied) out.push(`OFLAG_COPIED data cluster: l2_entry=${hexEntry(e.offset, e.copied)} refcount=${n}`);
    },
    {
      beforeTable: (l2, i) => {
        const count = rc.get(l2 / cs);
        if ((count === 1) !== img.l1Copied[i]) out.push(`OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hexEntry(l2, img.l1Copied[i])} refcount=${count}`);
      },
    },
  );
  recomputeCopied(img);
  return out;
}

/** An L1/L2 entry as qemu-img prints it: hexadecimal, with the COPIED bit. */
function hexEntry(offset: number, copied: boolean): string {
  return ((BigInt(offset) | (copied ? 1n << 63n : 0n))).toString(16);
}

function publicResult(s: Scan): CheckResult {
  const { walk: _w, mismatches: _m, copiedErrors: _c, structureErrors: _s, unfixable: _u, ...result } = s;
  return result;
}

/** The names of the bitmaps found in-use (inconsistent) when the image was opened, when there are some. */
function inUseBitmaps(img: ImageCore): { inUseBitmaps?: string[] } {
  const names = img.bitmaps
    .infos()
    .filter((b) => b.inUse)
    .map((b) => b.name);
  return names.length ? { inUseBitmaps: names } : {};
}

interface Scan extends CheckResult {
  walk: Walk;
  mismatches: [cluster: number, onDisk: number, ref: number][];
  copiedErrors: number;
  structureErrors: number;
  unfixable: number;
}

/**
 * The standard reference count of every host cluster, computed from the tables (what a rebuild writes):
 * header, L1 tables, L2 tables and data of every view, snapshot table, refcount table and blocks, bitmaps.
 */
export function referenceCounts(img: ImageCore): Uint32Array {
  const refs = scan(img, false).walk.refs;
  return refs.counts.slice(0, refs.max + 1);
}

/**
 * One pass over the image. `withCopied` (a report, not a repair pass): print each count mismatch and also
 * compare COPIED flags with the on-disk counts.
 */
function scan(img: ImageCore, withCopied: boolean): Scan {
  const cs = img.clusterSize;
  const h = img.header;
  const walk: Walk = { refs: new References(), messages: [], corruptions: 0, allocated: 0, fragmented: 0, compressed: 0, copiedChecks: [], unfixable: 0 };
  let checkErrors = 0;
  let structureErrors = 0;
  const addRange = (offset: number, bytes: number) => {
    for (let c = Math.floor(offset / cs); c < Math.ceil((offset + bytes) / cs); c++) walk.refs.add(c);
  };
  img.flushMetadata();

  walk.refs.add(0); // header
  // Entries an open for check found invalid (they were read as absent).
  for (const m of img.l1Problems) {
    walk.messages.push(m);
    walk.corruptions++;
    walk.unfixable++;
  }
  for (const { message: m } of img.refcountProblems) {
    walk.messages.push(m);
    walk.corruptions++;
    structureErrors++;
  }
  addRange(h.l1TableOffset, h.l1Size * 8);
  walkTree(img, img.l1, walk, true);
  for (const sn of img.snapshots) {
    addRange(sn.l1TableOffset, sn.l1Size * 8);
    try {
      // Its L2 tables must lie inside the file, as the active layer's (counting one terabytes away would size
      // the reference table by it).
      const l1 = img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
      walkTree(img, l1, walk, false);
    } catch (e) {
      if (!(e instanceof ImageFormatError)) throw e;
      walk.messages.push(`ERROR ${e.message}`);
      walk.corruptions++;
      walk.unfixable++;
    }
  }
  if (h.nbSnapshots) addRange(h.snapshotsOffset, snapshotTableSize(img.snapshots));
  // Persistent bitmaps: directory, tables and data clusters (as QEMU's check counts them). A table that cannot
  // be read hides references: nothing may be freed on its account.
  const bitmapProblem = (message: string) => {
    walk.messages.push(message);
    walk.corruptions++;
    walk.unfixable++;
  };
  const fileEnd = img.file.size();
  const bitmapRange = (offset: number, bytes: number) => {
    // As for L2 entries: a reference past the end of the file is a corruption no repair can fix.
    if (offset + bytes > alignUp(fileEnd, cs)) {
      bitmapProblem(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offset.toString(16)} size 0x${bytes.toString(16)}`);
    } else addRange(offset, bytes);
  };
  img.bitmaps.forEachReference(bitmapRange, (c) => bitmapRange(c * cs, cs), bitmapProblem);
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
      if (withCopied) messages.push(`ERROR cluster ${c} refcount=${onDisk} reference=${ref}`);
    } else {
      leaks++;
      if (withCopied) messages.push(`Leaked cluster ${c} refcount=${onDisk} reference=${ref}`);
    }
  }
  // Refcounts of clusters past the file end without a reference are leaks QEMU also reports (refblocks cover them).
  // COPIED flags of the active layer.
  let copiedErrors = 0;
  for (const [c, flag, what] of withCopied ? walk.copiedChecks : []) {
    let onDisk: number;
    try {
      onDisk = rc.get(c);
    } catch {
      continue;
    }
    if ((onDisk === 1) !== flag) {
      copiedErrors++;
      corruptions++;
      messages.push(`ERROR OFLAG_COPIED ${what} refcount=${onDisk}`);
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
    unfixable: walk.unfixable,
  };
}

/** Counts the references of one L1 view. `active`: also collect COPIED checks and allocation statistics. */
function walkTree(img: ImageCore, l1: number[], walk: Walk, active: boolean): void {
  const cs = img.clusterSize;
  const fileSize = img.file.size();
  let nextContiguous = 0;
  const diskL1Entries = Math.ceil(img.size / (cs * img.l2Entries));
  walkL2Slices(
    img.tables,
    l1,
    ({ l1Index: i, view }) => {
      for (let j = 0; j < img.sliceEntries; j++) {
        const e = img.l2.decode(view, j);
        const inDisk = i < diskL1Entries;
        const bad = entryProblem(img, view, j);
        if (bad) {
          walk.messages.push(bad);
          walk.corruptions++;
          walk.unfixable++;
          continue;
        }
        if (e.type === ClusterType.Compressed || e.offset) {
          // A reference a cluster or more past the end of the file (QEMU's check says the same, and cannot
          // repair it either).
          const [first, last] = e.type === ClusterType.Compressed ? img.l2.compressedClusters(e) : [e.offset / cs, e.offset / cs];
          if (last * cs >= fileSize) {
            const offset = e.type === ClusterType.Compressed ? e.offset : first * cs;
            const size = e.type === ClusterType.Compressed ? e.compressedSize : cs;
            walk.messages.push(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offset.toString(16)} size 0x${size.toString(16)}`);
            walk.corruptions++;
            walk.unfixable++;
            continue;
          }
        }
        if (e.type === ClusterType.Compressed) {
          const [a, b] = img.l2.compressedClusters(e);
          for (let c = a; c <= b; c++) walk.refs.add(c);
          if (active && inDisk) {
            walk.allocated++;
            walk.compressed++;
            // As QEMU counts them: compressed clusters are fragmented by nature.
            walk.fragmented++;
          }
        } else if (e.offset) {
          walk.refs.add(e.offset / cs);
          if (active) {
            walk.copiedChecks.push([e.offset / cs, e.copied, `data cluster: l2_entry=${hexEntry(e.offset, e.copied)}`]);
            if (inDisk) {
              walk.allocated++;
              if (nextContiguous && e.offset !== nextContiguous) walk.fragmented++;
              nextContiguous = e.offset + cs;
            }
          }
        }
      }
    },
    {
      beforeTable: (l2Offset, i) => {
        walk.refs.add(l2Offset / cs);
        if (active) walk.copiedChecks.push([l2Offset / cs, img.l1Copied[i], `L2 cluster: l1_index=${i} l1_entry=${hexEntry(l2Offset, img.l1Copied[i])}`]);
      },
      // Entry by entry, as qemu-img check does: one bad entry does not hide the references of the others (a
      // leak repair would lower their counts). Slices not cached are read raw, unvalidated.
      load: (slice) => img.l2Cache.peek(slice) ?? rawSlice(img, slice),
    },
  );
}

/** An L2 slice as it is on disk, not validated (check reports bad entries one by one). */
function rawSlice(img: ImageCore, offset: number): Uint8Array {
  const buf = new Uint8Array(img.sliceBytes);
  img.file.read(buf, offset, "l2");
  return buf;
}

/** What is wrong with L2 entry `j` of a slice, in qemu-img check's words, or undefined. */
function entryProblem(img: ImageCore, view: DataView, j: number): string | undefined {
  const e = img.l2.decode(view, j);
  const raw = view.getBigUint64(j * img.l2.entryBytes).toString(16);
  if (e.reservedBits) return `ERROR found l2 entry with reserved bits set: ${raw}`;
  if ((e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && e.offset % img.clusterSize) {
    return `ERROR offset=${e.offset.toString(16)}: ${e.type === ClusterType.Normal ? "Data" : "Preallocated"} cluster is not properly aligned; L2 entry corrupted.`;
  }
  if (e.type === ClusterType.Compressed && e.copied) return `ERROR: coffset=0x${e.offset.toString(16)}: copied flag must never be set for compressed clusters`;
  if (img.l2.extended && e.type !== ClusterType.Compressed) {
    const [alloc, zero] = img.l2.bitmap(view, j);
    if (alloc & zero) return `ERROR: l2_entry=${raw}: subclusters both allocated and zero`;
    if (alloc && !e.offset) return `ERROR: l2_entry=${raw}: allocated subclusters without a host cluster`;
  }
  return undefined;
}
