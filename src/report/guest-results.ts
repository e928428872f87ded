/**
 * Reading the guest experiment's records (results.ts GuestResult: one per run — scheme, cache mode,
 * repetition — of a guest workload, with per-phase latency of the requests the guest's disk driver issued,
 * decomposed into the guest program's own time (app), the device adapter's, the ring's and the engine's, and
 * the timing of the snapshot taken mid-run). `guestRows` flattens them into result rows (`workload` =
 * "guest-<name>"), one per scheme, cache mode and phase, over the repetitions.
 */
import { amortized, spread } from "../stats/latency.js";
import type { FailedSource, GuestPhase, GuestResult, ResultRow } from "./results.js";

/**
 * The runs under v86 on refcow's worker ring: the ones with the four clocks, which the guest tables, charts
 * and rows are about (QEMU's runs are set beside them in emulator-section.ts).
 */
export function v86Runs(guest: readonly GuestResult[]): GuestResult[] {
  return guest.filter((g) => (g.emulator ?? "v86") === "v86");
}

/** The failures of v86 runs and of everything else (the QEMU runs' are emulator-section.ts's). */
export function v86Failures(failed: readonly FailedSource[]): FailedSource[] {
  return failed.filter((f) => f.part !== "guest" || (f.emulator ?? "v86") === "v86");
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
