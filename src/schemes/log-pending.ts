/**
 * The in-memory state of scheme `log`: copies on write that are not finished yet.
 *
 * A guest write to a cluster shared with a snapshot does not copy the cluster on its path. It gets a pending
 * copy: the old host cluster (what the on-disk L2 entry still maps, the snapshot's data), the new host cluster
 * (allocated, unreferenced by any table until the commit), and the ranges of the cluster the guest has written
 * since, each with the host offset where its bytes are now (in the new cluster, or in a data-log record).
 * Reads merge the two: written ranges from where their bytes are, the rest from the old cluster. The fill
 * copies what is not in the new cluster yet — the ranges the guest has not written (from the old cluster) and
 * the ranges whose bytes are in the log — as few, large I/Os; a range the guest covered is never filled from
 * the old cluster. Only then may the L2 entry point to the new cluster.
 *
 * Memory: per pending copy one object and at most one segment per 512-byte sector the guest wrote
 * (3 numbers each); the number of copies is bounded (`maxCopies`) by the scheme, which applies early when
 * `full` says so. Fill debt (bytes a fill may have to copy) is at most maxCopies × the cluster size.
 */

/** A half-open range [start, end) of a cluster whose bytes are at host offset `host` (for `start`). */
export interface Segment {
  start: number;
  end: number;
  host: number;
}

/**
 * Non-overlapping segments, sorted by start. `set` replaces what it overlaps (the later write wins) and joins
 * neighbours whose bytes are contiguous on the host.
 */
export class RangeMap {
  readonly segs: Segment[] = [];

  /** The bytes of [start, end) are now at host offset `host`. */
  set(start: number, end: number, host: number): void {
    if (end <= start) return;
    const out: Segment[] = [];
    let placed = false;
    const add = (s: Segment) => {
      const last = out[out.length - 1];
      if (last && last.end === s.start && last.host + (last.end - last.start) === s.host) last.end = s.end;
      else out.push(s);
    };
    for (const s of this.segs) {
      if (s.end <= start) {
        add(s);
        continue;
      }
      if (s.start >= end) {
        if (!placed) {
          add({ start, end, host });
          placed = true;
        }
        add(s);
        continue;
      }
      // Overlap: keep the parts outside [start, end).
      if (s.start < start) add({ start: s.start, end: start, host: s.host });
      if (!placed) {
        add({ start, end, host });
        placed = true;
      }
      if (s.end > end) add({ start: end, end: s.end, host: s.host + (end - s.start) });
    }
    if (!placed) add({ start, end, host });
    this.segs.length = 0;
    this.segs.push(...out);
  }

  /** Bytes covered. */
  covered(): number {
    let n = 0;
    for (const s of this.segs) n += s.end - s.start;
    return n;
  }

  /** Whether [start, end) is covered whole. */
  covers(start: number, end: number): boolean {
    let pos = start;
    for (const s of this.segs) {
      if (s.end <= pos) continue;
      if (s.start > pos) return false;
      pos = s.end;
      if (pos >= end) return true;
    }
    return pos >= end;
  }

  /** The ranges of [lo, hi) no segment covers, in order. */
  gaps(lo: number, hi: number): [number, number][] {
    const out: [number, number][] = [];
    let pos = lo;
    for (const s of this.segs) {
      if (s.end <= pos) continue;
      if (s.start >= hi) break;
      if (s.start > pos) out.push([pos, s.start]);
      pos = Math.max(pos, s.end);
    }
    if (pos < hi) out.push([pos, hi]);
    return out;
  }
}

export interface PendingCopy {
  /** Guest cluster index. */
  gc: number;
  /** Host offset of the old cluster (the COW source the on-disk entry maps). */
  oldHost: number;
  /** Host offset of the new cluster. */
  newHost: number;
  /** Written ranges, by offset inside the cluster, with where their bytes are. */
  ranges: RangeMap;
}

