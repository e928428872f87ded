/**
 * The guest experiment's results as the report stores them: one record per run (scheme, cache mode,
 * repetition) of a guest workload, with per-phase latency of the requests the guest's IDE driver issued —
 * decomposed into the guest program's own time (app), the device adapter's, the ring's and the engine's —
 * and the timing of the snapshot taken mid-run. `guestRows` flattens them into result rows (`workload` =
 * "guest-<name>"), one per scheme, cache mode and phase, over the repetitions.
 */
import { amortized, spread } from "../stats/latency.js";
import type { ResultRow } from "./matrix.js";

/** One latency column of a phase, µs (src/vm/decomposition.ts). */
export interface GuestLatencyColumn {
  count: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

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
  /** The phase's writes by four clocks: the guest program, the device adapter, the ring, the engine. */
  app_us?: GuestLatencyColumn;
  device_us?: GuestLatencyColumn;
  ring_us?: GuestLatencyColumn;
  engine_us?: GuestLatencyColumn;
  /** median(app) − median(engine): what the emulator adds to the engine's time. */
  emulator_us?: number;
  /** The guest clock's rate error against the host's over the phase, ppm. */
  clock_drift_ppm?: number;
  /** Host wall time of the phase, ms, from the guest announcing it to its end (its fsync included). */
  duration_ms?: number;
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
  /** The guest's disk device ("ide" when absent) and the guest program's queue depth (1 when absent). */
  disk?: string;
  iodepth?: number;
  /** Host ms from constructing the emulator to the guest's prompt. */
  bootMs: number;
  warm: boolean;
  phases: GuestPhase[];
  snapshot?: GuestSnapshotTiming;
  /** `qemu-img check` verdict on the image the run left ("clean", or what it reported). */
  check?: string;
  /** Host load averages (1, 5, 15 min) when the run ended: guest latencies are host time. */
  loadAverage?: number[];
  /** Repetition number (1-based) of this (scheme, cache) cell. */
  rep?: number;
  /** The IDE transfer mode the guest kernel used (libata's, e.g. XFER_MW_DMA_2). */
  transferMode?: string;
  /** The cuts of the guest-to-engine delay that were on (src/vm/latency-cuts.ts). */
  cuts?: string;
}

/** What the guest program saw of a phase's writes: the app clock when it ran, else the device's. */
export function guestSeen(p: GuestPhase): { median: number; p99: number } {
  return p.app_us?.count ? { median: p.app_us.median, p99: p.app_us.p99 } : { median: p.write_median_us, p99: p.write_p99_us };
}

/**
 * A phase's amortized cost per write (µs): its wall time ÷ its writes, flush waits included — the statistic
 * the host rows are ranked by. Undefined when the run did not record the phase's wall time.
 */
export function guestAmortized(p: GuestPhase): number | undefined {
  return p.duration_ms !== undefined && p.writes > 0 ? amortized(p.duration_ms * 1000, p.writes) : undefined;
}

export function guestRows(guest: GuestResult[]): ResultRow[] {
  const rows: ResultRow[] = [];
  const cells = new Map<string, { g: GuestResult; phase: string; runs: GuestPhase[] }>();
  for (const g of guest) {
    for (const p of g.phases) {
      if (!p.writes) continue;
      const key = `${g.scheme}\u0000${g.cache}\u0000${g.workload}\u0000${p.name}`;
      let c = cells.get(key);
      if (!c) cells.set(key, (c = { g, phase: p.name, runs: [] }));
      c.runs.push(p);
    }
  }
  for (const { g, phase, runs } of cells.values()) {
    const median = spread(runs.map((p) => guestSeen(p).median)).median;
    const perRun = runs.map(guestAmortized);
    // No stand-in: without every run's wall time the amortized figure is absent (NaN prints as "-").
    const am = perRun.every((x): x is number => x !== undefined) ? spread(perRun as number[]) : undefined;
    rows.push({
      source: "refcow",
      scheme: g.scheme,
      cache: g.cache,
      workload: `guest-${g.workload}`,
      phase,
      median_us: median,
      p99_us: spread(runs.map((p) => guestSeen(p).p99)).median,
      amortized_us: am ? am.median : NaN,
      ...(am ? { amortized_us_min: am.min, amortized_us_max: am.max } : {}),
      runs: runs.length,
      cdf_us: runs[0]!.write_cdf_us,
    });
  }
  return rows;
}
