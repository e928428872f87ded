/**
 * The guest experiment's results as the report stores them: one record per (scheme, cache mode) run of a
 * guest workload, with per-phase latency of the requests the guest's IDE driver issued and the timing of
 * the snapshot taken mid-run. `guestRows` flattens them into result rows (`workload` = "guest-<name>").
 */
import type { ResultRow } from "./matrix.js";

export interface GuestPhase {
  name: string;
  reads: number;
  writes: number;
  flushes: number;
  write_median_us: number;
  write_p99_us: number;
  /** Median time the engine itself spent per write (no emulator, ring or event-loop delay). */
  engine_write_median_us?: number;
  read_median_us?: number;
  flush_median_us?: number;
  /** Write latency at the percentiles 0..100 (µs). */
  write_cdf_us?: number[];
}

export interface GuestSnapshotTiming {
  drainMs?: number;
  flushMs?: number;
  diskSnapshotMs?: number;
  vmStateBytes?: number;
  vmStateSerializeMs?: number;
  vmStateWriteMs?: number;
}

export interface GuestResult {
  scheme: string;
  cache: ResultRow["cache"];
  workload: string;
  savevm: boolean;
  /** Host ms from constructing the emulator to the guest's prompt. */
  bootMs: number;
  warm: boolean;
  phases: GuestPhase[];
  snapshot?: GuestSnapshotTiming;
  /** `qemu-img check` verdict on the image the run left ("clean", or what it reported). */
  check?: string;
  /** Host load averages (1, 5, 15 min) when the run ended: guest latencies are host time. */
  loadAverage?: number[];
}

export function guestRows(guest: GuestResult[]): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const g of guest) {
    for (const p of g.phases) {
      if (!p.writes) continue;
      rows.push({
        source: "refcow",
        scheme: g.scheme,
        cache: g.cache,
        workload: `guest-${g.workload}`,
        phase: p.name,
        median_us: p.write_median_us,
        p99_us: p.write_p99_us,
        amortized_us: p.write_median_us,
        runs: 1,
        cdf_us: p.write_cdf_us,
      });
    }
  }
  return rows;
}
