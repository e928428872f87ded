/**
 * The report from a small results file: every chart is an inline SVG with its title and caption, the tables
 * hold the rows' figures, the answer paragraph quotes the rows' numbers, the page needs nothing from the
 * network, and `refcow report` re-renders a saved results.json and refuses what is not one.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { answerOf, detailParagraphs, fullAnswer, loadResults, writeReport } from "../../src/report/report.js";
import type { ResultRow, ResultsFile } from "../../src/report/results.js";
import { main } from "../../src/cli/main.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-report-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const reps = (median: number, amortized: number) => [0.9, 1, 1.2].map((k) => ({ median_us: median * k, p99_us: median * 2 * k, amortized_us: amortized * k }));
const cdf = (median: number) => Array.from({ length: 101 }, (_, p) => median * (0.5 + p / 100));

function refcowRow(scheme: string, cache: "writethrough" | "writeback", phase: string, us: number): ResultRow {
  const guestUs = us / 4;
  return {
    source: "refcow",
    scheme,
    transport: "ring",
    cache,
    workload: "rand4k-per-cluster",
    phase,
    median_us: us,
    p99_us: us * 2,
    amortized_us: us * 1.1,
    runs: 3,
    reps: reps(us, us * 1.1),
    cdf_us: cdf(us),
    breakdown: {
      "guest-data": { ops: 1, bytes: 4096, flushes: cache === "writethrough" ? 1 : 0, us: guestUs, flush_us: guestUs / 2 },
      ...(phase === "post-snapshot" ? { "cow-read": { ops: 1, bytes: 61440, flushes: 0, us: us / 5 }, refcount: { ops: 2, bytes: 8192, flushes: 1, us: us / 3, flush_us: us / 4 } } : {}),
    },
  };
}

function sample(): ResultsFile {
  const rows: ResultRow[] = [];
  for (const cache of ["writethrough", "writeback"] as const) {
    for (const [i, scheme] of ["eager", "lazy", "lazy-count", "owner", "journal"].entries()) {
      rows.push(refcowRow(scheme, cache, "in-place", 40 + i));
      rows.push(refcowRow(scheme, cache, "post-snapshot", 400 - 50 * i));
    }
    for (const phase of ["in-place", "post-snapshot"]) {
      for (const transport of ["ring", "nbd"] as const) rows.push({ source: "raw", scheme: "none", transport, cache, workload: "rand4k-per-cluster", phase, median_us: 20, p99_us: 35, amortized_us: 21, runs: 3, reps: reps(20, 21), cdf_us: cdf(20) });
    }
    for (const [flavour, post] of [["std", 1089], ["lazy_refcounts", 750]] as const) {
      rows.push({ source: "qemu", scheme: flavour, transport: "nbd", cache, workload: "rand4k-per-cluster", phase: "in-place", median_us: 210, p99_us: 400, amortized_us: 210, runs: 3, reps: reps(210, 210), cdf_us: cdf(210) });
      rows.push({ source: "qemu", scheme: flavour, transport: "nbd", cache, workload: "rand4k-per-cluster", phase: "post-snapshot", median_us: post, p99_us: post * 2, amortized_us: post, runs: 3, reps: reps(post, post), cdf_us: cdf(post) });
    }
  }
  for (const size of [64 << 20, 1 << 30]) {
    for (const scheme of ["eager", "owner"]) {
      for (const op of ["open", "snapshot-create", "snapshot-apply", "snapshot-delete", "close", "recovery"]) {
        const us = (scheme === "owner" ? 50 : 5000) * (size / (64 << 20));
        rows.push({ source: "refcow", scheme, cache: "writeback", workload: "snapshot-ops", phase: op, median_us: us, p99_us: null, amortized_us: us, runs: 3, size_bytes: size });
      }
    }
  }
  return {
    generated: "2026-01-01T00:00:00.000Z",
    machine: { cpu: "Test CPU (2 cores)", kernel: "6.1.0", filesystem: "ext2/ext3", node: "v20.20.2", qemu: "qemu-img version 7.2.0" },
    rows,
    guest: [
      {
        scheme: "eager",
        cache: "writeback",
        workload: "rand4k",
        savevm: true,
        bootMs: 240,
        warm: true,
        check: "clean",
        phases: [
          { name: "in-place", reads: 0, writes: 256, flushes: 1, write_median_us: 310, write_p99_us: 900, duration_ms: 90 },
          { name: "post-snapshot", reads: 0, writes: 256, flushes: 1, write_median_us: 1400, write_p99_us: 5100, duration_ms: 400 },
        ],
        snapshot: { drainMs: 0.5, flushMs: 3, diskSnapshotMs: 12, vmStateBytes: 9 << 20, vmStateSerializeMs: 80, vmStateWriteMs: 45 },
      },
    ],
  };
}

describe("report rendering", () => {
  it("renders every chart as inline SVG with the figures of the rows", async () => {
    const results = sample();
    const out = path.join(dir, "a");
    await writeReport(out, results, true);
    const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
    const figures = [...html.matchAll(/<figure id="([^"]+)"><h3>([^<]+)<\/h3>\s*<svg[^>]*>([\s\S]*?)<\/svg>\s*<figcaption>([^<]+)<\/figcaption>/g)];
    expect(figures.map((f) => f[1])).toEqual(["per-write", "cdf", "breakdown", "host-io", "snapshot-ops", "guest-phases", "vm-state"]);
    for (const f of figures) {
      // Real marks, not an empty frame: paths or rects beyond the background, and axis text.
      expect((f[3].match(/<path|<rect|<line/g) ?? []).length, f[1]).toBeGreaterThan(5);
      expect(f[3]).toMatch(/<text/);
    }
    const cdfSvg = figures.find((f) => f[1] === "cdf")![3];
    for (const s of ["eager (ring)", "journal (ring)", "raw file (ring)", "QEMU (nbd)"]) expect(cdfSvg).toContain(`>${s}<`);
    const breakdownSvg = figures.find((f) => f[1] === "breakdown")![3];
    for (const g of ["guest data", "flushes", "refcount/owner/journal metadata"]) expect(breakdownSvg).toContain(g);
    // Offline: no script, no external stylesheet, image or font.
    expect(html).not.toMatch(/<script|<link|src="http|url\(http/);
    // Tables carry the rows' numbers; the answer paragraph is the one computed from the rows.
    expect(html).toContain("<td class=\"n\">1089</td>");
    const answer = fullAnswer(results);
    expect(answer).toMatch(/eager/);
    expect(answer).toContain("440 µs"); // eager writethrough post-snapshot per write: 400 × 1.1
    expect(answer).toContain("1400 µs (in place 310)");
    const esc = (p: string) => p.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
    for (const p of detailParagraphs(results)) expect(html).toContain(`<p>${esc(p)}</p>`);
    expect(html).toContain(`<p>${esc(answerOf(results).summary.join(" "))}</p>`);
    const md = fs.readFileSync(path.join(out, "report.md"), "utf8");
    expect(md).toContain("## Answer");
    expect(md).toContain(fullAnswer(results, "markdown"));
    expect(md).toContain("guest-rand4k");
    expect(loadResults(path.join(out, "results.json")).rows.length).toBe(results.rows.length);
  }, 60_000);

  it("the answer counts the close of a scheme that defers work to it, by rounds, and says nothing when the close is small", () => {
    const rows = [refcowRow("eager", "writeback", "in-place", 20), refcowRow("eager", "writeback", "post-snapshot", 120), refcowRow("log", "writeback", "in-place", 20), refcowRow("log", "writeback", "post-snapshot", 22)];
    const withClose = (r: ResultRow, perRound: number[]) => {
      r.reps = r.reps!.map((x, i) => ({ ...x, amortized_close_us: perRound[i]! }));
      r.amortized_close_us = [...perRound].sort((a, b) => a - b)[1];
    };
    for (const r of rows) withClose(r, r.reps!.map((x) => x.amortized_us * 1.01));
    const summary = () => answerOf({ rows }).summary.join(" ");
    expect(summary()).not.toContain("counting its close");
    // log's in-place rounds amortize 19.8, 22, 26.4 µs; with the close 22, 22.2, 26.6; after the snapshot with
    // the close 180, 90, 300: per round 180/22, 90/22.2, 300/26.6.
    withClose(rows[2]!, [22, 22.2, 26.6]);
    withClose(rows[3]!, [180, 90, 300]);
    const perRound = [180 / 22, 90 / 22.2, 300 / 26.6].sort((a, b) => a - b);
    expect(summary()).toContain("log in writeback");
    expect(summary()).toContain(`${perRound[1]!.toFixed(2)}× (${perRound[0]!.toFixed(2)}–${perRound[2]!.toFixed(2)}) counting its close, which carries work it deferred`);
  });

  it("leaves out the charts the results have nothing for", async () => {
    const results = sample();
    results.rows = results.rows.filter((r) => r.workload !== "snapshot-ops" && r.source !== "refcow");
    results.guest = [];
    const out = path.join(dir, "b");
    await writeReport(out, results, false);
    const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
    expect([...html.matchAll(/<figure id="([^"]+)">/g)].map((m) => m[1])).toEqual(["per-write", "cdf"]);
    expect(fs.existsSync(path.join(out, "results.json"))).toBe(false);
  }, 60_000);

  it("refcow report re-renders a results.json and refuses what is not one", async () => {
    const src = path.join(dir, "c");
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, "results.json"), JSON.stringify(sample()));
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (t: string) => out.push(t), err: (t: string) => err.push(t) };
    expect(await main(["report", path.join(src, "results.json"), "--out", path.join(dir, "d")], io)).toBe(0);
    expect(fs.readFileSync(path.join(dir, "d", "report.html"), "utf8")).toContain("<svg");
    fs.writeFileSync(path.join(src, "bad.json"), JSON.stringify({ rows: [{ source: "refcow" }] }));
    expect(await main(["report", path.join(src, "bad.json")], io)).toBe(1);
    expect(err.join("")).toMatch(/row 0 lacks source, phase or median_us/);
    fs.writeFileSync(path.join(src, "junk.json"), "{not json");
    expect(await main(["report", path.join(src, "junk.json")], io)).toBe(1);
    expect(err.join("")).toMatch(/not a readable JSON file/);
  }, 60_000);
});
