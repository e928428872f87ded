/**
 * The benchmark matrix on a tiny workload: every source through one load generator lands in results.json
 * with per-request statistics and its transport, ratios pair like with like only, the images the bench
 * wrote pass qemu-img check, and the trace replay and allocation policies behave.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { machine } from "../../src/bench/machine.js";
import { runMatrix } from "../../src/bench/matrix.js";
import { defaultOptions } from "../../src/bench/options.js";
import { fullAnswer, table, writeOutputs } from "../../src/report/report.js";
import type { ResultRow } from "../../src/report/results.js";
import { nativeFileOps } from "../../src/io/native-fileops.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { assertLikeForLike, baseRow, ratio } from "../../src/report/ratios.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-benchtest-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const quiet = { progress: () => {}, fio: false, fioDepths: [] as number[] };

// Figures over rounds, worked out by hand from the per-round values: with two rounds the nearest-rank median
// is the lower of the two; a ratio is taken round by round. Printed as the report prints them: µs with one
// decimal below 100 and none from 100; ratios with two decimals below 10, else one.
const lower = (xs: number[]) => Math.min(...xs);
const us = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const times = (xs: number[]) => {
  const d = lower(xs) < 10 ? 2 : 1;
  return `${lower(xs).toFixed(d)}× (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})`;
};

describe("benchmark matrix", () => {
  it("drives every source with the same load, with per-request statistics, and writes results.json", async () => {
    const opts = { ...defaultOptions(true), ...quiet, clusters: 12, reps: 2, schemes: ["eager"], workloads: ["rand4k-per-cluster" as const], opSizes: [8 << 20], dir: path.join(dir, "images") };
    const results = await runMatrix(opts);
    expect(results.failed).toEqual([]);
    await writeOutputs(path.join(dir, "out"), results, machine(dir), { clusters: 12 });
    const saved = JSON.parse(fs.readFileSync(path.join(dir, "out", "results.json"), "utf8")) as { rows: ResultRow[]; machine: object };
    expect(Object.keys(saved.machine).sort()).toEqual(["cpu", "filesystem", "kernel", "node", "qemu", "wasm"]);
    const write = saved.rows.filter((r) => r.workload === "rand4k-per-cluster");
    const expected = [
      ["refcow", "eager", "ring"],
      ["refcow", "eager", "ring", "qemu"],
      ["raw", "none", "ring"],
      ["raw", "none", "direct"],
      ["qemu", "std", "nbd"],
      ["qemu", "lazy_refcounts", "nbd"],
      ["raw", "none", "nbd"],
    ];
    for (const [source, scheme, transport, order] of expected) {
      for (const cache of ["writethrough", "writeback"]) {
        for (const phase of ["in-place", "post-snapshot", "after-delete"]) {
          const r = write.find((x) => x.source === source && x.scheme === scheme && x.transport === transport && x.order === order && x.cache === cache && x.phase === phase);
          const what = `${source} ${scheme} ${transport} ${order ?? ""} ${cache} ${phase}`;
          expect(r, what).toBeDefined();
          // Per-request statistics for every source, QEMU's included: one latency per write of each round.
          expect(r!.runs, what).toBe(2);
          expect(r!.reps, what).toHaveLength(2);
          expect(r!.cdf_us, what).toHaveLength(101);
          for (const k of ["median_us", "median_us_min", "median_us_max", "p90_us", "p99_us", "p999_us", "max_us", "amortized_us"] as const) expect(r![k], `${what} ${k}`).toBeGreaterThan(0);
          // The row's figures are those of its two rounds: the lower as the median, with their range.
          const medians = r!.reps!.map((x) => x.median_us);
          const amortized = r!.reps!.map((x) => x.amortized_us);
          expect([r!.median_us, r!.median_us_min, r!.median_us_max], what).toEqual([lower(medians), Math.min(...medians), Math.max(...medians)]);
          expect([r!.amortized_us, r!.amortized_us_min, r!.amortized_us_max], what).toEqual([lower(amortized), Math.min(...amortized), Math.max(...amortized)]);
          expect(r!.p99_us!).toBeGreaterThanOrEqual(r!.median_us);
          if (source === "refcow" && transport === "ring") expect(r!.breakdown!["guest-data"] ?? r!.breakdown!["cow-write"], what).toBeDefined();
        }
      }
    }
    // Ratios: every base a ratio uses is the same workload, cache mode and transport as its row.
    let pairs = 0;
    for (const r of write) {
      for (const kind of ["vs in-place", "vs qemu", "vs raw"] as const) {
        const b = baseRow(write, r, kind);
        if (!b) continue;
        pairs++;
        expect([b.workload, b.cache, b.transport], `${kind} of ${r.source} ${r.transport}`).toEqual([r.workload, r.cache, r.transport]);
        if (kind !== "vs in-place") expect(b.phase).toBe(r.phase);
      }
    }
    expect(pairs).toBeGreaterThan(30);
    // No refcow row through the ring gets a QEMU ratio: QEMU is reached through NBD only.
    for (const r of write.filter((x) => x.source === "refcow" && x.transport === "ring")) expect(baseRow(write, r, "vs qemu")).toBeUndefined();
    for (const op of ["open", "snapshot-create", "snapshot-apply", "snapshot-delete", "close", "recovery"]) {
      expect(saved.rows.some((r) => r.scheme === "eager" && r.phase === op)).toBe(true);
    }
    // The answer in report.md gives, per cache mode, eager's post-snapshot write through the ring against the
    // same write in place and against the raw file through the ring: each figure worked out here from the
    // rounds of the rows in results.json.
    const md = fs.readFileSync(path.join(dir, "out", "report.md"), "utf8");
    expect(md).toContain(fullAnswer(results, "markdown"));
    for (const cache of ["writethrough", "writeback"]) {
      const find = (source: string, phase: string) => write.find((x) => x.source === source && x.transport === "ring" && !x.order && x.cache === cache && x.phase === phase)!;
      const post = find("refcow", "post-snapshot");
      const inPlace = find("refcow", "in-place");
      const rounds = (r: ResultRow) => r.reps!.map((x) => x.amortized_us);
      const perRound = rounds(post).map((x, i) => x / rounds(inPlace)[i]!);
      const figure = (xs: number[]) => `${us(lower(xs))} (${us(Math.min(...xs))}–${us(Math.max(...xs))})`;
      // eager's row of this cache mode's table: in place, post-snapshot and their ratio, worked out here.
      const section = md.slice(md.indexOf(cache));
      const eagerRow = section.split("\n").find((l) => /^\| eager\b/.test(l));
      expect(eagerRow, `${cache}: eager's row in the answer table`).toBeDefined();
      expect(eagerRow).toContain(figure(rounds(inPlace)));
      expect(eagerRow).toContain(figure(rounds(post)));
      expect(eagerRow).toContain(times(perRound));
    }
    const html = fs.readFileSync(path.join(dir, "out", "report.html"), "utf8");
    for (const id of ["per-write", "cdf", "breakdown", "host-io", "snapshot-ops"]) expect(html).toMatch(new RegExp(`<figure id="${id}">[\\s\\S]*?<svg`));
    expect(html).toContain("Flush policy");
    expect(table(results.rows)).toMatch(/QEMU \(nbd\)/);
  }, 180_000);
});

describe("ratios", () => {
  const row = (over: Partial<ResultRow>): ResultRow => ({
    source: "refcow",
    scheme: "eager",
    transport: "ring",
    cache: "writeback",
    workload: "rand4k-per-cluster",
    phase: "post-snapshot",
    median_us: 10,
    p99_us: 20,
    amortized_us: 12,
    runs: 2,
    reps: [
      { median_us: 10, p99_us: 20, amortized_us: 12 },
      { median_us: 11, p99_us: 22, amortized_us: 24 },
    ],
    ...over,
  });
  it("refuse to pair different workloads, cache modes or transports, and are computed round by round", () => {
    expect(() => ratio(row({}), row({ workload: "seq" }))).toThrow(/different workloads/);
    expect(() => ratio(row({}), row({ transport: "nbd" }))).toThrow(/different transports/);
    expect(() => ratio(row({}), row({ cache: "writethrough" }))).toThrow(/different cache modes/);
    expect(() => assertLikeForLike(row({ transport: undefined }), row({ transport: undefined }))).toThrow(/transports/);
    const base = row({ reps: [{ median_us: 5, p99_us: 5, amortized_us: 6 }, { median_us: 5, p99_us: 5, amortized_us: 6 }] });
    // Round 1: 12 / 6 = 2, round 2: 24 / 6 = 4 (not the ratio of the medians over rounds).
    expect(ratio(row({}), base)).toEqual({ median: 2, min: 2, max: 4, runs: 2 });
    const rows = [row({}), row({ source: "qemu", scheme: "std", transport: "nbd" }), row({ source: "raw", scheme: "none", transport: "direct" })];
    expect(baseRow(rows, rows[0]!, "vs qemu")).toBeUndefined();
    expect(baseRow(rows, rows[0]!, "vs raw")).toBeUndefined();
    expect(baseRow(rows, rows[0]!, "vs in-place")).toBeUndefined();
  });
});

describe("trace replay", () => {
  it("replays a guest trace per scheme and on a raw file through the same transport, host snapshots outside the clock", async () => {
    const { writeTrace } = await import("../../src/guest/trace.js");
    const file = path.join(dir, "t.trace");
    const events = [];
    let t = 0;
    // fill 8 clusters, rewrite them, snapshot, rewrite them again: the rand4k shape.
    for (const phase of ["fill", "in-place", "post-snapshot"]) {
      if (phase === "post-snapshot") events.push({ t: t++, op: "s" as const, offset: 0, length: 0, phase, name: "mid" });
      for (let c = 0; c < 8; c++) events.push({ t: t++, op: "w" as const, offset: c * 65536, length: 4096, phase, latency: 100 });
      events.push({ t: t++, op: "r" as const, offset: 0, length: 4096, phase });
      events.push({ t: t++, op: "f" as const, offset: 0, length: 0, phase });
    }
    writeTrace(file, { header: { format: "refcow-trace", version: 1, size: 8 << 20, clusterSize: 65536 }, events });
    const opts = { ...defaultOptions(true), ...quiet, reps: 1, schemes: ["eager", "owner"], caches: ["writeback" as const], workloads: ["trace" as const], traceFile: file, qemu: false, opSizes: [], dir: path.join(dir, "trace-images") };
    const { rows } = await runMatrix(opts);
    for (const scheme of ["eager", "owner"]) {
      for (const phase of ["fill", "in-place", "post-snapshot"]) {
        const r = rows.find((x) => x.source === "refcow" && x.scheme === scheme && x.workload === "trace" && x.phase === phase);
        expect(r, `${scheme} ${phase}`).toBeDefined();
        expect(r!.cdf_us).toHaveLength(101);
        expect(r!.transport).toBe("ring");
      }
      // After the snapshot every write hits a shared cluster: the replay copies them. The snapshot itself is
      // outside the phase's counters: no snapshot-table or VM-state I/O is charged to the phase.
      const post = rows.find((x) => x.scheme === scheme && x.phase === "post-snapshot")!;
      expect(post.breakdown!["cow-read"]?.ops ?? post.breakdown!["cow-write"]?.ops).toBeGreaterThan(0);
      expect(post.breakdown!["snapshot-table"]).toBeUndefined();
      const inPlace = rows.find((x) => x.scheme === scheme && x.phase === "in-place")!;
      expect(inPlace.breakdown!["cow-read"]).toBeUndefined();
    }
    const raw = rows.filter((r) => r.source === "raw" && r.workload === "trace");
    expect(raw.map((r) => r.phase)).toEqual(["fill", "in-place", "post-snapshot"]);
    // "vs raw" per phase, through the same transport.
    const eagerPost = rows.find((x) => x.scheme === "eager" && x.phase === "post-snapshot")!;
    expect(baseRow(rows, eagerPost, "vs raw")).toBe(raw.find((r) => r.phase === "post-snapshot"));
  }, 120_000);
});

describe("allocation policies in the matrix", () => {
  it("after a snapshot delete, first-fit reuses freed clusters (zeroing them) and append writes only the guest's bytes at the end", async () => {
    const opts = { ...defaultOptions(true), ...quiet, clusters: 24, reps: 1, schemes: ["eager", "owner"], allocs: ["first-fit" as const, "append" as const], caches: ["writeback" as const], workloads: ["seq" as const], qemu: false, qemuOrder: false, opSizes: [], dir: path.join(dir, "alloc-images") };
    const { rows } = await runMatrix(opts);
    for (const scheme of ["eager", "owner"]) {
      const get = (alloc: string) => rows.find((r) => r.source === "refcow" && r.scheme === scheme && r.alloc === alloc && r.phase === "after-delete")!;
      // A reused cluster must not show its old bytes: first-fit zeroes it with fallocate where the native
      // addon is built (then writes 4 KiB, as append does into the zeroes past the end of the file), else
      // writes the whole cluster.
      if (nativeFileOps()) {
        expect(get("first-fit").breakdown!["guest-data"]!.bytes, scheme).toBe(4096);
        expect(get("first-fit").breakdown!["guest-data"]!.ops, scheme).toBe(2); // the zeroing, the write
      } else {
        expect(get("first-fit").breakdown!["guest-data"]!.bytes, scheme).toBeGreaterThanOrEqual(65536);
      }
      expect(get("append").breakdown!["guest-data"]!.bytes, scheme).toBe(4096);
    }
  }, 120_000);
});
