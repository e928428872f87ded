/** The benchmark matrix on a tiny workload: every source, scheme, cache mode and phase lands in results.json. */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { defaultOptions, machine, runMatrix } from "../../src/bench/matrix.js";
import { answer, table, writeOutputs } from "../../src/bench/report.js";
import { nativeFileOps } from "../../src/io/native-fileops.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-benchtest-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("benchmark matrix", () => {
  it("writes results.json with every row the report needs", async () => {
    const opts = { ...defaultOptions(true), clusters: 20, reps: 1, opSizes: [8 << 20], dir: path.join(dir, "images") };
    const rows = await runMatrix(opts);
    await writeOutputs(path.join(dir, "out"), rows, machine(dir), { clusters: 20 });
    const results = JSON.parse(fs.readFileSync(path.join(dir, "out", "results.json"), "utf8"));
    expect(Object.keys(results.machine).sort()).toEqual(["cpu", "filesystem", "kernel", "node", "qemu"]);
    for (const r of results.rows) {
      for (const k of ["source", "scheme", "cache", "workload", "phase", "median_us", "p99_us", "runs"]) expect(r).toHaveProperty(k);
    }
    for (const scheme of SCHEME_NAMES) {
      for (const cache of ["writethrough", "writeback"]) {
        for (const phase of ["in-place", "post-snapshot"]) {
          const row = results.rows.find((r: { source: string; scheme: string; cache: string; phase: string }) => r.source === "refcow" && r.scheme === scheme && r.cache === cache && r.phase === phase);
          expect(row, `${scheme} ${cache} ${phase}`).toBeDefined();
          expect(row.breakdown["guest-data"] ?? row.breakdown["cow-write"]).toBeDefined();
        }
      }
      for (const op of ["open", "snapshot-create", "snapshot-apply", "snapshot-delete", "close", "recovery"]) {
        expect(results.rows.some((r: { scheme: string; phase: string }) => r.scheme === scheme && r.phase === op)).toBe(true);
      }
    }
    for (const s of ["std", "lazy_refcounts"]) expect(results.rows.some((r: { source: string; scheme: string }) => r.source === "qemu" && r.scheme === s)).toBe(true);
    expect(results.rows.some((r: { source: string }) => r.source === "raw")).toBe(true);
    const md = fs.readFileSync(path.join(dir, "out", "report.md"), "utf8");
    expect(md).toContain(answer(rows));
    const html = fs.readFileSync(path.join(dir, "out", "report.html"), "utf8");
    for (const id of ["per-write", "cdf", "breakdown", "host-io", "snapshot-ops"]) expect(html).toMatch(new RegExp(`<figure id="${id}">[\\s\\S]*?<svg`));
    expect(table(rows)).toMatch(/post-snapshot/);
  }, 120_000);
});

describe("trace replay", () => {
  it("replays a guest trace per scheme and on a raw file, one row per phase that wrote", async () => {
    const { writeTrace } = await import("../../src/vm/trace.js");
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
    const opts = { ...defaultOptions(true), reps: 1, schemes: ["eager", "owner"], caches: ["writeback" as const], workloads: ["trace" as const], traceFile: file, qemu: false, opSizes: [], dir: path.join(dir, "trace-images") };
    const rows = await runMatrix(opts);
    for (const scheme of ["eager", "owner"]) {
      for (const phase of ["fill", "in-place", "post-snapshot"]) {
        const r = rows.find((x) => x.source === "refcow" && x.scheme === scheme && x.workload === "trace" && x.phase === phase);
        expect(r, `${scheme} ${phase}`).toBeDefined();
        expect(r!.cdf_us).toHaveLength(101);
      }
      // After the snapshot every write hits a shared cluster: the replay copies them.
      const post = rows.find((x) => x.scheme === scheme && x.phase === "post-snapshot")!;
      expect(post.breakdown!["cow-read"]?.ops ?? post.breakdown!["cow-write"]?.ops).toBeGreaterThan(0);
      const inPlace = rows.find((x) => x.scheme === scheme && x.phase === "in-place")!;
      expect(inPlace.breakdown!["cow-read"]).toBeUndefined();
    }
    expect(rows.filter((r) => r.source === "raw" && r.workload === "trace").map((r) => r.phase)).toEqual(["fill", "in-place", "post-snapshot"]);
  }, 120_000);
});

describe("allocation policies in the matrix", () => {
  it("after a snapshot delete, first-fit reuses freed clusters (zeroing them) and append writes only the guest's bytes at the end", async () => {
    const { hostTotals } = await import("../../src/bench/cost-groups.js");
    const opts = { ...defaultOptions(true), clusters: 24, reps: 1, schemes: ["eager", "owner"], allocs: ["first-fit" as const, "append" as const], caches: ["writeback" as const], qemu: false, opSizes: [], dir: path.join(dir, "alloc-images") };
    const rows = await runMatrix(opts);
    for (const scheme of ["eager", "owner"]) {
      const get = (alloc: string) => rows.find((r) => r.source === "refcow" && r.scheme === scheme && r.alloc === alloc && r.phase === "after-delete")!;
      const ff = hostTotals(get("first-fit").breakdown);
      const ap = hostTotals(get("append").breakdown);
      // A reused cluster must not show its old bytes: first-fit zeroes it with fallocate where the native
      // addon is built (then writes 4 KiB, as append does into the zeroes past the end of the file), else
      // writes the whole cluster.
      if (nativeFileOps()) {
        expect(get("first-fit").breakdown!["guest-data"]!.bytes, scheme).toBe(4096);
        expect(get("first-fit").breakdown!["guest-data"]!.ops, scheme).toBe(2); // the zeroing, the write
      } else {
        expect(ff.bytes, scheme).toBeGreaterThanOrEqual(ap.bytes + 60 * 1024 - 1);
        expect(get("first-fit").breakdown!["guest-data"]!.bytes).toBeGreaterThanOrEqual(65536);
      }
      expect(get("append").breakdown!["guest-data"]!.bytes, scheme).toBe(4096);
    }
  }, 120_000);
});
