/**
 * Per-phase latency summaries of the guest's disk requests (the request recorder's records).
 *
 * Latency is submit→complete as the emulator sees it (v86 called the adapter → the adapter called back),
 * in µs. Percentiles are src/stats/latency.ts's (nearest rank: p99 of 100 values is the 99th smallest); every
 * figure is 0 when `count` is 0. `service*` is the engine's own time for the same requests, when the disk
 * reports it. The four-clock decomposition of a phase (guest program, device, ring, engine) is
 * decomposition.ts's; the workload runner adds it to the phase.
 */
import type { EmulatorTime } from "../v86/emulator-clock.js";
import { percentile as nearestRank, summarize } from "../stats/latency.js";
import type { Decomposition } from "./decomposition.js";
import type { DiskOp, DiskRequestRecord } from "./request-recorder.js";

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

/**
 * One phase: the adapter's view per op, and (set by the workload runner) the phase's duration and the
 * decomposition of its main requests (writes; reads in a phase without writes) and of its flushes.
 */
export interface PhaseStats extends Partial<Decomposition> {
  reads: LatencyStats;
  writes: LatencyStats;
  flushes: LatencyStats;
  /** Host time from the phase's start to its end, in ms (set by the workload runner). */
  durationMs?: number;
  /** The op the phase-level app_us / device_us / ring_us / engine_us describe. */
  op?: "write" | "read";
  /** The same decomposition for the phase's flushes (the guest's fdatasync). */
  flush?: Decomposition;
  /** The most requests the disk device had outstanding at once during the phase (set by the workload runner). */
  max_in_flight?: number;
  /** virtio-blk: interrupts the device raised and used-ring publications (completion batches) in the phase. */
  interrupts?: number;
  batches?: number;
  /** virtio-blk: the driver's queue notifications (kicks) in the phase. */
  notifies?: number;
  /**
   * Instructions the emulated CPU executed from the phase's announcement to the end of its command (v86's
   * instruction counter: the guest's own work for the phase's requests, whatever the host's load).
   */
  guest_instructions?: number;
  /**
   * The guest program's requests per second in the phase (refcow-io's REFCOW-IO report): its requests over
   * the time from the first one's submission to the last one's completion, on the guest's clock.
   */
  guest_iops?: number;
  /** With `emulatorTime`: the emulator thread's time in the phase by category (src/v86/emulator-clock.ts). */
  emulator_time?: EmulatorTime;
}

/** Nearest-rank percentile of an array (0 for an empty one): src/stats/latency.ts's. */
export function percentile(samples: readonly number[], p: number): number {
  return nearestRank(samples, p);
}

export function latencyStats(latenciesUs: readonly number[], bytes = 0, serviceUs: readonly number[] = []): LatencyStats {
  const s = summarize(latenciesUs);
  const out: LatencyStats = {
    count: s.count,
    bytes,
    meanUs: s.mean,
    medianUs: s.median,
    p50Us: s.median,
    p90Us: s.p90,
    p99Us: s.p99,
    maxUs: s.max,
  };
  if (serviceUs.length > 0) {
    const sv = summarize(serviceUs);
    out.serviceMedianUs = sv.median;
    out.serviceP99Us = sv.p99;
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
