import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { amortized, cdf, percentile, ratioByRounds, spread, summarize } from "../../src/stats/latency.js";

describe("latency statistics", () => {
  it("nearest rank on hand-counted sets", () => {
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted on purpose
    expect(percentile(hundred, 50)).toBe(50);
    expect(percentile(hundred, 99)).toBe(99);
    expect(percentile(hundred, 99.9)).toBe(100);
    expect(percentile([7, 1, 4, 2], 50)).toBe(2);
    const s = summarize([5, 1, 3]);
    expect(s).toEqual({ count: 3, mean: 3, median: 3, p90: 5, p99: 5, p999: 5, min: 1, max: 5 });
  });

  it("empty sets give zeros, never NaN", () => {
    expect(summarize([])).toEqual({ count: 0, mean: 0, median: 0, p90: 0, p99: 0, p999: 0, min: 0, max: 0 });
    expect(amortized(100, 0)).toBe(0);
    expect(spread([])).toEqual({ median: 0, min: 0, max: 0, runs: 0 });
    expect(cdf([])).toEqual([]);
  });

  it("amortized is wall time over writes; spread keeps the range of repetitions", () => {
    expect(amortized(1000, 4)).toBe(250);
    expect(spread([30, 10, 20])).toEqual({ median: 20, min: 10, max: 30, runs: 3 });
  });

  it("every percentile is a sample, ordered, between min and max (random sets)", () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 300 }), (xs) => {
        const s = summarize(xs);
        const c = cdf(xs);
        expect(c.length).toBe(101);
        for (let i = 1; i < c.length; i++) expect(c[i]!).toBeGreaterThanOrEqual(c[i - 1]!);
        expect(c[0]).toBe(s.min);
        expect(c[100]).toBe(s.max);
        for (const v of [s.median, s.p90, s.p99, s.p999]) expect(xs).toContain(v);
        expect(s.min <= s.median && s.median <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max).toBe(true);
        // exactly ceil(p·n) samples are ≤ the p-th percentile's value when values are distinct
        const distinct = new Set(xs).size === xs.length;
        if (distinct) expect(xs.filter((x) => x <= s.median).length).toBe(Math.ceil(0.5 * xs.length));
      }),
    );
  });

  it("ratios by rounds divide round i by round i, then take the median and range over rounds", () => {
    // Rounds: 30/10 = 3, 20/20 = 1, 100/20 = 5 (the ratio of the medians would be 30/20 = 1.5).
    expect(ratioByRounds([30, 20, 100], [10, 20, 20])).toEqual({ median: 3, min: 1, max: 5, runs: 3 });
    // A round missing on either side, or with nothing to divide by, is left out, never counted as 0.
    expect(ratioByRounds([30, undefined, 100, 8], [10, 20, 0, 4])).toEqual({ median: 2, min: 2, max: 3, runs: 2 });
    expect(ratioByRounds([], [])).toEqual({ median: 0, min: 0, max: 0, runs: 0 });
  });
});
