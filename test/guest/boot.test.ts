/**
 * One real guest boot: Debian's i386 kernel + busybox (guest-images/) in v86, its IDE disk on a raw
 * in-memory AsyncDisk through the hda adapter. The guest's own kernel writes known patterns to /dev/sda
 * (O_DIRECT + fsync); the host checks the bytes at the right offsets, that the guest's flush reached the
 * disk and that the guest waited for it; then a warm start from a saved state.
 *
 * First run builds the guest image (guest-images/build.sh: downloads ~55 MB of .debs; a few minutes).
 * Once .cache/guest exists the file takes about 20-40 s, depending on host load.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureGuestImage, readGuestManifest } from "../../src/guest/guest-image.js";
import { GuestRunner } from "../../src/guest/guest-runner.js";
import type { DiskDone } from "../../src/disk/async-disk.js";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";

const MiB = 1024 * 1024;
const log = (m: string) => process.stderr.write(m + "\n");

/** A raw memory disk whose next flush can be held until the test releases it. */
class GatedDisk extends MemoryAsyncDisk {
  private gate: { entered: () => void; release: Promise<void> } | undefined;
  flushLog: Array<{ writesBefore: number }> = [];

  /** Holds the next flush. Returns a promise for "the flush reached the disk" and a release function. */
  holdNextFlush(): { entered: Promise<void>; release: () => void } {
    let entered!: () => void;
    let release!: () => void;
    const enteredP = new Promise<void>((r) => (entered = r));
    const releaseP = new Promise<void>((r) => (release = r));
    this.gate = { entered, release: releaseP };
    return { entered: enteredP, release };
  }

  override flush(done: DiskDone): void {
    this.flushLog.push({ writesBefore: this.counts.writes });
    const g = this.gate;
    if (!g) return super.flush(done);
    this.gate = undefined;
    g.entered();
    void g.release.then(() => super.flush(done));
  }
}

/** The bytes `yes <word> | head -c <n>` produces. */
function yesPattern(word: string, n: number): Uint8Array {
  const line = word + "\n";
  return new Uint8Array(Buffer.from(line.repeat(Math.ceil(n / line.length)).slice(0, n), "latin1"));
}

const md5 = (b: Uint8Array) => createHash("md5").update(b).digest("hex");

