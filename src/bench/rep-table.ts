/**
 * The text of the boot benchmarks' reports (boot-os.ts, remote-boot.ts): a column-aligned table, a cell
 * holding the median with min–max of a figure over repetitions, and a line of per-repetition ratios with
 * their median and the verdict against a target. The statistics themselves come from src/stats.
 */
import { formatRatio } from "../report/ratios.js";
import { ratioByRounds, spread } from "../stats/latency.js";

/** Rows of cells, each column padded to its widest cell (the last cell of a row is left as it is). */
export function textTable(rows: readonly string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  "));
}

/** "median (min–max)" of the figures present, "median" for one, "-" for none. */
export function medianCell(values: ReadonlyArray<number | undefined>, format: (x: number) => string): string {
  const s = spread(values.filter((x): x is number => x !== undefined));
  return s.runs === 0 ? "-" : s.runs > 1 ? `${format(s.median)} (${format(s.min)}–${format(s.max)})` : format(s.median);
}

export interface RatioTarget {
  op: "<=" | ">=";
  value: number;
}

/** "label: median× (min–max)  [per repetition: r1, r2, ...]  target <= v: met|MISSED", a[i] / b[i] per repetition. */
export function ratioLine(label: string, a: ReadonlyArray<number | undefined>, b: ReadonlyArray<number | undefined>, target?: RatioTarget): string {
  const s = ratioByRounds(a, b);
  if (s.runs === 0) return `${label}: -`;
  const each = a.map((x, i) => (x !== undefined && b[i] ? (x / b[i]!).toFixed(2) : "-")).join(", ");
  const met = target && (target.op === "<=" ? s.median <= target.value : s.median >= target.value);
  const verdict = target ? `  target ${target.op} ${target.value}: ${met ? "met" : "MISSED"}` : "";
  return `${label}: ${formatRatio(s)}  [per repetition: ${each}]${verdict}`;
}