/** One copy of the fill: `length` bytes from host `src` to host `dst`. */
export interface CopyRun {
  src: number;
  dst: number;
  length: number;
}

export class PendingState {
  private readonly copies = new Map<number, PendingCopy>();

  constructor(
    readonly clusterSize: number,
    /** How many copies may be pending at once (the scheme applies early beyond). */
    readonly maxCopies = 4096,
  ) {}

  get size(): number {
    return this.copies.size;
  }

  /** True when no more copies should be added before some are applied. */
  get full(): boolean {
    return this.copies.size >= this.maxCopies;
  }

  get(gc: number): PendingCopy | undefined {
    return this.copies.get(gc);
  }

  all(): PendingCopy[] {
    return [...this.copies.values()];
  }

  /** Starts a pending copy of guest cluster `gc` from `oldHost` into `newHost`. */
  begin(gc: number, oldHost: number, newHost: number): PendingCopy {
    if (this.copies.has(gc)) throw new Error(`guest cluster ${gc} already has a pending copy`);
    const p: PendingCopy = { gc, oldHost, newHost, ranges: new RangeMap() };
    this.copies.set(gc, p);
    return p;
  }

  /** The guest's bytes of [inCluster, inCluster + length) of `gc` are now at host offset `host`. */
  written(gc: number, inCluster: number, length: number, host: number): void {
    const p = this.copies.get(gc);
    if (!p) throw new Error(`guest cluster ${gc} has no pending copy`);
    p.ranges.set(inCluster, inCluster + length, host);
  }

  delete(gc: number): void {
    this.copies.delete(gc);
  }

  clear(): void {
    this.copies.clear();
  }

  /**
   * Reads `dst.length` bytes at `inCluster` of the pending copy `p`: written ranges from where their bytes
   * are, the rest from the old cluster, each as one read per contiguous host run.
   */
  read(p: PendingCopy, inCluster: number, dst: Uint8Array, readHost: (buf: Uint8Array, host: number) => void): void {
    const end = inCluster + dst.length;
    let pos = inCluster;
    for (const s of p.ranges.segs) {
      if (s.end <= pos) continue;
      if (s.start >= end) break;
      if (s.start > pos) {
        readHost(dst.subarray(pos - inCluster, s.start - inCluster), p.oldHost + pos);
        pos = s.start;
      }
      const to = Math.min(s.end, end);
      readHost(dst.subarray(pos - inCluster, to - inCluster), s.host + (pos - s.start));
      pos = to;
    }
    if (pos < end) readHost(dst.subarray(pos - inCluster), p.oldHost + pos);
  }

  /**
   * What a fill of `copies` must copy so that each new cluster holds the whole cluster: the gaps from the old
   * cluster, and the written ranges whose bytes are elsewhere (a log record). Runs contiguous in both source
   * and destination are joined (a tail of one cluster and the head of the next, when both the old and the new
   * clusters are neighbours), up to `maxRun` bytes per run. `gaps` false: only the written ranges whose
   * bytes are elsewhere (the new clusters already hold the old ones' bytes: they were shared whole).
   */
  static fillRuns(copies: readonly PendingCopy[], clusterSize: number, maxRun = 1 << 20, gaps = true): CopyRun[] {
    const runs: CopyRun[] = [];
    const push = (src: number, dst: number, length: number) => {
      if (length <= 0 || src === dst) return;
      const last = runs[runs.length - 1];
      if (last && last.src + last.length === src && last.dst + last.length === dst && last.length + length <= maxRun) last.length += length;
      else runs.push({ src, dst, length });
    };
    const sorted = [...copies].sort((a, b) => a.newHost - b.newHost);
    for (const p of sorted) {
      let pos = 0;
      for (const s of p.ranges.segs) {
        if (gaps && s.start > pos) push(p.oldHost + pos, p.newHost + pos, s.start - pos);
        if (s.host !== p.newHost + s.start) push(s.host, p.newHost + s.start, s.end - s.start);
        pos = s.end;
      }
      if (gaps && pos < clusterSize) push(p.oldHost + pos, p.newHost + pos, clusterSize - pos);
    }
    return runs;
  }