describe("real guest on v86", () => {
  const disk = new GatedDisk(64 * MiB);
  const expected = new Uint8Array(64 * MiB); // what the disk must hold
  let guest: GuestRunner | undefined;

  beforeAll(async () => {
    await ensureGuestImage({ onProgress: log });
    const m = readGuestManifest();
    log(`[test] guest: kernel ${m.kernelRelease}, ${m.packages.map((p) => `${p.package} ${p.version}`).join(", ")}`);
    guest = await GuestRunner.boot({ disk, onProgress: log });
    log(`[test] cold boot to REFCOW-READY: ${(guest.readyMs / 1000).toFixed(1)} s`);
  }, 15 * 60_000);

  afterAll(async () => {
    await guest?.destroy();
  }, 60_000);

  it("sees an IDE disk of the right size with a write cache (so that its flushes are sent)", async () => {
    const g = guest!;
    expect(await g.check("cat /sys/block/sda/size")).toBe(`${(64 * MiB) / 512}\n`);
    expect(await g.check("cat /sys/block/sda/queue/write_cache")).toBe("write back\n");
    // the boot only read the disk (partition table probe)
    expect(disk.counts.writes).toBe(0);
    expect(disk.counts.reads).toBeGreaterThan(0);
  }, 60_000);

  it("writes known patterns through the guest kernel to the right offsets", async () => {
    const g = guest!;
    g.adapter.takeRecords();
    // busybox dd maps its buffer page-aligned only when bs >= 4096 and otherwise silently drops O_DIRECT
    // on EINVAL, so direct writes use bs >= 4096; seek_bytes places one at a 512-aligned, not 4K-aligned offset.
    const cases = [
      { word: "refcow-a", bs: 4096, count: 1, seek: 7, bytes: false }, // 4 KiB at 28 KiB
      { word: "refcow-b", bs: 4096, count: 2, seek: MiB - 1536, bytes: true }, // 8 KiB straddling 1 MiB
      { word: "refcow-c", bs: 65536, count: 4, seek: 160, bytes: false }, // 256 KiB at 10 MiB
      { word: "refcow-end", bs: 4096, count: 1, seek: 64 * 256 - 1, bytes: false }, // the last 4 KiB
    ];
    for (const c of cases) {
      const n = c.bs * c.count;
      await g.check(`yes ${c.word} | head -c ${n} > /tmp/p`);
      const oflag = c.bytes ? "seek_bytes,direct" : "direct";
      const r = await g.run(`dd if=/tmp/p of=/dev/sda bs=${c.bs} count=${c.count} seek=${c.seek} oflag=${oflag} conv=fsync`, { phase: "workload" });
      expect(r.exitCode, r.output).toBe(0);
      expected.set(yesPattern(c.word, n), c.bytes ? c.seek : c.seek * c.bs);
    }
    expect(md5(disk.bytes)).toBe(md5(expected)); // every written byte in place, nothing else touched
    const recs = g.adapter.takeRecords().filter((r) => r.phase === "workload");
    const writes = recs.filter((r) => r.op === "write");
    expect(recs.filter((r) => r.op === "read")).toEqual([]); // direct I/O: no page-cache read-modify-write
    expect(writes.some((r) => r.offset === MiB - 1536)).toBe(true);
    expect(writes.reduce((s, r) => s + r.length, 0)).toBe(cases.reduce((s, c) => s + c.bs * c.count, 0));
    expect(recs.filter((r) => r.op === "flush").length).toBeGreaterThanOrEqual(cases.length); // conv=fsync each time
    for (const r of recs) expect(r.latencyMs).toBeGreaterThanOrEqual(0);
  }, 120_000);

  it("reads back what the host put on the disk (O_DIRECT, bypassing the guest's cache)", async () => {
    const g = guest!;
    const pattern = yesPattern("from-the-host", 8192);
    disk.bytes.set(pattern, 20 * MiB);
    expected.set(pattern, 20 * MiB);
    const out = await g.check(`dd if=/dev/sda bs=4096 count=2 skip=${(20 * MiB) / 4096} iflag=direct 2>/dev/null | md5sum`);
    expect(out.split(" ")[0]).toBe(md5(pattern));
  }, 60_000);

  it("completes the guest's fsync only after the disk's flush completed, with the data written before it", async () => {
    const g = guest!;
    await g.check("yes refcow-flush | head -c 4096 > /tmp/f");
    const flushesBefore = disk.counts.flushes;
    const guestFlushesBefore = g.guestFlushes;
    const held = disk.holdNextFlush();
    const run = g.run("dd if=/tmp/f of=/dev/sda bs=4096 count=1 seek=3000 oflag=direct conv=fsync && echo synced", { phase: "flush" });
    let settled = false;
    void run.then(() => (settled = true));
    await held.entered; // the guest's FLUSH CACHE reached the disk...
    expect(g.guestFlushes).toBe(guestFlushesBefore + 1);
    // ...after the write it orders:
    expect(disk.flushLog.at(-1)!.writesBefore).toBe(disk.counts.writes);
    expect(md5(disk.bytes.subarray(3000 * 4096, 3001 * 4096))).toBe(md5(yesPattern("refcow-flush", 4096)));
    await new Promise((r) => setTimeout(r, 1500));
    expect(settled).toBe(false); // ...and the guest is still waiting for it
    const releasedAt = performance.now();
    held.release();
    const r = await run;
    expect(r.exitCode, r.output).toBe(0);
    expect(r.output).toContain("synced");
    expect(r.ms).toBeGreaterThan(1500);
    expect(performance.now() - releasedAt).toBeLessThan(30_000);
    expect(disk.counts.flushes).toBe(flushesBefore + 1);
    expected.set(yesPattern("refcow-flush", 4096), 3000 * 4096);
    const flushRec = g.adapter.takeRecords().filter((x) => x.op === "flush" && x.phase === "flush");
    expect(flushRec).toHaveLength(1);
    expect(flushRec[0]!.latencyMs).toBeGreaterThan(1400);
  }, 120_000);

  it("saves its state and warm-starts from it on the same disk", async () => {
    const g = guest!;
    await g.check("echo warm > /tmp/marker");
    const state = await g.saveState({ resume: false });
    await g.destroy();
    guest = undefined;
    const g2 = await GuestRunner.boot({ disk, initialState: state, onProgress: log });
    guest = g2;
    log(`[test] warm start (${(state.byteLength / MiB).toFixed(0)} MiB state) to the prompt: ${g2.readyMs.toFixed(0)} ms`);
    expect(await g2.check("cat /tmp/marker")).toBe("warm\n"); // RAM came back
    expect(await g2.check("cat /sys/block/sda/queue/write_cache")).toBe("write back\n");
    // the restored drive still flushes honestly
    const before = disk.counts.flushes;
    await g2.check("dd if=/tmp/f of=/dev/sda bs=4096 count=1 seek=3001 oflag=direct conv=fsync");
    expected.set(yesPattern("refcow-flush", 4096), 3001 * 4096);
    expect(disk.counts.flushes).toBe(before + 1);
    expect(g2.guestFlushes).toBe(1);
    expect(md5(disk.bytes)).toBe(md5(expected));
  }, 120_000);
});
