/**
 * Workload definitions, latency summaries and warm-state keys, without booting the guest (the guest runs
 * them in guest-session.test.ts).
 */
import { describe, expect, it } from "vitest";
import { latencyStats, percentile, phaseStats } from "../../src/vm/latency-stats.js";
import { resolveSnapshotPhase } from "../../src/vm/run-workload.js";
import { PHASE_LINE } from "../../src/vm/serial-console.js";
import { warmStateKey, type WarmStateInputs } from "../../src/vm/warm-state.js";
import { applyContent, buildWorkload, guestWarmUpRequests, patternBytes, rand4kTargets, smokeLayout, warmUpWrites, WORKLOAD_NAMES } from "../../src/vm/workloads.js";

const MiB = 1 << 20;
const P = { diskSize: 256 * MiB, clusterSize: 65536 };

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
        // No disk access before the announcement, but for the warm-up writes of the in-place phase (warmUpWrites),
        // which no phase counts.
        const prep = ph.command.slice(0, announce);
        const warm = warmUpWrites(name === "rand4k" ? rand4kTargets(P).length : 2 * 256, 1);
        const hasWarmUp = ph.name === "in-place" && (name === "rand4k" || name === "overwrite");
        expect(prep.includes(warm), `${name}/${ph.name} warm-up`).toBe(hasWarmUp);
        expect(prep.replace(warm, "")).not.toMatch(/\/dev\/sda|\/dev\/vda|\/mnt|\$DISK/);
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

  it("the warm-up writes the listed offsets over and over, at least guestWarmUpRequests(depth) in all, then syncs, at the phases' depth", () => {
    const line = warmUpWrites(300, 1);
    expect(line).toContain(`while [ $i -lt ${Math.ceil(guestWarmUpRequests(1) / 300)} ]; do cat /tmp/order;`);
    expect(line).toContain("refcow-io write $DISK /tmp/blk sync </tmp/warm >/dev/null || exit 1");
    expect(warmUpWrites(256, 16)).toContain("refcow-io write $DISK /tmp/blk sync depth=16 uring </tmp/warm");
    expect(buildWorkload("rand4k", { ...P, iodepth: 16 }).phases[1]!.command).toContain(warmUpWrites(256, 16));
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

  it("smoke writes straddle cluster boundaries and its content model is what the verify phase expects", () => {
    const L = smokeLayout(64 * MiB);
    expect(L.offsets).toHaveLength(8);
    for (const o of L.offsets) expect(Math.floor(o / 65536)).not.toBe(Math.floor((o + L.length - 1) / 65536));
    const w = buildWorkload("smoke", { diskSize: 64 * MiB, clusterSize: 65536 });
    const disk = applyContent(new Uint8Array(64 * MiB), w.content!);
    const a = patternBytes("refcow-smoke-a", 8192);
    const b = patternBytes("refcow-smoke-b", 4096);
    expect(disk.subarray(L.offsets[0]!, L.offsets[0]! + 8192)).toEqual(a);
    const odd = disk.subarray(L.offsets[1]!, L.offsets[1]! + 8192);
    expect(odd.subarray(0, 2048)).toEqual(a.subarray(0, 2048));
    expect(odd.subarray(2048, 6144)).toEqual(b);
    expect(odd.subarray(6144)).toEqual(a.subarray(6144));
  });

  it("patternBytes is the `yes WORD` stream", () => {
    expect(new TextDecoder().decode(patternBytes("ab", 7))).toBe("ab\nab\na");
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
