/**
 * One round of one phase of one source (PhaseRun), and the result row a cell's rounds make: every figure by
 * src/stats, per round, then over rounds. Also the keys and file names the matrices give a source.
 */
import type { CostBreakdown } from "../engine/types.js";
import { type FailedSource, type PurposeRow, type ResultRow, type SourceSpec, sourceName } from "../report/results.js";
import { amortized, cdf, percentile, spread, summarize } from "../stats/latency.js";

/** One round of one phase of one source. */
export interface PhaseRun {
  writeUs: number[];
  flushUs: number[];
  wallUs: number;
  writes: number;
  costs?: CostBreakdown;
  /** Time to close the image after the phase (a scheme's deferred work done at close shows here). */
  closeUs?: number;
}

function perWrite(costs: CostBreakdown, writes: number): Record<string, PurposeRow> {
  const out: Record<string, PurposeRow> = {};
  for (const [k, c] of Object.entries(costs)) {
    if (!c) continue;
    out[k] = {
      ops: (c.reads + c.writes) / writes,
      bytes: (c.readBytes + c.writeBytes) / writes,
      flushes: c.flushes / writes,
      us: c.timeNs / 1000 / writes,
      flush_us: (c.flushNs ?? 0) / 1000 / writes,
    };
  }
  return out;
}

function addBreakdown(a: Record<string, PurposeRow>, b: Record<string, PurposeRow>, weight: number): void {
  for (const [k, v] of Object.entries(b)) {
    const t = (a[k] ??= { ops: 0, bytes: 0, flushes: 0, us: 0, flush_us: 0 });
    t.ops += v.ops * weight;
    t.bytes += v.bytes * weight;
    t.flushes += v.flushes * weight;
    t.us += v.us * weight;
    t.flush_us = (t.flush_us ?? 0) + (v.flush_us ?? 0) * weight;
  }
}

/** Sums cost breakdowns (the segments of one phase). */
export function addCosts(a: CostBreakdown, b: CostBreakdown): CostBreakdown {
  const out: CostBreakdown = { ...a };
  for (const [k, v] of Object.entries(b) as Array<[keyof CostBreakdown, NonNullable<CostBreakdown[keyof CostBreakdown]>]>) {
    if (!v) continue;
    const t = out[k];
    out[k] = t ? (Object.fromEntries(Object.keys(v).map((f) => [f, ((t as unknown as Record<string, number>)[f] ?? 0) + (v as unknown as Record<string, number>)[f]!])) as unknown as typeof v) : { ...v };
  }
  return out;
}

/** A result row from the rounds of one cell: every figure by src/stats, per round, then over rounds. */
export function rowFromRuns(base: Omit<ResultRow, "median_us" | "p99_us" | "amortized_us" | "runs">, runs: PhaseRun[]): ResultRow {
  const per = runs.map((r) => ({ s: summarize(r.writeUs), amortized: amortized(r.wallUs, r.writes) }));
  const med = spread(per.map((p) => p.s.median));
  const p99 = spread(per.map((p) => p.s.p99));
  const am = spread(per.map((p) => p.amortized));
  const pooled = runs.flatMap((r) => r.writeUs);
  const flushes = runs.flatMap((r) => r.flushUs);
  const row: ResultRow = {
    ...base,
    median_us: med.median,
    median_us_min: med.min,
    median_us_max: med.max,
    p90_us: spread(per.map((p) => p.s.p90)).median,
    p99_us: p99.median,
    p99_us_min: p99.min,
    p99_us_max: p99.max,
    p999_us: spread(per.map((p) => p.s.p999)).median,
    max_us: Math.max(...per.map((p) => p.s.max)),
    amortized_us: am.median,
    amortized_us_min: am.min,
    amortized_us_max: am.max,
    runs: runs.length,
    reps: runs.map((r, i) => ({ median_us: per[i]!.s.median, p99_us: per[i]!.s.p99, amortized_us: per[i]!.amortized, ...(r.closeUs !== undefined ? { amortized_close_us: amortized(r.wallUs + r.closeUs, r.writes) } : {}) })),
    cdf_us: cdf(pooled),
  };
  if (flushes.length) row.flush_median_us = percentile(flushes, 50);
  const closed = runs.filter((r) => r.closeUs !== undefined);
  if (closed.length) {
    row.close_us = spread(closed.map((r) => r.closeUs!)).median;
    const withClose = spread(closed.map((r) => amortized(r.wallUs + r.closeUs!, r.writes)));
    row.amortized_close_us = withClose.median;
    row.amortized_close_us_min = withClose.min;
    row.amortized_close_us_max = withClose.max;
  }
  const withCosts = runs.filter((r) => r.costs);
  if (withCosts.length) {
    const b: Record<string, PurposeRow> = {};
    for (const r of withCosts) addBreakdown(b, perWrite(r.costs!, r.writes), 1 / withCosts.length);
    row.breakdown = b;
    let bytes = 0;
    for (const r of withCosts) for (const c of Object.values(r.costs!)) if (c) bytes += c.writeBytes / r.writes / withCosts.length;
    row.host_write_bytes = bytes;
  }
  return row;
}

/** The fields of a failed entry that say which source it was. */
export function specFields(s: SourceSpec): Pick<FailedSource, "name" | "source" | "scheme" | "order" | "alloc" | "transport"> {
  return { name: sourceName(s), source: s.source, scheme: s.scheme, ...(s.order ? { order: s.order } : {}), ...(s.alloc ? { alloc: s.alloc } : {}), transport: s.transport };
}

export const specKey = (s: SourceSpec) => `${s.source}/${s.scheme}/${s.order ?? ""}/${s.alloc ?? ""}/${s.transport}`;
export const slug = (s: SourceSpec) => specKey(s).replace(/[^a-z0-9_-]+/gi, "-");
