/**
 * Workload definitions, latency summaries and warm-state keys, without booting the guest (the guest runs
 * them in guest-session.test.ts). The oracle for what a workload writes is its own command lines, run by
 * the host's shell against a file (coreutils' dd, `yes`, awk and cmp take the same options as busybox's):
 * the content model and the warm-up's request count are checked against what those lines really do.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { latencyStats, percentile, phaseStats } from "../../src/guest/latency-stats.js";
import { resolveSnapshotPhase } from "../../src/guest/run-workload.js";
import { PHASE_LINE } from "../../src/guest/serial-console.js";
import { warmStateKey, type WarmStateInputs } from "../../src/guest/warm-state.js";
import { applyContent, buildWorkload, guestWarmUpRequests, patternBytes, rand4kTargets, smokeLayout, warmUpWrites, WORKLOAD_NAMES } from "../../src/guest/workloads.js";

const MiB = 1 << 20;
const P = { diskSize: 256 * MiB, clusterSize: 65536 };

const hostRoot = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-workloads-"));
afterAll(() => fs.rmSync(hostRoot, { recursive: true, force: true }));
let hostRuns = 0;

/**
 * Runs a guest command line with the host's /bin/sh: $DISK is `disk`, the guest's /tmp a folder of its own,
 * the console handshake a no-op, and `/bin/refcow-io` present only with `refcowIo` — then a stand-in that
 * records its arguments and counts the offsets it is given (one a line on stdin) instead of writing.
 */
function runOnHost(command: string, disk: string, opts: { refcowIo?: boolean } = {}) {
  const work = path.join(hostRoot, `run-${hostRuns++}`);
  const bin = path.join(work, "bin");
  fs.mkdirSync(bin, { recursive: true });
  if (opts.refcowIo) {
    fs.writeFileSync(path.join(bin, "refcow-io"), `#!/bin/sh\necho "$*" >> ${work}/refcow-io.args\nwc -l >> ${work}/refcow-io.offsets\n`, { mode: 0o755 });
  }
  // /tmp first: the folders put in below are under the host's /tmp themselves.
  const line = command
    .replaceAll("/tmp/", `${work}/`)
    .replaceAll("read -r _ </dev/ttyS0", ":")
    .replaceAll("/bin/refcow-io", `${bin}/refcow-io`);
  const r = spawnSync("/bin/sh", ["-c", line], { encoding: "utf8", env: { ...process.env, DISK: disk, PATH: `${bin}:${process.env.PATH}` } });
  const read = (f: string) => (fs.existsSync(path.join(work, f)) ? fs.readFileSync(path.join(work, f), "utf8").trim().split("\n") : []);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, refcowIoArgs: read("refcow-io.args"), refcowIoOffsets: read("refcow-io.offsets").map(Number) };
}

/** A sparse file of `size` bytes for runOnHost. */
function hostDisk(name: string, size: number): string {
  const file = path.join(hostRoot, name);
  fs.writeFileSync(file, "");
  fs.truncateSync(file, size);
  return file;
}

