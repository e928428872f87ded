/**
 * The matrix in shards (`refcow bench --shard i/N`, src/bench/shard.ts) and their merge (`refcow report
 * DIR...`, src/report/merge.ts): two shards of a small matrix merge into the union of their rows — the rows
 * an unsharded run of the same matrix has — and incompatible shards are refused.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseShard, ShardPlan } from "../../src/bench/shard.js";
import type { ResultRow, ResultsFile } from "../../src/report/results.js";
import { assertBuilt, REFCOW_BIN, tempDir } from "../cli/qemu-harness.js";

describe("ShardPlan", () => {
  it("splits each part into N disjoint, balanced shares whose union is the part", () => {
    const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
    const plans = [1, 2, 3].map((index) => new ShardPlan({ index, count: 3 }));
    const shares = plans.map((p) => p.declare("part", keys));
    expect(shares.map((s) => s.size)).toEqual([4, 3, 3]);
    expect(new Set(shares.flatMap((s) => [...s]))).toEqual(new Set(keys));
    expect(plans[0]!.record()!.matrix).toEqual(plans[2]!.record()!.matrix);
    expect(new ShardPlan().record()).toBeUndefined();
  });

  it("parses i/N and refuses anything else", () => {
    expect(parseShard("2/4")).toEqual({ index: 2, count: 4 });
    for (const bad of ["0/4", "5/4", "1/0", "a/b", "1", "-1/2"]) expect(() => parseShard(bad), bad).toThrow(/i\/N/);
  });
});

const rowId = (r: ResultRow) => `${r.source}/${r.scheme}/${r.order ?? ""}/${r.alloc ?? ""}/${r.transport}/${r.cache}/${r.workload}/${r.phase}`;
const load = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, "results.json"), "utf8")) as ResultsFile;

describe("refcow bench --shard and refcow report DIR...", () => {
  let dir: string;
  // A small matrix: two schemes and the raw file, one cache mode and pattern, two rounds.
  const matrix = ["--clusters", "8", "--reps", "2", "--schemes", "eager,lazy", "--cache", "writeback", "--workloads", "seq", "--no-qemu", "--no-fio", "--no-ops", "--no-order-qemu", "--in-process"];
  const refcow = (args: string[]) => spawnSync(process.execPath, [REFCOW_BIN, ...args], { cwd: dir, encoding: "utf8" });
  const bench = (out: string, extra: string[] = []) => {
    const r = refcow(["bench", ...matrix, ...extra, "--out", out]);
    expect(r.status, r.stderr).toBe(0);
    return load(path.join(dir, out));
  };

  beforeAll(() => {
    assertBuilt();
    dir = tempDir("shards");
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("two shards merge into the union of their rows: the rows of the whole matrix run at once", () => {
    const a = bench("a", ["--shard", "1/2"]);
    const b = bench("b", ["--shard", "2/2"]);
    const whole = bench("whole");
    const idsA = a.rows.map(rowId);
    const idsB = b.rows.map(rowId);
    expect(idsA.length).toBeGreaterThan(0);
    expect(idsB.length).toBeGreaterThan(0);
    expect(idsA.filter((id) => idsB.includes(id))).toEqual([]);
    // All rounds of a cell ran in its shard.
    for (const r of [...a.rows, ...b.rows]) expect(r.runs, rowId(r)).toBe(2);
    const merge = refcow(["report", "a", "b", "--out", "merged"]);
    expect(merge.status, merge.stderr).toBe(0);
    const merged = load(path.join(dir, "merged"));
    expect(merged.rows.map(rowId).sort()).toEqual([...idsA, ...idsB].sort());
    expect(merged.rows.map(rowId).sort()).toEqual(whole.rows.map(rowId).sort());
    expect(merged.shards).toEqual({ count: 2, merged: [1, 2], missingCells: [] });
    for (const f of ["report.md", "report.html"]) expect(fs.existsSync(path.join(dir, "merged", f)), f).toBe(true);
    expect(fs.readFileSync(path.join(dir, "merged", "report.md"), "utf8")).toMatch(/Merged shards 1, 2 of 2/);
    // One shard alone: merged, with the other's cells named as not run.
    const partial = refcow(["report", "a", "--out", "partial"]);
    expect(partial.status, partial.stderr).toBe(0);
    const p = load(path.join(dir, "partial"));
    expect(p.shards!.missingCells.sort()).toEqual(b.shard!.cells.sort());
    expect(p.missing!.filter((m) => /shard 2\/2 missing/.test(m.reason)).map((m) => m.source).sort()).toEqual(b.shard!.cells.sort());
  }, 300_000);

  it("refuses to merge shards of another configuration, another version, or one shard twice", () => {
    if (!fs.existsSync(path.join(dir, "a", "results.json"))) bench("a", ["--shard", "1/2"]);
    // Another configuration: more clusters per phase.
    bench("other", ["--shard", "2/2", "--clusters", "16"]);
    const config = refcow(["report", "a", "other", "--out", "x"]);
    expect(config.status).not.toBe(0);
    expect(config.stderr).toMatch(/cannot merge: configurations differ .*clusters/);
    // Another version: the same shard 2/2, as another refcow would have written it.
    const b = bench("b2", ["--shard", "2/2"]);
    fs.mkdirSync(path.join(dir, "older"));
    fs.writeFileSync(path.join(dir, "older", "results.json"), JSON.stringify({ ...b, version: "0.0.1 (000000000000)" }));
    const version = refcow(["report", "a", "older", "--out", "y"]);
    expect(version.status).not.toBe(0);
    expect(version.stderr).toMatch(/cannot merge: refcow versions differ/);
    const twice = refcow(["report", "a", "a", "--out", "z"]);
    expect(twice.status).not.toBe(0);
    expect(twice.stderr).toMatch(/shard 1\/2 given twice/);
    // Nothing was written for a refused merge.
    for (const d of ["x", "y", "z"]) expect(fs.existsSync(path.join(dir, d)), d).toBe(false);
  }, 300_000);
});
