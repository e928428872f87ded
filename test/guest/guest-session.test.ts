/**
 * The real guest on a qcow2 image served by refcow from a worker thread (GuestSession, runGuestWorkload):
 *
 *  - workloads with a host-driven snapshot in their middle — smoke on eager, owner and lazy, rand4k on
 *    journal, seq on lazy-count, both cache modes: afterwards `qemu-img check` is clean, and QEMU reads
 *    exactly the expected bytes from the snapshot (`qemu-img convert -l snapshot.name=...`) and from the
 *    active layer; the trace smoke wrote reads back;
 *  - savevm / loadvm: a snapshot with the VM state, then the guest changes its disk and its RAM (/tmp),
 *    loadvm, and the guest carries on from the saved instant, seeing the saved disk and /tmp.
 *
 * The guest resumes the cached warm-start state; when none is cached yet (first run on a machine), the
 * first test prepares it with one cold boot (15-40 s).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CacheMode } from "../../src/engine/types.js";
import { ensureGuestImage } from "../../src/guest/guest-image.js";
import { GuestSession } from "../../src/guest/guest-session.js";
import { runGuestWorkload } from "../../src/guest/run-workload.js";
import { readTrace } from "../../src/guest/trace.js";
import { applyContent, buildWorkload, patternBytes } from "../../src/guest/workloads.js";

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const log = (m: string) => process.stderr.write(m + "\n");
let dir = "";

function qemuCheck(image: string): string {
  const r = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain("No errors were found on the image.");
  return r.stdout;
}

/** The guest-visible bytes QEMU reads from `image` (its active layer, or snapshot `snapshot`). */
function qemuRaw(image: string, snapshot?: string): Buffer {
  const out = path.join(dir, `convert-${process.hrtime.bigint()}.raw`);
  execFileSync("qemu-img", ["convert", ...(snapshot ? ["-l", `snapshot.name=${snapshot}`] : []), "-O", "raw", image, out]);
  const b = readFileSync(out);
  rmSync(out);
  return b;
}

/** Equal, or a message naming the first differing byte (a 64 MiB toEqual diff is unreadable). */
function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  if (a.equals(Buffer.from(expected.buffer, expected.byteOffset, expected.length))) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  expect.fail(`${what}: first difference at byte ${i} (0x${i.toString(16)}): got ${actual[i]}, expected ${expected[i]}`);
}

const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