describe("workloads", () => {
  it("give one command line per phase that announces the phase before its I/O", () => {
    for (const name of WORKLOAD_NAMES) {
      const w = buildWorkload(name, P);
      expect(w.phases.map((p) => p.name)).toContain(w.middle);
      expect(new Set(w.phases.map((p) => p.name)).size).toBe(w.phases.length);
      for (const ph of w.phases) {
        expect(ph.command).not.toContain("\n");
        expect(PHASE_LINE.test(`REFCOW-PHASE ${ph.name}`)).toBe(true);
        const announce = ph.command.indexOf(`echo REFCOW-PHASE ${ph.name}; read -r _ </dev/ttyS0`);
        expect(announce, `${name}/${ph.name}`).toBeGreaterThanOrEqual(0);
        // No disk access before the announcement, but for the warm-up writes of the in-place phase, which no
        // phase counts: refcow-io fed the phase's offsets 64 times over (rand4k: 256 targets; 16384 / 256) or 32
        // (overwrite: 2 × 256 offsets).
        const prep = ph.command.slice(0, announce);
        const warmUp =
          /if \[ -x \/bin\/refcow-io \]; then i=0; while \[ \$i -lt (\d+) \]; do cat \/tmp\/order; i=\$\(\(i\+1\)\); done > \/tmp\/warm; refcow-io write \$DISK \/tmp\/blk sync <\/tmp\/warm >\/dev\/null \|\| exit 1; rm -f \/tmp\/warm; fi/;
        const passes = ph.name === "in-place" ? { rand4k: "64", overwrite: "32" }[name as string] : undefined;
        expect(warmUp.exec(prep)?.[1], `${name}/${ph.name} warm-up`).toBe(passes);
        expect(prep.replace(warmUp, "")).not.toMatch(/\/dev\/sda|\/dev\/vda|\/mnt|\$DISK/);
        expect(ph.timeoutMs).toBeGreaterThan(0);
      }
    }
  });

  it("write workloads rewrite the same clusters in-place and post-snapshot, and middle is post-snapshot", () => {
    for (const name of ["rand4k", "seq", "overwrite", "fs"]) {
      const w = buildWorkload(name, P);
      const names = w.phases.map((p) => p.name);
      expect(names.indexOf("in-place")).toBeLessThan(names.indexOf("post-snapshot"));
      expect(w.middle).toBe("post-snapshot");
    }
    const r = buildWorkload("rand4k", { ...P, clusters: 64 });
    const byPhase = (ph: string) => r.content!.filter((c) => c.phase === ph).map((c) => c.offset);
    expect(byPhase("fill")).toHaveLength(64);
    expect(byPhase("in-place")).toEqual(byPhase("fill"));
    expect(byPhase("post-snapshot")).toEqual(byPhase("fill"));
  });

  it("the warm-up writes the listed offsets over and over, at least 16384 in all (2048 batches at a depth), then syncs, at the phases' depth", () => {
    const disk = hostDisk("warm-up.img", MiB);
    // 300 listed offsets: the warm-up hands refcow-io 55 copies of the list (16500 ≥ 16384 writes) in one run.
    const listed = (depth: number) => `awk 'BEGIN{for(i=0;i<300;i++)print i*4096}' > /tmp/order; ${warmUpWrites(300, depth)}`;
    const one = runOnHost(listed(1), disk, { refcowIo: true });
    expect(one.status, one.stderr).toBe(0);
    expect(one.refcowIoArgs).toHaveLength(1);
    expect(one.refcowIoArgs[0]).toMatch(new RegExp(`^write ${disk} \\S+/blk sync$`));
    expect(one.refcowIoOffsets).toEqual([16500]);
    // Depth 16: 2048 batches of 16 = 32768, so 110 copies (33000), through io_uring.
    const sixteen = runOnHost(listed(16), disk, { refcowIo: true });
    expect(sixteen.refcowIoArgs[0]).toMatch(/^write \S+ \S+\/blk sync depth=16 uring$/);
    expect(sixteen.refcowIoOffsets).toEqual([33000]);
    // Without refcow-io in the guest (dd fallback image) there is no warm-up, and the line still succeeds.
    expect(runOnHost(listed(1), disk)).toMatchObject({ status: 0, refcowIoOffsets: [] });
    // rand4k at depth 16 runs it in its in-place phase: 256 targets × 128 = 32768, then the phase's own 256.
    const inPlace = buildWorkload("rand4k", { ...P, iodepth: 16 }).phases[1]!;
    const run = runOnHost(inPlace.command, hostDisk("rand4k-16.img", P.diskSize), { refcowIo: true });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain("REFCOW-PHASE in-place");
    expect(run.refcowIoOffsets).toEqual([32768, 256]);
    expect(run.refcowIoArgs.map((a) => a.replace(/^write \S+ \S+\/blk /, ""))).toEqual(["sync depth=16 uring", "sync depth=16 uring"]);
  });

  it("the warm-up is 16384 requests at least and 2048 batches of the queue depth, within what refcow-io takes at a depth", () => {
    expect([1, 2, 8, 16, 32, 64, 128].map((d) => guestWarmUpRequests(d))).toEqual([16384, 16384, 16384, 32768, 65536, 65536, 65536]);
    // 300 offsets: 55 passes (16500 writes) at depth 1, 110 (33000) at depth 16; at depth 64, 218 (65400), not 219.
    expect(warmUpWrites(300, 1)).toContain("while [ $i -lt 55 ]");
    expect(warmUpWrites(300, 16)).toContain("while [ $i -lt 110 ]");
    expect(warmUpWrites(300, 64)).toContain("while [ $i -lt 218 ]");
    // More offsets than refcow-io queues: the phase's own list once (the phase itself runs it so).
    expect(warmUpWrites(70000, 16)).toContain("while [ $i -lt 1 ]");
  });

  it("rand4k targets are cluster starts spread over the whole disk, one per cluster", () => {
    const t = rand4kTargets({ ...P, clusters: 256 });
    expect(t).toHaveLength(256);
    expect(t[1]).toBe(MiB); // 256 MiB / 256
    for (const o of t) expect(o % 65536).toBe(0);
    expect(t.at(-1)! + 4096).toBeLessThanOrEqual(P.diskSize);
    // more targets than clusters: one per cluster
    expect(rand4kTargets({ diskSize: 4 * MiB, clusterSize: 65536, clusters: 1000 })).toHaveLength(64);
    // the guest lists the targets' byte offsets
    expect(buildWorkload("rand4k", { ...P, clusters: 256 }).phases[0]!.command).toContain("print a[i]*1048576}");
  });

  it("smoke writes straddle cluster boundaries, its content model is what its phases write, and its verify phase accepts that", () => {
    const L = smokeLayout(64 * MiB);
    // 60 KiB past each eighth of the 64 MiB disk, 8 KiB long: across the boundary at 64 KiB past it.
    expect(L.offsets).toEqual(Array.from({ length: 8 }, (_, i) => i * 8 * MiB + 60 * 1024));
    expect(L.length).toBe(8192);
    const w = buildWorkload("smoke", { diskSize: 64 * MiB, clusterSize: 65536 });
    const file = hostDisk("smoke.img", 64 * MiB);
    for (const ph of w.phases) {
      const r = runOnHost(ph.command, file);
      expect({ phase: ph.name, status: r.status, stderr: r.stderr }).toEqual({ phase: ph.name, status: 0, stderr: "" });
      expect(r.stdout).toBe(`REFCOW-PHASE ${ph.name}\n`);
    }
    // What the phases wrote is what the model says, byte for byte.
    expect(Buffer.compare(fs.readFileSync(file), applyContent(new Uint8Array(64 * MiB), w.content!))).toBe(0);
    // And the verify phase fails on a disk that differs in one byte of an overwritten extent.
    const bad = fs.openSync(file, "r+");
    fs.writeSync(bad, Buffer.from("X"), 0, 1, L.offsets[3]! + 2048 + 100);
    fs.closeSync(bad);
    const verify = runOnHost(w.phases.find((p) => p.name === "verify")!.command, file);
    expect(verify.status).toBe(1);
    expect(verify.stdout).toContain(`REFCOW-MISMATCH at byte ${L.offsets[3]}`);
  });

  it("rand4k's and seq's content models are what their phases write", () => {
    for (const name of ["rand4k", "seq"]) {
      const params = { diskSize: 64 * MiB, clusterSize: 65536, clusters: 16 };
      const w = buildWorkload(name, params);
      const file = hostDisk(`${name}.img`, params.diskSize);
      for (const ph of w.phases) {
        // No refcow-io on the host: the phases' dd fallback writes the same bytes at the same offsets.
        const r = runOnHost(ph.command, file);
        expect({ name, phase: ph.name, status: r.status, stderr: r.stderr }).toEqual({ name, phase: ph.name, status: 0, stderr: "" });
        const model = applyContent(new Uint8Array(params.diskSize), w.content!, w.phases.slice(0, w.phases.indexOf(ph) + 1).map((p) => p.name));
        expect(Buffer.compare(fs.readFileSync(file), model), `${name} after ${ph.name}`).toBe(0);
      }
    }
  });

  it("patternBytes is the `yes WORD` stream", () => {
    expect(new TextDecoder().decode(patternBytes("ab", 7))).toBe("ab\nab\na");
    const yes = spawnSync("/bin/sh", ["-c", "yes refcow-smoke-a | head -c 10000"]);
    expect(Buffer.compare(yes.stdout, patternBytes("refcow-smoke-a", 10000))).toBe(0);
  });

  it("refuse bad names, disks and snapshot phases with the valid choices", () => {
    expect(() => buildWorkload("fio", P)).toThrow(/unknown workload 'fio' \(available: smoke, rand4k, seq, overwrite, fs\)/);
    expect(() => buildWorkload("smoke", { diskSize: 4096, clusterSize: 65536 })).toThrow(/at least 1 MiB/);
    const w = buildWorkload("rand4k", P);
    expect(resolveSnapshotPhase(w, undefined)).toBe("post-snapshot");
    expect(resolveSnapshotPhase(w, "middle")).toBe("post-snapshot");
    expect(resolveSnapshotPhase(w, "none")).toBeUndefined();
    expect(resolveSnapshotPhase(w, "in-place")).toBe("in-place");
    expect(() => resolveSnapshotPhase(w, "verify")).toThrow(/workload rand4k has the phases fill, in-place, post-snapshot/);
  });
});