  /** Bytes a fill of everything pending would copy. */
  fillDebt(): number {
    let n = 0;
    for (const r of PendingState.fillRuns(this.all(), this.clusterSize)) n += r.length;
    return n;
  }
}

/** Runs whose sources are read with one read: [start, end) on the host, holes included. */
interface SourceGroup {
  start: number;
  end: number;
  runs: CopyRun[];
}

/**
 * Groups runs by their sources: neighbours on the host, with a hole of up to 64 KiB between them (one larger
 * read is cheaper than two), up to `maxGroup` bytes per group.
 */
function sourceGroups(runs: readonly CopyRun[], maxGroup: number): SourceGroup[] {
  const bySrc = [...runs].sort((a, b) => a.src - b.src);
  const groups: SourceGroup[] = [];
  for (const r of bySrc) {
    const g = groups[groups.length - 1];
    if (g && r.src >= g.end && r.src - g.end <= 65536 && r.src + r.length - g.start <= maxGroup) {
      g.end = r.src + r.length;
      g.runs.push(r);
    } else {
      groups.push({ start: r.src, end: r.src + r.length, runs: [r] });
    }
  }
  return groups;
}

/**
 * Carries out copy runs through `read`/`write`: the runs whose destinations are contiguous are assembled in
 * memory and written with one write of up to `maxSpan` bytes (the new clusters of a batch are usually
 * neighbours). Sources are read with one read per group of neighbours on the host (sourceGroups), such as
 * the head and tail of one old cluster, or consecutive log records: across all runs at once when their
 * groups hold at most `readAhead` bytes (the log records of an apply whose new clusters were shared whole:
 * one read of the log, not one per record), else per written span. A destination byte no run covers is
 * never written.
 */
export function performRuns(
  runs: readonly CopyRun[],
  read: (buf: Uint8Array, host: number) => void,
  write: (buf: Uint8Array, host: number) => void,
  maxSpan = 1 << 20,
  readAhead = 8 << 20,
): void {
  // Read ahead: every source once, kept by run.
  const ahead = new Map<CopyRun, Uint8Array>();
  const all = sourceGroups(runs, 2 * maxSpan);
  if (all.reduce((n, g) => n + (g.end - g.start), 0) <= readAhead) {
    for (const g of all) {
      const buf = new Uint8Array(g.end - g.start);
      read(buf, g.start);
      for (const r of g.runs) ahead.set(r, buf.subarray(r.src - g.start, r.src - g.start + r.length));
    }
  }
  const byDst = [...runs].sort((a, b) => a.dst - b.dst);
  for (let i = 0; i < byDst.length; ) {
    const start = byDst[i]!.dst;
    let end = start + byDst[i]!.length;
    let j = i + 1;
    while (j < byDst.length && byDst[j]!.dst === end && end + byDst[j]!.length - start <= maxSpan) {
      end += byDst[j]!.length;
      j++;
    }
    const span = new Uint8Array(end - start);
    const inSpan = byDst.slice(i, j);
    if (ahead.size) {
      for (const r of inSpan) span.set(ahead.get(r)!, r.dst - start);
    } else {
      for (const g of sourceGroups(inSpan, 2 * maxSpan)) {
        if (g.runs.length === 1) {
          const r = g.runs[0]!;
          read(span.subarray(r.dst - start, r.dst - start + r.length), r.src);
          continue;
        }
        const buf = new Uint8Array(g.end - g.start);
        read(buf, g.start);
        for (const r of g.runs) span.set(buf.subarray(r.src - g.start, r.src - g.start + r.length), r.dst - start);
      }
    }
    write(span, start);
    i = j;
  }
}