beforeAll(async () => {
  await ensureGuestImage({ onProgress: log });
  dir = mkdtempSync(path.join(tmpdir(), "refcow-guest-"));
}, 15 * 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("runGuestWorkload: smoke with a snapshot in the middle, checked by QEMU", () => {
  // journal and lazy-count run rand4k and seq below.
  const cases: Array<[string, CacheMode]> = [
    ["eager", "writethrough"],
    ["owner", "writeback"],
    ["lazy", "writethrough"],
  ];
  for (const [scheme, cache] of cases) {
    it(`${scheme} / ${cache}`, async () => {
      const image = path.join(dir, `${scheme}-${cache}.qcow2`);
      const trace = path.join(dir, `${scheme}-${cache}.trace`);
      const r = await runGuestWorkload({ image, size: SIZE, scheme, cache, workload: "smoke", snapshotAt: "middle", trace, onProgress: log });
      log(`[test] ${scheme}/${cache}: ${r.warm ? "warm start" : "cold boot"} ${r.bootMs.toFixed(0)} ms; writes median ${r.phases.write!.writes.medianUs.toFixed(0)} µs`);

      // What the guest did, as the adapter saw it.
      expect(r.created).toBe(true);
      expect(r.phaseOrder).toEqual(["write", "overwrite", "verify"]);
      expect(r.phases.write!.writes.count).toBe(8);
      expect(r.phases.write!.writes.bytes).toBe(8 * 8192);
      expect(r.phases.overwrite!.writes.count).toBe(4);
      expect(r.phases.verify!.reads.count).toBe(8); // O_DIRECT: every read reaches the disk
      expect(r.phases.verify!.writes.count).toBe(0);
      for (const ph of ["write", "overwrite"]) expect(r.phases[ph]!.flushes.count, ph).toBeGreaterThanOrEqual(1); // conv=fsync
      expect(r.guestFlushes).toBeGreaterThanOrEqual(2);
      // the engine's own time is part of each request's latency
      const ws = r.phases.write!.writes;
      expect(ws.serviceMedianUs).toBeGreaterThan(0);
      expect(ws.serviceMedianUs!).toBeLessThanOrEqual(ws.medianUs);
      expect(r.snapshot?.name).toBe("refcow-run");
      expect(r.snapshot?.phase).toBe("overwrite");
      expect(r.snapshot?.vmStateBytes).toBe(0);
      if (r.engineStats) {
        // the overwrite phase wrote into clusters the snapshot shares: the engine copied them
        const ow = r.engineStats.overwrite!;
        expect((ow["cow-write"]?.writes ?? 0) + (ow["guest-data"]?.writes ?? 0)).toBeGreaterThan(0);
        expect(ow["cow-read"]?.reads ?? 0).toBeGreaterThan(0);
      }

      // What QEMU reads back.
      qemuCheck(image);
      const w = buildWorkload("smoke", { diskSize: SIZE, clusterSize: 65536 });
      const atSnapshot = applyContent(new Uint8Array(SIZE), w.content!, ["write"]);
      const final = applyContent(new Uint8Array(SIZE), w.content!);
      sameBytes(qemuRaw(image, "refcow-run"), atSnapshot, "snapshot refcow-run");
      sameBytes(qemuRaw(image), final, "active layer");

      // The trace reads back, one event per request plus the snapshot.
      const t = readTrace(trace);
      expect(t.header).toMatchObject({ format: "refcow-trace", version: 1, size: SIZE, clusterSize: 65536, workload: "smoke", scheme, cache });
      const ops = t.events.map((e) => e.op).join("");
      expect(ops.replace(/f/g, "")).toBe("wwwwwwwwswwwwrrrrrrrr");
      const writes = t.events.filter((e) => e.op === "w");
      expect(writes.slice(0, 8).map((e) => [e.offset, e.length, e.phase])).toEqual(w.content!.slice(0, 8).map((c) => [c.offset, c.length, "write"]));
      expect(writes.slice(8).map((e) => [e.offset, e.length, e.phase])).toEqual(w.content!.slice(8).map((c) => [c.offset, c.length, "overwrite"]));
      for (const e of t.events) if (e.op !== "s") expect(e.latency).toBeGreaterThan(0);
    }, 5 * 60_000);
  }
});

describe("runGuestWorkload: rand4k and seq content, checked by QEMU", () => {
  for (const [workload, scheme, cache] of [
    ["rand4k", "journal", "writeback"],
    ["seq", "lazy-count", "writethrough"],
  ] as const) {
    it(`${workload} on ${scheme} / ${cache}: the snapshot holds the in-place pass, the active layer the post-snapshot one`, async () => {
      const image = path.join(dir, `${workload}.qcow2`);
      const r = await runGuestWorkload({ image, size: SIZE, scheme, cache, workload, clusters: 16, onProgress: log });
      expect(r.phaseOrder).toEqual(["fill", "in-place", "post-snapshot"]);
      const w = buildWorkload(workload, { diskSize: SIZE, clusterSize: 65536, clusters: 16 });
      const writes = w.content!.filter((c) => c.phase === "fill").length;
      const requests = workload === "rand4k" ? writes : (16 * 65536) / (256 * 1024);
      for (const ph of r.phaseOrder) expect(r.phases[ph]!.writes.count, ph).toBe(requests);
      expect(r.snapshot?.phase).toBe("post-snapshot");
      qemuCheck(image);
      sameBytes(qemuRaw(image, "refcow-run"), applyContent(new Uint8Array(SIZE), w.content!, ["fill", "in-place"]), "snapshot refcow-run");
      sameBytes(qemuRaw(image), applyContent(new Uint8Array(SIZE), w.content!), "active layer");
    }, 5 * 60_000);
  }
});

describe("GuestSession: savevm / loadvm", () => {
  it("goes back to the saved disk and the saved guest RAM together, and carries on from there", async () => {
    const image = path.join(dir, "savevm.qcow2");
    const s = await GuestSession.open({ image, size: SIZE, scheme: "eager", cache: "writeback", onProgress: log });
    try {
      const g = s.guest;
      const saved = patternBytes("refcow-saved", 8192);
      const changed = patternBytes("refcow-changed", 8192);
      await g.check("yes refcow-saved | head -c 8192 > /tmp/p && dd if=/tmp/p of=/dev/sda bs=4096 count=2 seek=100 oflag=direct conv=fsync 2>/dev/null");
      await g.check("echo before-savevm > /tmp/marker");
      // a snapshot without VM state, for the refusal below
      await s.snapshot("disk-only");

      const t = await s.snapshot("vm1", { vmState: true });
      log(`[test] savevm: ${(t.vmStateBytes / MiB).toFixed(1)} MiB VM state, serialise ${t.vmStateSerializeMs.toFixed(0)} ms, create ${t.snapshotCreateMs.toFixed(0)} ms (disk snapshot ${t.diskSnapshotMs.toFixed(0)} ms, VM-state write ${t.vmStateWriteMs.toFixed(0)} ms)`);
      expect(t.vmStateBytes).toBeGreaterThan(1 * MiB);
      expect(t.vmStateWriteMs).toBeGreaterThan(0);
      expect(t.vmStateIoMs).toBeGreaterThan(0);
      expect(t.vmStateIoMs).toBeLessThanOrEqual(t.vmStateWriteMs);
      expect(t.diskSnapshotMs).toBeGreaterThan(0);
      expect(t.diskSnapshotMs + t.vmStateWriteMs).toBeCloseTo(t.snapshotCreateMs, 6);

      // The guest changes its disk and its RAM.
      await g.check("yes refcow-changed | head -c 8192 > /tmp/q && dd if=/tmp/q of=/dev/sda bs=4096 count=2 seek=100 oflag=direct conv=fsync 2>/dev/null");
      await g.check("echo after-savevm > /tmp/marker");
      expect(await g.check("cat /tmp/marker")).toBe("after-savevm\n");
      expect((await g.check("dd if=/dev/sda bs=4096 count=2 skip=100 iflag=direct 2>/dev/null | md5sum")).split(" ")[0]).toBe(md5(changed));

      await expect(s.loadvm("disk-only")).rejects.toThrow(/no VM state/);
      expect(await g.check("cat /tmp/marker")).toBe("after-savevm\n"); // refused: nothing changed

      const l = await s.loadvm("vm1");
      log(`[test] loadvm: apply ${l.applyMs.toFixed(0)} ms, read ${l.vmStateReadMs.toFixed(0)} ms, restore ${l.restoreMs.toFixed(0)} ms`);
      expect(l.vmStateBytes).toBe(t.vmStateBytes);
      // RAM: the guest is back at the instant of the savevm...
      expect(await g.check("cat /tmp/marker")).toBe("before-savevm\n");
      // ...and so is the disk, through the kernel's cache and around it.
      expect((await g.check("dd if=/dev/sda bs=4096 count=2 skip=100 iflag=direct 2>/dev/null | md5sum")).split(" ")[0]).toBe(md5(saved));
      expect((await g.check("dd if=/dev/sda bs=4096 count=2 skip=100 2>/dev/null | md5sum")).split(" ")[0]).toBe(md5(saved));
      // It carries on: a new write after loadvm lands, and flushes still reach the engine.
      const flushes = g.guestFlushes;
      await g.check("dd if=/tmp/p of=/dev/sda bs=4096 count=2 seek=200 oflag=direct conv=fsync 2>/dev/null");
      expect(g.guestFlushes).toBeGreaterThan(flushes);
    } finally {
      await s.close();
    }
    qemuCheck(image);
    const list = execFileSync("qemu-img", ["snapshot", "-l", image], { encoding: "utf8" });
    expect(list).toMatch(/\bvm1\b/);
    expect(list).toMatch(/\bdisk-only\b/);
    const active = qemuRaw(image);
    sameBytes(active.subarray(100 * 4096, 102 * 4096), patternBytes("refcow-saved", 8192), "active layer at 400 KiB");
    sameBytes(active.subarray(200 * 4096, 202 * 4096), patternBytes("refcow-saved", 8192), "active layer at 800 KiB");
    sameBytes(qemuRaw(image, "vm1").subarray(100 * 4096, 102 * 4096), patternBytes("refcow-saved", 8192), "snapshot vm1");
  }, 5 * 60_000);
});
