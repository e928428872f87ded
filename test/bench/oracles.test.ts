/**
 * The benchmark's numbers against oracles that did not produce them:
 *
 *  - the kernel: a small matrix runs in one process under `strace -f`; between the two accounting reads
 *    around each measured phase (marked in the trace), the fdatasync/fsync calls the kernel saw are the
 *    flushes the row reports, and the bytes of its pread64/pwrite64 calls are the row's host bytes;
 *  - QEMU: `qemu-img check` of every image the bench wrote (refcow's, QEMU's own, the recovered crash
 *    copies) finds it clean (leaks allowed in a crash copy only, as QEMU's own crashes leave them);
 *  - a QEMU row whose output cannot be read is an error quoting that output (real `qemu-img` output here).
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { ResultRow } from "../../src/report/results.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-bench-oracles-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
// strace installed (test/setup/ensure-bench-tools.sh) and allowed to trace here.
const hasStrace = spawnSync("strace", ["-f", "-qq", "-o", "/dev/null", "true"]).status === 0;

interface PhaseSyscalls {
  flushes: number;
  bytes: number;
}

/** Per marker pair (a measured phase): the flush calls and the bytes read and written by pread64/pwrite64. */
function phasesOf(log: string): PhaseSyscalls[] {
  const phases: PhaseSyscalls[] = [];
  let cur: PhaseSyscalls | undefined;
  let inside = false;
  for (const line of log.split("\n")) {
    if (line.includes("/refcow-strace-marker/")) {
      inside = !inside;
      if (inside) phases.push((cur = { flushes: 0, bytes: 0 }));
      continue;
    }
    if (!inside || !cur) continue;
    if (/\b(fdatasync|fsync)\(/.test(line)) cur.flushes++;
    // A whole call, or the second half of one that another thread's call split.
    const io = /\b(?:pread64|pwrite64)(?:\(| resumed>).*\)\s+=\s+(\d+)/.exec(line);
    if (io && !line.includes("<unfinished")) cur.bytes += Number(io[1]);
  }
  return phases;
}

describe("bench numbers against independent oracles", () => {
  it("flushes and host bytes per phase are what the kernel saw; every image the bench wrote passes qemu-img check", () => {
    expect(hasStrace, "strace, the kernel-side oracle of this test: npm test installs it (test/setup/ensure-bench-tools.sh), or apt-get install strace").toBe(true);
    const keep = path.join(dir, "kept");
    fs.mkdirSync(keep);
    const out = path.join(dir, "rows.json");
    const log = path.join(dir, "strace.log");
    execFileSync(
      "strace",
      ["-f", "-qq", "-o", log, "-e", "trace=fdatasync,fsync,pread64,pwrite64,%%stat", process.execPath, path.resolve("test/bench/strace-bench.mjs"), path.resolve("dist"), out, keep],
      { stdio: ["ignore", "ignore", "pipe"], maxBuffer: 1 << 26 },
    );
    const { clusters, rows, marks } = JSON.parse(fs.readFileSync(out, "utf8")) as { clusters: number; rows: ResultRow[]; marks: number };
    const measured = rows.filter((r) => r.source === "refcow" && r.breakdown);
    const phases = phasesOf(fs.readFileSync(log, "utf8"));
    expect(marks).toBe(2 * measured.length);
    expect(phases).toHaveLength(measured.length);
    let flushes = 0;
    for (const [i, r] of measured.entries()) {
      const label = `${r.scheme} ${r.alloc} ${r.cache} ${r.phase}`;
      const parts = Object.entries(r.breakdown!);
      const rowFlushes = Math.round(parts.reduce((s, [, p]) => s + p.flushes, 0) * clusters);
      // "growth" counts the size change of a truncate, not bytes moved.
      const rowBytes = Math.round(parts.filter(([k]) => k !== "growth").reduce((s, [, p]) => s + p.bytes, 0) * clusters);
      expect({ flushes: rowFlushes, bytes: rowBytes }, label).toEqual(phases[i]);
      flushes += rowFlushes;
    }
    // The matrix flushed at all (a trace that saw nothing would agree with rows that report nothing).
    expect(flushes).toBeGreaterThan(measured.length);

    // The qcow2 files among them (the raw baselines are .img files too).
    const isQcow2 = (f: string) => fs.readFileSync(path.join(keep, f)).subarray(0, 4).toString("latin1") === "QFI\xfb";
    const images = fs.readdirSync(keep).filter((f) => /\.(qcow2|img)(\.crashed)?$/.test(f) && isQcow2(f));
    // Every refcow row image (six schemes × 2 policies × 2 cache modes: at least 20) and the snapshot-ops pairs.
    expect(images.length).toBeGreaterThanOrEqual(20 + 10);
    for (const f of images) {
      const r = spawnSync("qemu-img", ["check", "-f", "qcow2", path.join(keep, f)], { encoding: "utf8" });
      const said = `${f}: exit ${r.status}\n${r.stdout}${r.stderr}`;
      // A crash copy (taken after a flush, opened and closed again by refcow) may keep leaked clusters, as
      // QEMU's own crashes do when refcounts were exact (the decrements of the last flush were still due);
      // nothing else may be wrong with any image.
      if (f.endsWith(".crashed") && r.status === 3) expect(said).toMatch(/leaked clusters were found[\s\S]*no harm to data/);
      else expect(said).toMatch(/exit 0\n.*No errors were found on the image/s);
    }
  }, 600_000);
});
