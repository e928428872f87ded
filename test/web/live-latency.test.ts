/** The page's live latency summaries: power-of-two histogram buckets, percentiles per phase and op. */
import { describe, expect, it } from "vitest";
import type { DiskRequestRecord } from "../../src/guest/request-recorder.js";
import { bucketOf, formatUs, HISTOGRAM_BUCKETS, LiveLatency } from "../../src/web/live-latency.js";

const rec = (phase: string, op: DiskRequestRecord["op"], latencyMs: number, serviceMs?: number): DiskRequestRecord => ({
  op,
  offset: 0,
  length: op === "flush" ? 0 : 4096,
  phase,
  submitted: 0,
  queuedMs: 0,
  latencyMs,
  ...(serviceMs !== undefined ? { serviceMs } : {}),
});

describe("live latency", () => {
  it("puts latencies in power-of-two buckets", () => {
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(15.9)).toBe(0);
    expect(bucketOf(16)).toBe(1);
    expect(bucketOf(31.9)).toBe(1);
    expect(bucketOf(1024)).toBe(7);
    expect(bucketOf(1e12)).toBe(HISTOGRAM_BUCKETS - 1);
  });

  it("summarises per phase and op, with engine times only when every request has one", () => {
    const l = new LiveLatency();
    l.add([rec("a", "write", 1, 0.1), rec("a", "write", 3, 0.3), rec("a", "write", 2, 0.2), rec("a", "flush", 5), rec("b", "write", 10)]);
    l.add([rec("b", "write", 20, 0.5)]);
    expect(l.order).toEqual(["a", "b"]);
    expect(l.summary("a", "write")).toEqual({ count: 3, medianUs: 2000, p99Us: 3000, maxUs: 3000, engineMedianUs: 200, engineP99Us: 300 });
    expect(l.summary("a", "flush")).toEqual({ count: 1, medianUs: 5000, p99Us: 5000, maxUs: 5000 });
    expect(l.summary("b", "write")?.engineMedianUs).toBeUndefined();
    expect(l.summary("a", "read")).toBeUndefined();
    const h = l.histogram("a", "write")!;
    expect(h.counts.reduce((a, b) => a + b, 0)).toBe(3);
    // 1000 µs in [512, 1024), 2000 in [1024, 2048), 3000 in [2048, 4096)
    expect([bucketOf(1000), bucketOf(2000), bucketOf(3000)]).toEqual([6, 7, 8]);
    expect(h.counts.slice(6, 9)).toEqual([1, 1, 1]);
  });

  it("formats µs, ms and s", () => {
    expect(formatUs(950)).toBe("950 µs");
    expect(formatUs(4560)).toBe("4.56 ms");
    expect(formatUs(45600)).toBe("45.6 ms");
    expect(formatUs(1.5e6)).toBe("1.50 s");
  });
});
