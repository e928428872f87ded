/**
 * Like-for-like ratios between result rows. A ratio pairs two rows of the same workload, cache mode and
 * transport only (refusing anything else), and is computed round by round — round i of both rows ran in the
 * same interleaved round on the same request sequence — then shown as the median with its min–max.
 *
 *   vs in-place   this phase / in-place of the same source (same scheme, order, allocation policy)
 *   vs qemu       refcow (every scheme) / QEMU std on the same phase, and QEMU lazy_refcounts / QEMU std; only
 *                 through the same transport, so in practice refcow's NBD export against qemu-nbd
 *   vs raw        this source / the raw file on the same phase through the same transport (ring / ring,
 *                 nbd / nbd, in-process / in-process)
 */
import type { ResultRow } from "./results.js";
import { ratioByRounds, type Spread } from "../stats/latency.js";

export type RatioKind = "vs in-place" | "vs qemu" | "vs raw";
export type RatioStat = "amortized_us" | "median_us" | "p99_us" | "amortized_close_us";

/** The QEMU configuration every refcow scheme (and QEMU lazy_refcounts) is compared with: QEMU's default. */
export const QEMU_BASE = "std";

/** Throws unless two rows may form a ratio: same workload, cache mode and transport. */
export function assertLikeForLike(a: ResultRow, b: ResultRow): void {
  if (a.workload !== b.workload) throw new Error(`ratio of different workloads: ${a.workload} / ${b.workload}`);
  if (a.cache !== b.cache) throw new Error(`ratio of different cache modes: ${a.cache} / ${b.cache}`);
  if (!a.transport || a.transport !== b.transport) throw new Error(`ratio of different transports: ${a.transport ?? "?"} / ${b.transport ?? "?"}`);
}

/** Round-by-round ratio of a statistic of two like-for-like rows. */
export function ratio(a: ResultRow, b: ResultRow, stat: RatioStat = "amortized_us"): Spread {
  assertLikeForLike(a, b);
  return ratioByRounds((a.reps ?? []).map((x) => x[stat]), (b.reps ?? []).map((x) => x[stat]));
}

const same = (a: ResultRow, b: ResultRow, keys: Array<keyof ResultRow>) => keys.every((k) => a[k] === b[k]);

/** The row a ratio of `kind` divides `r` by, or undefined when there is none like for like. */
export function baseRow(rows: readonly ResultRow[], r: ResultRow, kind: RatioKind): ResultRow | undefined {
  const cell = (x: ResultRow) => x !== r && x.workload === r.workload && x.cache === r.cache && x.transport !== undefined && x.transport === r.transport && x.reps !== undefined;
  switch (kind) {
    case "vs in-place":
      if (r.phase === "in-place") return undefined;
      return rows.find((x) => cell(x) && x.phase === "in-place" && same(x, r, ["source", "scheme", "order", "alloc"]));
    case "vs qemu": {
      if (r.source === "raw" || (r.source === "qemu" && r.scheme === QEMU_BASE) || (r.alloc && r.alloc !== "first-fit")) return undefined;
      return rows.find((x) => cell(x) && x.source === "qemu" && x.scheme === QEMU_BASE && x.phase === r.phase);
    }
    case "vs raw":
      if (r.source === "raw") return undefined;
      return rows.find((x) => cell(x) && x.source === "raw" && x.phase === r.phase);
  }
}

/** A figure's row, the same source through another transport: refcow's NBD export beside its ring row. */
export function sameSourceVia(rows: readonly ResultRow[], r: ResultRow, transport: string): ResultRow | undefined {
  const alloc = (x: ResultRow) => x.alloc ?? "first-fit";
  return rows.find((x) => x.transport === transport && x.workload === r.workload && x.cache === r.cache && x.phase === r.phase && same(x, r, ["source", "scheme", "order"]) && alloc(x) === alloc(r));
}

/** The ratio of `kind` for row `r`, when a like-for-like base exists. */
export function ratioOf(rows: readonly ResultRow[], r: ResultRow, kind: RatioKind, stat: RatioStat = "amortized_us"): Spread | undefined {
  const b = baseRow(rows, r, kind);
  if (!b) return undefined;
  const s = ratio(r, b, stat);
  return s.runs ? s : undefined;
}

/** "2.4× (2.1–2.9)", or "2.4×" for a single round. */
export function formatRatio(s: Spread | undefined, digits = s && s.median < 10 ? 2 : 1): string {
  if (!s) return "";
  const f = (x: number) => x.toFixed(digits);
  return s.runs > 1 ? `${f(s.median)}× (${f(s.min)}–${f(s.max)})` : `${f(s.median)}×`;
}