describe("latency stats", () => {
  it("uses nearest-rank percentiles", () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBe(0);
    const s = latencyStats([5, 1, 3], 12);
    expect(s).toMatchObject({ count: 3, bytes: 12, medianUs: 3, p99Us: 5, maxUs: 5, meanUs: 3 });
    expect(latencyStats([])).toMatchObject({ count: 0, medianUs: 0, p99Us: 0 });
  });

  it("summarises records per phase and op, in µs, with the engine's service time when every record has it", () => {
    const r = (op: "read" | "write" | "flush", phase: string, latencyMs: number, serviceMs?: number) => ({ op, phase, offset: 0, length: op === "flush" ? 0 : 4096, submitted: 0, queuedMs: 0, latencyMs, serviceMs });
    const st = phaseStats([r("write", "a", 1, 0.1), r("write", "a", 3, 0.2), r("flush", "a", 10), r("read", "b", 0.5)], ["a", "b", "c"]);
    expect(st.a!.writes).toMatchObject({ count: 2, bytes: 8192, medianUs: 1000, maxUs: 3000, serviceMedianUs: 100 });
    expect(st.a!.flushes).toMatchObject({ count: 1, medianUs: 10000 });
    expect(st.a!.flushes.serviceMedianUs).toBeUndefined();
    expect(st.b!.reads.count).toBe(1);
    expect(st.c!.writes.count).toBe(0);
  });
});

describe("warm-start state key", () => {
  it("changes with everything the saved state depends on", () => {
    const base: WarmStateInputs = { diskSize: 64 * MiB, memoryMiB: 128, cmdline: "console=ttyS0", honestFlush: true, v86Version: "0.5.462", machine: "m1", guestManifest: "abc" };
    const k = warmStateKey(base);
    expect(warmStateKey({ ...base })).toBe(k);
    const changes: Partial<WarmStateInputs>[] = [{ diskSize: 128 * MiB }, { memoryMiB: 64 }, { cmdline: "console=ttyS0 quiet" }, { honestFlush: false }, { v86Version: "0.5.463" }, { machine: "m2" }, { guestManifest: "abd" }];
    for (const c of changes) expect(warmStateKey({ ...base, ...c }), JSON.stringify(c)).not.toBe(k);
  });
});
