/**
 * Per-phase latency summaries of the guest's disk requests (the hda adapter's records).
 *
 * Latency is submit→complete as the emulator sees it (v86 called the adapter → the adapter called back),
 * in µs. Percentiles use the nearest-rank method (p99 of 100 values is the 99th smallest); every figure is
 * 0 when `count` is 0. `service*` is the engine's own time for the same requests, when the disk reports it.
 */
import type { DiskOp, DiskRequestRecord } from "./hda-adapter.js";

export interface LatencyStats {
  count: number;
  bytes: number;
  meanUs: number;
  medianUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  /** Median / p99 of the engine's service time of the same requests (absent when not reported). */
  serviceMedianUs?: number;
  serviceP99Us?: number;
}

export interface PhaseStats {
  reads: LatencyStats;
  writes: LatencyStats;
  flushes: LatencyStats;
  /** Host time from the phase's start to its end, in ms (set by the workload runner). */
  durationMs?: number;
}

/** Nearest-rank percentile of an ascending array (0 for an empty one). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function latencyStats(latenciesUs: readonly number[], bytes = 0, serviceUs: readonly number[] = []): LatencyStats {
  const s = [...latenciesUs].sort((a, b) => a - b);
  const n = s.length;
  const median = percentile(s, 50);
  const out: LatencyStats = {
    count: n,
    bytes,
    meanUs: n ? s.reduce((a, b) => a + b, 0) / n : 0,
    medianUs: median,
    p50Us: median,
    p90Us: percentile(s, 90),
    p99Us: percentile(s, 99),
    maxUs: n ? s[n - 1]! : 0,
  };
  if (serviceUs.length > 0) {
    const sv = [...serviceUs].sort((a, b) => a - b);
    out.serviceMedianUs = percentile(sv, 50);
    out.serviceP99Us = percentile(sv, 99);
  }
  return out;
}

function opStats(records: readonly DiskRequestRecord[], op: DiskOp): LatencyStats {
  const mine = records.filter((r) => r.op === op);
  const service = mine.filter((r) => r.serviceMs !== undefined).map((r) => r.serviceMs! * 1000);
  return latencyStats(
    mine.map((r) => r.latencyMs * 1000),
    mine.reduce((a, r) => a + r.length, 0),
    service.length === mine.length ? service : [],
  );
}

/** Per-phase summaries of `records`, for the phases named (default: every phase that has records). */
export function phaseStats(records: readonly DiskRequestRecord[], phases?: readonly string[]): Record<string, PhaseStats> {
  const names = phases ?? [...new Set(records.map((r) => r.phase))];
  const out: Record<string, PhaseStats> = {};
  for (const name of names) {
    const mine = records.filter((r) => r.phase === name);
    out[name] = { reads: opStats(mine, "read"), writes: opStats(mine, "write"), flushes: opStats(mine, "flush") };
  }
  return out;
}
