/**
 * Live latency of the guest's disk requests, per phase: what the page shows while a workload runs.
 * Fed with the hda adapter's records (submit → complete as the emulator saw it, and the engine's own time
 * when the disk reported it). Percentiles are nearest-rank, as in the Node summaries (src/guest/latency-stats.ts);
 * histogram buckets are powers of two in µs.
 */
import type { DiskOp, DiskRequestRecord } from "../guest/request-recorder.js";
import { percentileOfSorted as percentile } from "../stats/latency.js";

export interface OpSummary {
  count: number;
  medianUs: number;
  p99Us: number;
  maxUs: number;
  /** Engine time (worker start → end) median / p99, when reported for every request. */
  engineMedianUs?: number;
  engineP99Us?: number;
}

/** Histogram of latencies: `counts[i]` holds values in [2^(FIRST+i-1), 2^(FIRST+i)) µs (the first bucket: below 2^FIRST). */
export interface Histogram {
  firstExp: number;
  counts: number[];
}

export const HISTOGRAM_FIRST_EXP = 4; // < 16 µs
export const HISTOGRAM_BUCKETS = 21; // up to 2^24 µs ≈ 16.8 s

export function bucketOf(us: number): number {
  if (!(us >= 2 ** HISTOGRAM_FIRST_EXP)) return 0;
  return Math.min(HISTOGRAM_BUCKETS - 1, Math.floor(Math.log2(us)) - HISTOGRAM_FIRST_EXP + 1);
}

class OpSeries {
  latencies: number[] = [];
  engine: number[] = [];
  engineComplete = true;
  hist = new Array<number>(HISTOGRAM_BUCKETS).fill(0);

  add(r: DiskRequestRecord): void {
    const us = r.latencyMs * 1000;
    this.latencies.push(us);
    this.hist[bucketOf(us)]++;
    const service = r.serviceMs;
    if (service === undefined) this.engineComplete = false;
    else this.engine.push(service * 1000);
  }

  summary(): OpSummary {
    const s = [...this.latencies].sort((a, b) => a - b);
    const out: OpSummary = { count: s.length, medianUs: percentile(s, 50), p99Us: percentile(s, 99), maxUs: s.length ? s[s.length - 1]! : 0 };
    if (this.engineComplete && this.engine.length > 0) {
      const e = [...this.engine].sort((a, b) => a - b);
      out.engineMedianUs = percentile(e, 50);
      out.engineP99Us = percentile(e, 99);
    }
    return out;
  }
}

export class LiveLatency {
  private readonly phases = new Map<string, Map<DiskOp, OpSeries>>();
  /** Phases in the order they first appeared. */
  readonly order: string[] = [];

  add(records: readonly DiskRequestRecord[]): void {
    for (const r of records) {
      let p = this.phases.get(r.phase);
      if (!p) {
        p = new Map();
        this.phases.set(r.phase, p);
        this.order.push(r.phase);
      }
      let s = p.get(r.op);
      if (!s) p.set(r.op, (s = new OpSeries()));
      s.add(r);
    }
  }

  summary(phase: string, op: DiskOp): OpSummary | undefined {
    return this.phases.get(phase)?.get(op)?.summary();
  }

  histogram(phase: string, op: DiskOp): Histogram | undefined {
    const s = this.phases.get(phase)?.get(op);
    return s ? { firstExp: HISTOGRAM_FIRST_EXP, counts: [...s.hist] } : undefined;
  }

  clear(): void {
    this.phases.clear();
    this.order.length = 0;
  }
}

/** "123 µs", "4.56 ms", "1.23 s". */
export function formatUs(us: number): string {
  if (us < 1000) return `${us.toFixed(0)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}
