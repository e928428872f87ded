/**
 * The one walk over an L1 view's L2 tables (the active layer's or a snapshot's), slice by slice, for every
 * pass that visits whole trees: references (snapshots, schemes' builds), headroom checks, refcount changes
 * over a tree, COPIED recomputation, check.
 */
import type { L2Entry } from "../../format/l1l2.js";
import type { ActiveTables } from "./active-tables.js";

export interface L2SliceVisit {
  /** Index of the L1 entry pointing to the table. */
  l1Index: number;
  l2Offset: number;
  /** Host offset of the slice (the L2 cache's key). */
  slice: number;
  /** Index, inside its table, of the slice's first entry. */
  first: number;
  view: DataView;
}

export interface L2WalkOptions {
  /** How a slice is fetched (default: through the L2 cache, validated). */
  load?: (slice: number) => Uint8Array;
  /** Called once per table, before its slices. */
  beforeTable?: (l2Offset: number, l1Index: number) => void;
  /** Called once per table, after its slices. */
  afterTable?: (l2Offset: number, l1Index: number) => void;
}

type Geometry = Pick<ActiveTables, "clusterSize" | "sliceBytes" | "sliceEntries" | "l2" | "l2Cache">;

/** Visits every slice of every L2 table `l1` points to, in L1 order. */
export function walkL2Slices(t: Geometry, l1: readonly number[], visit: (s: L2SliceVisit) => void, opts: L2WalkOptions = {}): void {
  const load = opts.load ?? ((slice: number) => t.l2Cache.get(slice));
  for (let i = 0; i < l1.length; i++) {
    const l2Offset = l1[i];
    if (!l2Offset) continue;
    opts.beforeTable?.(l2Offset, i);
    for (let s = 0; s < t.clusterSize; s += t.sliceBytes) {
      const buf = load(l2Offset + s);
      const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      visit({ l1Index: i, l2Offset, slice: l2Offset + s, first: s / t.l2.entryBytes, view });
    }
    opts.afterTable?.(l2Offset, i);
  }
}

/**
 * Visits every entry of every L2 table `l1` points to. A slice's entries are decoded before the first call
 * for it, so `fn` may use the L2 cache (to change an entry, re-get the slice by `at.slice`).
 */
export function walkL2Entries(t: Geometry, l1: readonly number[], fn: (e: L2Entry, at: L2SliceVisit, index: number) => void, opts: L2WalkOptions = {}): void {
  const entries: L2Entry[] = new Array(t.sliceEntries);
  walkL2Slices(
    t,
    l1,
    (at) => {
      for (let j = 0; j < t.sliceEntries; j++) entries[j] = t.l2.decode(at.view, j);
      for (let j = 0; j < t.sliceEntries; j++) fn(entries[j], at, j);
    },
    opts,
  );
}
