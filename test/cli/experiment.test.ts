/**
 * `refcow experiment` end to end on a small scale: one scheme, one cache mode, a short rand4k guest run with a
 * savevm in the middle, a tiny host matrix with the guest's trace replayed, and the report. This is the main
 * job's whole pipeline: guest → trace → matrix → results.json → report.html.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { main } from "../../src/cli/main.js";
import { ensureGuestImage } from "../../src/guest/guest-image.js";
import type { ResultsFile } from "../../src/report/results.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-experiment-test-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("refcow experiment", () => {
  it("runs the guest, the matrix and the trace replay, and writes the report", async () => {
    await ensureGuestImage({ onProgress: (m) => process.stderr.write(m + "\n") });
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      ["experiment", "--schemes", "owner", "--cache", "writeback", "--clusters", "16", "--guest-reps", "2", "--bench-clusters", "16", "--bench-reps", "1", "--no-fio", "--no-ops", "--out", path.join(dir, "report"), "--keep", path.join(dir, "work")],
      { out: (t) => out.push(t), err: (t) => err.push(t) },
    );
    expect(code, err.join("")).toBe(0);
    const results = JSON.parse(fs.readFileSync(path.join(dir, "report", "results.json"), "utf8")) as ResultsFile;
    // Every cell runs --guest-reps times; nothing failed, and the results say so.
    expect(results.guest!.map((x) => x.rep)).toEqual([1, 2]);
    expect(results.failed).toEqual([]);
    const g = results.guest![0]!;
    expect(g.scheme).toBe("owner");
    expect(g.check).toBe("clean");
    expect(g.phases.map((p) => p.name)).toEqual(["fill", "in-place", "post-snapshot"]);
    for (const p of g.phases) {
      expect(p.writes).toBeGreaterThanOrEqual(16);
      expect(p.write_median_us).toBeGreaterThan(0);
      expect(p.write_cdf_us).toHaveLength(101);
      // The phase's wall time: what the guest's amortized cost per write (the ranking statistic) is drawn from.
      expect(p.duration_ms).toBeGreaterThan(0);
      // The four clocks around the same writes, outermost first: the guest's system call, v86's request,
      // the ring's client, the engine. Each inner one is part of the outer one, request by request.
      expect(p.app_us!.count).toBe(p.writes);
      expect(p.device_us!.count).toBe(p.writes);
      expect(p.ring_us!.count).toBe(p.writes);
      expect(p.engine_us!.count).toBe(p.writes);
      expect(p.app_us!.median).toBeGreaterThan(p.engine_us!.median);
      expect(p.ring_us!.median).toBeGreaterThanOrEqual(p.engine_us!.median);
    }
    expect(g.transferMode).toMatch(/^XFER_/);
    expect(g.snapshot!.vmStateBytes).toBeGreaterThan(1 << 20);
    // The guest's own trace, replayed on the scheme and on a raw file.
    for (const source of ["refcow", "raw"]) {
      expect(results.rows.filter((r) => r.source === source && r.workload === "trace").map((r) => r.phase)).toEqual(["fill", "in-place", "post-snapshot"]);
    }
    for (const flavour of ["std", "lazy_refcounts"]) expect(results.rows.some((r) => r.source === "qemu" && r.scheme === flavour)).toBe(true);
    expect(results.machine.v86).toMatch(/^\d+\.\d+/);
    expect(results.machine.guest).toMatch(/Linux 6\./);
    const html = fs.readFileSync(path.join(dir, "report", "report.html"), "utf8");
    for (const id of ["per-write", "guest-phases", "guest-cdf", "vm-state"]) expect(html).toContain(`<figure id="${id}">`);
    expect(out.join("")).toMatch(/In the guest \(rand4k workload/);
    // The images the guest left are plain qcow2 that refcow and QEMU agree on.
    expect(fs.existsSync(path.join(dir, "work", "guest-owner-writeback-1.qcow2"))).toBe(true);
    // The guest section: the four columns with the range over the two runs, and the host's ratio beside the guest's.
    expect(html).toContain("app − engine µs");
    expect(html).toContain("host post ÷ in-place (ring, amortized");
    const md = fs.readFileSync(path.join(dir, "report", "report.md"), "utf8");
    expect(md).toMatch(/owner\s+writeback\s+post-snapshot\s+2\s+\d+ \(\d+–\d+\)/);
    // The answer leads with its table: the scheme and the baselines, the scheme beside QEMU through NBD.
    expect(md).toMatch(/\*\*writeback, rand4k-per-cluster: a write in place and after an internal snapshot\*\*\n\n\| source \(transport\) \| in place: amortized µs\/write/);
    for (const name of ["owner (ring)", "raw file (ring)", "QEMU (nbd)", "QEMU lazy_refcounts (nbd)"]) expect(md).toMatch(new RegExp(`\\| ${name.replace(/[()]/g, "\\$&")} \\| [\\d.]+`));
    expect(results.rows.some((r) => r.scheme === "owner" && r.transport === "nbd" && r.phase === "post-snapshot")).toBe(true);
    expect(html).toContain('<table class="answer-table">');
  }, 600_000);

  it("refuses bad options before running anything", async () => {
    const err: string[] = [];
    const io = { out: () => {}, err: (t: string) => err.push(t) };
    expect(await main(["experiment", "--schemes", "nope"], io)).toBe(1);
    expect(err.join("")).toMatch(/unknown scheme 'nope'/);
    expect(await main(["experiment", "--no-guest", "--no-bench"], io)).toBe(1);
    expect(err.join("")).toMatch(/leave nothing to run/);
    expect(await main(["experiment", "--workload", "x"], io)).toBe(1);
    expect(err.join("")).toMatch(/unknown workload 'x'/);
  });
});
