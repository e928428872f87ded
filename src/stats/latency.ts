/**
 * The one definition of every latency statistic refcow reports.
 *
 * Samples are per-request latencies (any unit; callers use µs). Percentiles use the nearest-rank method:
 * the p-th percentile of n ascending samples is the ceil(p/100 · n)-th smallest (p99 of 100 samples is the
 * 99th smallest, the median of 4 samples is the 2nd). Every figure of an empty sample set is 0 with
 * `count` 0, so a missing phase never turns into NaN in a table.
 *
 * - `summarize`: count, mean, median, p90, p99, p99.9, min and max of one set of request latencies.
 * - `amortized`: wall time of a phase divided by its writes (flush waits included: that is the point).
 * - `spread`: the median of per-repetition figures with their min and max (a figure over repetitions).
 * - `ratioByRounds`: the ratio of two sources' figures computed within each round, then `spread` over rounds
 *   (never a ratio of two medians: a slow round of one source is divided by the same round of the other).
 * - `cdf`: the latency at every whole percentile 0..100, for CDF plots.
 */

export interface LatencySummary {
  count: number;
  mean: number;
  median: number;
  p90: number;
  p99: number;
  p999: number;
  min: number;
  max: number;
}

export interface Spread {
  /** Median of the per-repetition values. */
  median: number;
  min: number;
  max: number;
  /** How many repetitions the figure is over. */
  runs: number;
}

function ascending(samples: readonly number[]): number[] {
  return [...samples].sort((a, b) => a - b);
}

/** Nearest-rank percentile (p in 0..100) of an ascending array; 0 for an empty one, the minimum for p = 0. */
export function percentileOfSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Nearest-rank percentile (p in 0..100) of samples in any order. */
export function percentile(samples: readonly number[], p: number): number {
  return percentileOfSorted(ascending(samples), p);
}

export function summarize(samples: readonly number[]): LatencySummary {
  const s = ascending(samples);
  const n = s.length;
  if (n === 0) return { count: 0, mean: 0, median: 0, p90: 0, p99: 0, p999: 0, min: 0, max: 0 };
  return {
    count: n,
    mean: s.reduce((a, b) => a + b, 0) / n,
    median: percentileOfSorted(s, 50),
    p90: percentileOfSorted(s, 90),
    p99: percentileOfSorted(s, 99),
    p999: percentileOfSorted(s, 99.9),
    min: s[0]!,
    max: s[n - 1]!,
  };
}

/** Wall time of a phase ÷ its writes: what one write costs once flushes and every wait are paid. */
export function amortized(wallTime: number, writes: number): number {
  return writes > 0 ? wallTime / writes : 0;
}

/** A figure over repetitions: the median of the per-repetition values with their range. */
export function spread(values: readonly number[]): Spread {
  const s = ascending(values);
  if (s.length === 0) return { median: 0, min: 0, max: 0, runs: 0 };
  return { median: percentileOfSorted(s, 50), min: s[0]!, max: s[s.length - 1]!, runs: s.length };
}

/**
 * Round-by-round ratio: numerators[i] / denominators[i] for every round i both have (a round whose
 * denominator is not positive, or either figure missing, is skipped), then the median with min–max over rounds.
 */
export function ratioByRounds(numerators: ReadonlyArray<number | undefined>, denominators: ReadonlyArray<number | undefined>): Spread {
  const n = Math.min(numerators.length, denominators.length);
  const perRound: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = numerators[i];
    const b = denominators[i];
    if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b <= 0) continue;
    perRound.push(a / b);
  }
  return spread(perRound);
}

/** Latency at every whole percentile 0..100 (101 values; empty for no samples). */
export function cdf(samples: readonly number[]): number[] {
  const s = ascending(samples);
  if (s.length === 0) return [];
  const out: number[] = [];
  for (let p = 0; p <= 100; p++) out.push(p === 0 ? s[0]! : percentileOfSorted(s, p));
  return out;
}
