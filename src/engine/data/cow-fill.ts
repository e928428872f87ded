/**
 * The copied part of a new cluster, made copy-free where the file system shares extents (cow-copy.ts): the
 * bytes a write into a newly allocated cluster does not cover must read there as the guest cluster reads now,
 * and they come, run by run, from the old host cluster (a cluster shared with a snapshot; with extended L2 its
 * allocated subclusters), from the backing disk (a cluster or subcluster the image does not allocate), or are
 * zeroes. Runs from the old host cluster are cloned inside the image file; runs the backing disk stores as they
 * are in a file (storedAt: a raw file, a qcow2 backing file's data clusters) are cloned from that file; only
 * what no clone can share (zeroes, compressed data, parts not aligned to the file system's blocks) is read
 * and written as before. A whole run is shared even under the guest's bytes, which are written over it
 * afterwards: one clone per run, as for a whole-cluster COW.
 *
 * Ordering is that of the copy it replaces (write-order.ts, rule 1 → 3): the clones and writes are issued
 * before the flush that precedes the L2 entry mapping the new cluster, and the old cluster stays referenced
 * until after that entry, so nothing it shares can change under the clone. A backing file is opened
 * read-only and never written while the image is open.
 */
import { ClusterType } from "../../format/l1l2.js";
import type { Mapping } from "../tables/active-tables.js";
import type { ImageState } from "../image-state.js";
import type { HostCopy } from "./cow-copy.js";
import type { ReadPath } from "./read-path.js";

/** Where a run of the cluster's current bytes comes from. */
type RunKind = "host" | "backing" | "zero";

/** A range of the cluster, [from, to) in bytes. */
type Span = [number, number];

/**
 * Whether [from, to) of guest cluster `gc` (mapped by `m`) holds something a clone could share: at least a
 * block, and a run in the old host cluster or in a backing file the image file has not failed to clone from.
 */
export function worthSharing(img: ImageState, m: Mapping, gc: number, from: number, to: number): boolean {
  const bs = img.cow.block;
  if (!bs || bs > img.clusterSize || to - from < bs || m.entry.type === ClusterType.Compressed) return false;
  const runs = runsOf(img, m, from, to);
  if (runs.some(([kind]) => kind === "host")) return true;
  const b = img.backing;
  const at = runs.find(([kind]) => kind === "backing");
  if (!b?.storedAt || !at) return false;
  const pos = gc * img.clusterSize + at[1];
  if (pos >= b.size) return false;
  const run = b.storedAt(pos, Math.min(at[2] - at[1], b.size - pos));
  return run.at !== undefined && img.cow.mayShareFrom(run.at.file);
}

/**
 * Makes [from, to) of the host cluster at `dst` read as guest cluster `gc`, mapped by `m`, reads there now —
 * except [skipFrom, skipTo), the guest's bytes, which the caller writes itself afterwards. `m` must be the
 * mapping as it was before the write changed anything (a copy: lookups reuse their result).
 */
export function fillCopy(img: ImageState, reader: ReadPath, m: Mapping, gc: number, dst: number, from: number, to: number, skipFrom: number, skipTo: number): void {
  const cs = img.clusterSize;
  const rest: Span[] = [];
  // What a clone left to copy, as cluster-relative ranges.
  const left = (copies: HostCopy[]) => {
    for (const c of copies) rest.push([c.dst - dst, c.dst - dst + c.length]);
  };
  for (const [kind, a, b] of runsOf(img, m, from, to)) {
    if (kind === "host") {
      left(img.cow.share({ src: m.entry.offset + a, dst: dst + a, length: b - a }));
      continue;
    }
    const backing = img.backing;
    if (kind === "zero" || !backing?.storedAt) {
      rest.push([a, b]);
      continue;
    }
    for (let p = a; p < b; ) {
      const pos = gc * cs + p;
      // Past the backing disk's end the cluster reads as zeroes.
      if (pos >= backing.size) {
        rest.push([p, b]);
        break;
      }
      const run = backing.storedAt(pos, Math.min(b - p, backing.size - pos));
      if (run.at && img.cow.mayShareFrom(run.at.file)) left(img.cow.shareFrom(run.at.file, { src: run.at.offset, dst: dst + p, length: run.length }));
      else rest.push([p, p + run.length]);
      p += run.length;
    }
  }
  for (const [a, b] of withoutSpan(merged(rest), skipFrom, skipTo)) {
    const buf = new Uint8Array(b - a);
    reader.readMapped(m, gc, a, buf, true);
    img.file.write(buf, dst + a, "cow-write");
  }
}

/** [kind, from, to) runs of [from, to): one per cluster without extended L2, by subcluster kind with it. */
function runsOf(img: ImageState, m: Mapping, from: number, to: number): [RunKind, number, number][] {
  const e = m.entry;
  if (!img.l2.extended) {
    const kind: RunKind = e.type === ClusterType.Normal ? "host" : e.type === ClusterType.Unallocated ? "backing" : "zero";
    return from < to ? [[kind, from, to]] : [];
  }
  const sc = img.clusterSize / 32;
  const kindOf = (i: number): RunKind => (m.alloc & (1 << i) ? "host" : m.zero & (1 << i) ? "zero" : "backing");
  const runs: [RunKind, number, number][] = [];
  for (let p = from; p < to; ) {
    const i = Math.floor(p / sc);
    const kind = kindOf(i);
    let end = Math.min(to, (i + 1) * sc);
    while (end < to && kindOf(Math.floor(end / sc)) === kind) end = Math.min(to, end + sc);
    runs.push([kind, p, end]);
    p = end;
  }
  return runs;
}

/** Sorted ranges with touching or overlapping ones joined. */
function merged(spans: Span[]): Span[] {
  const out: Span[] = [];
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The parts of `spans` outside [skipFrom, skipTo). */
function withoutSpan(spans: Span[], skipFrom: number, skipTo: number): Span[] {
  const out: Span[] = [];
  for (const [a, b] of spans) {
    if (a < skipFrom) out.push([a, Math.min(b, skipFrom)]);
    if (b > skipTo) out.push([Math.max(a, skipTo), b]);
  }
  return out;
}
