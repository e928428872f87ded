/**
 * A source that fails is never dropped: an image made unsound between two phases (qemu-img check finds a
 * leaked cluster) and a source that throws (an unknown scheme: in the write matrix, the trace replay and the
 * snapshot operations alike) end up in results.json, report.md and report.html with their reasons, the run
 * goes on past them, and the answer refuses to name a fastest scheme.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runMatrix } from "../../src/bench/matrix.js";
import { defaultOptions } from "../../src/bench/options.js";
import { writeOutputs } from "../../src/report/report.js";
import type { FailedSource, ResultsFile } from "../../src/report/results.js";
import { writeTrace } from "../../src/guest/trace.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-failures-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * Leaks one cluster: grows the file by a cluster and gives it refcount 1 in the first refcount block (qcow2
 * header: refcount_table_offset at byte 48; 16-bit refcounts, big-endian), so nothing references it.
 */
function leakCluster(file: string): void {
  const fd = fs.openSync(file, "r+");
  try {
    const head = Buffer.alloc(104);
    fs.readSync(fd, head, 0, 104, 0);
    expect(head.readUInt32BE(96), "16-bit refcounts").toBe(4);
    const table = Number(head.readBigUInt64BE(48));
    const entry = Buffer.alloc(8);
    fs.readSync(fd, entry, 0, 8, table);
    const block = Number(entry.readBigUInt64BE(0));
    const cluster = Math.ceil(fs.fstatSync(fd).size / 65536);
    fs.ftruncateSync(fd, (cluster + 1) * 65536);
    const one = Buffer.alloc(2);
    one.writeUInt16BE(1);
    fs.writeSync(fd, one, 0, 2, block + 2 * cluster);
  } finally {
    fs.closeSync(fd);
  }
}

describe("a failed source", () => {
  it("stays in all three report files with its reason, and the answer refuses to rank", async () => {
    const trace = path.join(dir, "t.trace");
    const events = [];
    let t = 0;
    for (const phase of ["in-place", "post-snapshot"]) {
      if (phase === "post-snapshot") events.push({ t: t++, op: "s" as const, offset: 0, length: 0, phase, name: "mid" });
      for (let c = 0; c < 4; c++) events.push({ t: t++, op: "w" as const, offset: c * 65536, length: 4096, phase, latency: 100 });
    }
    writeTrace(trace, { header: { format: "refcow-trace", version: 1, size: 4 << 20, clusterSize: 65536 }, events });
    const opts = {
      ...defaultOptions(true),
      clusters: 8,
      reps: 1,
      schemes: ["eager", "log", "bogus"],
      caches: ["writeback" as const],
      workloads: ["rand4k-per-cluster" as const, "trace" as const],
      traceFile: trace,
      qemu: false,
      qemuOrder: false,
      fio: false,
      fioDepths: [],
      opSizes: [8 << 20],
      dir: path.join(dir, "images"),
      onPhaseBoundary: (e: { spec: { scheme: string; transport: string }; phase: string; file: string }) => {
        if (e.spec.scheme === "eager" && e.spec.transport === "ring" && e.phase === "post-snapshot") leakCluster(e.file);
      },
    };
    const results = await runMatrix(opts);
    const out = path.join(dir, "out");
    const guestFailure: FailedSource = { part: "guest", name: "log (guest)", source: "refcow", scheme: "log", cache: "writeback", workload: "guest-rand4k", round: 1, reason: "the guest stopped answering" };
    await writeOutputs(out, { ...results, failed: [...results.failed, guestFailure] }, { cpu: "test" }, { schemes: opts.schemes });

    const saved = JSON.parse(fs.readFileSync(path.join(out, "results.json"), "utf8")) as ResultsFile;
    const failed = saved.failed!;
    const find = (part: string, name: string) => failed.find((f) => f.part === part && f.name === name);
    expect(find("write matrix", "eager (ring)")).toMatchObject({ cache: "writeback", workload: "rand4k-per-cluster", check: "1 leaked clusters", reason: "the image it left fails qemu-img check: 1 leaked clusters" });
    for (const part of ["write matrix", "trace replay"]) expect(find(part, "bogus (ring)")?.reason, part).toMatch(/unknown refcount scheme 'bogus'/);
    expect(find("snapshot-ops", "bogus (in-process)")?.reason).toMatch(/unknown refcount scheme 'bogus'/);
    expect(find("guest", "log (guest)")?.reason).toBe("the guest stopped answering");
    // The run went on past every failure: the sound sources' rows are all there.
    expect(saved.rows.some((r) => r.scheme === "log" && r.workload === "trace" && r.phase === "post-snapshot")).toBe(true);
    expect(saved.rows.some((r) => r.scheme === "log" && r.workload === "rand4k-per-cluster" && r.phase === "after-delete")).toBe(true);
    expect(saved.rows.some((r) => r.scheme === "log" && r.workload === "snapshot-ops" && r.phase === "recovery")).toBe(true);
    // No figure of a failed source is used.
    expect(saved.rows.some((r) => r.scheme === "eager" && r.workload === "rand4k-per-cluster")).toBe(false);
    expect(saved.rows.some((r) => r.scheme === "bogus")).toBe(false);

    const md = fs.readFileSync(path.join(out, "report.md"), "utf8");
    const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
    for (const [name, text] of [["report.md", md], ["report.html", html]] as const) {
      expect(text, name).toContain("write matrix, eager (ring), writeback, rand4k-per-cluster, round 1: the image it left fails qemu-img check: 1 leaked clusters");
      expect(text, name).toContain("trace replay, bogus (ring), writeback, trace, round 1: unknown refcount scheme 'bogus'");
      expect(text, name).toContain("snapshot-ops, bogus (in-process), snapshot-ops 8 MiB: unknown refcount scheme 'bogus'");
      expect(text, name).toContain("log (guest) writeback run 1 failed: the guest stopped answering");
      // The answer's table marks the row, and its sentences name what failed instead of ranking.
      expect(text, name).toContain("FAILED: qemu-img check: 1 leaked clusters");
      expect(text, name).toContain("In writeback no scheme is ranked because eager (ring) failed, bogus (ring) failed.");
      expect(text, name).not.toMatch(/lowest post-snapshot amortized cost per write of the schemes is/);
    }
  }, 120_000);
});
