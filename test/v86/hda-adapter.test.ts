/**
 * The v86 hda adapter on its own (no emulator): copying, ordering, flush ordering, latency records,
 * quiescing, errors — the rules v86's IDE code imposes (see src/v86/hda-adapter.ts).
 */
import { describe, expect, it } from "vitest";
import { writeLength, type AsyncDisk, type DiskDone, type WriteData } from "../../src/disk/async-disk.js";
import { RequestRecorder } from "../../src/guest/request-recorder.js";
import { HdaAdapter } from "../../src/v86/hda-adapter.js";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";

const KiB = 1024;

function sectorOf(byte: number, len = 512): Uint8Array {
  return new Uint8Array(len).fill(byte);
}

function readP(a: HdaAdapter, off: number, len: number): Promise<Uint8Array> {
  return new Promise((resolve) => a.get(off, len, resolve));
}

/** Logs the order in which operations reach the disk. */
class LoggingDisk implements AsyncDisk {
  log: string[] = [];
  constructor(
    readonly inner: MemoryAsyncDisk,
    private readonly delays: { read?: number; write?: number; flush?: number } = {},
  ) {}
  get size() {
    return this.inner.size;
  }
  /** The end of the last request: requests are served in call order, as the AsyncDisk contract says. */
  private served: Promise<void> = Promise.resolve();
  private after(ms: number | undefined, f: () => void) {
    if (!ms) return f();
    this.served = this.served.then(() => new Promise<void>((resolve) => setTimeout(() => (f(), resolve()), ms)));
  }
  read(o: number, l: number, done: DiskDone<Uint8Array>) {
    this.log.push(`read ${o}+${l} start`);
    this.after(this.delays.read, () =>
      this.inner.read(o, l, (err, d) => {
        this.log.push(`read ${o}+${l} done`);
        done(err, d, undefined);
      }),
    );
  }
  write(o: number, d: WriteData, done: DiskDone) {
    const n = writeLength(d);
    this.log.push(`write ${o}+${n} start`);
    this.after(this.delays.write, () =>
      this.inner.write(o, d, (err) => {
        this.log.push(`write ${o}+${n} done`);
        done(err, undefined, undefined);
      }),
    );
  }
  flush(done: DiskDone) {
    this.log.push("flush start");
    this.after(this.delays.flush, () =>
      this.inner.flush((err) => {
        this.log.push("flush done");
        done(err, undefined, undefined);
      }),
    );
  }
}

describe("HdaAdapter", () => {
  it("exposes what v86 needs: byteLength, load/onload, get_and_cache + get_from_cache for the MBR", async () => {
    const mem = new MemoryAsyncDisk(1024 * KiB);
    mem.bytes[510] = 0x55;
    mem.bytes[511] = 0xaa;
    const a = new HdaAdapter(mem);
    expect(a.byteLength).toBe(1024 * KiB);
    let loaded = false;
    a.onload = () => (loaded = true);
    a.load();
    expect(loaded).toBe(true);
    expect(a.get_from_cache(0, 512)).toBeUndefined();
    const mbr = await new Promise<Uint8Array>((r) => a.get_and_cache(0, 512, r));
    expect(mbr[511]).toBe(0xaa);
    expect(a.get_from_cache(0, 512)?.[510]).toBe(0x55);
    expect(a.get_from_cache(512, 512)).toBeUndefined();
    let buf: unknown = "not called";
    a.get_buffer((b) => (buf = b));
    expect(buf).toBeUndefined();
  });

  it("rejects a disk whose size is not a multiple of 512", () => {
    expect(() => new HdaAdapter(new MemoryAsyncDisk(1000))).toThrow(/multiple of 512/);
  });

  it("copies write data synchronously (v86 reuses its PIO buffer at once)", async () => {
    const mem = new MemoryAsyncDisk(64 * KiB, 5);
    const a = new HdaAdapter(mem);
    const pio = sectorOf(0xab);
    a.set(4096, pio, () => undefined);
    pio.fill(0xcd); // the IDE reuses its buffer for the next command
    await a.whenIdle();
    expect(mem.bytes[4096]).toBe(0xab);
    expect(mem.bytes[4096 + 511]).toBe(0xab);
  });

  it("serves requests one at a time in submission order: a read after a write sees the write", async () => {
    const disk = new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 20, read: 1 });
    const a = new HdaAdapter(disk);
    a.set(0, sectorOf(1, 1024), () => undefined); // fire-and-forget, like a PIO write
    a.set(1024, sectorOf(2), () => undefined);
    const got = await readP(a, 512, 1024);
    expect(got.subarray(0, 512).every((b) => b === 1)).toBe(true);
    expect(got.subarray(512).every((b) => b === 2)).toBe(true);
    expect(disk.log).toEqual([
      "write 0+1024 start",
      "write 0+1024 done",
      "write 1024+512 start",
      "write 1024+512 done",
      "read 512+1024 start",
      "read 512+1024 done",
    ]);
  });

  it("completes a flush only after the disk's flush, behind every earlier write", async () => {
    const disk = new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 10, flush: 30 });
    const a = new HdaAdapter(disk);
    a.set(0, sectorOf(7), () => undefined);
    a.set(512, sectorOf(8), () => undefined);
    let flushedAt = -1;
    const t0 = performance.now();
    await new Promise<void>((resolve) =>
      a.flush(() => {
        flushedAt = performance.now() - t0;
        resolve();
      }),
    );
    expect(disk.log.at(-1)).toBe("flush done");
    expect(disk.log.indexOf("flush start")).toBeGreaterThan(disk.log.indexOf("write 512+512 done"));
    expect(flushedAt).toBeGreaterThanOrEqual(45); // 2 writes + the flush, not an instant acknowledgement
    expect(disk.inner.writesBeforeLastFlush).toBe(2);
  });

  it("reports per-request latency to its observer, recorded with the phase current at submission", async () => {
    const mem = new MemoryAsyncDisk(64 * KiB, 3);
    const rec = new RequestRecorder();
    const a = new HdaAdapter(mem, { observer: rec });
    rec.phase = "warmup";
    a.set(0, sectorOf(1), () => undefined);
    rec.phase = "measure";
    a.set(512, sectorOf(1), () => undefined);
    a.flush(() => undefined);
    await readP(a, 0, 512);
    const recs = rec.takeRecords();
    expect(recs.map((r) => [r.op, r.phase, r.offset, r.length])).toEqual([
      ["write", "warmup", 0, 512],
      ["write", "measure", 512, 512],
      ["flush", "measure", 0, 0],
      ["read", "measure", 0, 512],
    ]);
    for (const r of recs) {
      expect(r.latencyMs).toBeGreaterThanOrEqual(r.queuedMs);
      expect(r.latencyMs).toBeGreaterThan(2); // each op waits for the disk's 3 ms
    }
    // later requests waited behind earlier ones
    expect(recs[3]!.queuedMs).toBeGreaterThan(recs[0]!.queuedMs);
    expect(rec.records).toEqual([]);
    const m = rec.summary("measure");
    expect([m.writes, m.flushes, m.reads, m.bytesWritten, m.bytesRead]).toEqual([1, 1, 1, 512, 512]);
  });

  it("records the backend's own service time that the disk's completion carries", async () => {
    const mem = new MemoryAsyncDisk(64 * KiB, 2);
    let n = 0;
    const timing = (serviceMs: number) => ({ serviceMs, ringMs: undefined });
    const timed: AsyncDisk = {
      size: mem.size,
      read: (o, l, done) => mem.read(o, l, (err, d) => done(err, d, timing(0.5))),
      write: (o, d, done) => mem.write(o, d, (err) => done(err, undefined, timing(++n))),
      flush: (done) => mem.flush((err) => done(err, undefined, timing(0.25))),
    };
    const rec = new RequestRecorder();
    const a = new HdaAdapter(timed, { observer: rec });
    a.set(0, sectorOf(1), () => undefined);
    a.set(512, sectorOf(2), () => undefined);
    a.flush(() => undefined);
    await readP(a, 0, 512);
    expect(rec.takeRecords().map((r) => [r.op, r.serviceMs])).toEqual([
      ["write", 1],
      ["write", 2],
      ["flush", 0.25],
      ["read", 0.5],
    ]);
    // a disk that does not report it: no serviceMs
    const plainRec = new RequestRecorder();
    const plain = new HdaAdapter(new MemoryAsyncDisk(64 * KiB), { observer: plainRec });
    plain.set(0, sectorOf(1), () => undefined);
    await plain.whenIdle();
    expect(plainRec.takeRecords()[0]!.serviceMs).toBeUndefined();
  });

  it("whenIdle resolves once the queue drained; get_state is synchronous and holds no disk data", async () => {
    const a = new HdaAdapter(new MemoryAsyncDisk(64 * KiB, 5));
    expect(a.idle).toBe(true);
    await a.whenIdle();
    a.set(0, sectorOf(1), () => undefined);
    a.set(512, sectorOf(1), () => undefined);
    expect(a.pending).toBe(2);
    await a.whenIdle();
    expect(a.pending).toBe(0);
    expect(a.get_state()).toEqual([64 * KiB]);
    expect(a.failure).toBeUndefined();
  });

  it("reports get_state while busy and set_state of another disk size as failures", () => {
    const a = new HdaAdapter(new MemoryAsyncDisk(64 * KiB, 5));
    const errors: string[] = [];
    a.onError = (e) => errors.push(e.message);
    a.set(0, sectorOf(1), () => undefined);
    a.get_state();
    a.set_state([128 * KiB]);
    expect(errors[0]).toMatch(/in flight/);
    expect(errors[1]).toMatch(/saved disk size/);
  });

  it("drops a read aborted before it started, and completions from before invalidateCallbacks", async () => {
    const mem = new MemoryAsyncDisk(64 * KiB, 5);
    const a = new HdaAdapter(mem);
    const calls: string[] = [];
    a.set(0, sectorOf(1), () => calls.push("write"));
    const ac = new AbortController();
    a.get(0, 512, () => calls.push("aborted read"), { signal: ac.signal });
    ac.abort(); // device reset while the read is queued
    a.set(512, sectorOf(2), () => calls.push("stale write"));
    a.invalidateCallbacks(); // e.g. a state restore
    a.get(512, 512, () => calls.push("fresh read"));
    await a.whenIdle();
    expect(calls).toEqual(["fresh read"]);
    expect(mem.counts.reads).toBe(1);
    expect(mem.bytes[512]).toBe(2); // a dropped callback still wrote
  });

  it("reports disk errors without calling the callback, and keeps serving later requests", async () => {
    const mem = new MemoryAsyncDisk(64 * KiB);
    const failing: AsyncDisk = {
      size: mem.size,
      read: (o, l, done) => (o === 0 ? queueMicrotask(() => done(new Error("EIO at 0"), undefined, undefined)) : mem.read(o, l, done)),
      write: (o, d, done) => mem.write(o, d, done),
      flush: (done) => mem.flush(done),
    };
    const a = new HdaAdapter(failing);
    const seen: string[] = [];
    a.onError = (e, op, off) => seen.push(`${op}@${off}: ${e.message}`);
    let called = false;
    a.get(0, 512, () => (called = true));
    const later = await readP(a, 512, 512);
    expect(later.length).toBe(512);
    expect(called).toBe(false);
    expect(seen).toEqual(["read@0: EIO at 0"]);
    expect(a.failure?.message).toBe("EIO at 0");
  });

  it("refuses unaligned or out-of-range requests", () => {
    const a = new HdaAdapter(new MemoryAsyncDisk(64 * KiB));
    const errors: string[] = [];
    a.onError = (e) => errors.push(e.message);
    a.get(100, 512, () => undefined);
    a.set(64 * KiB, sectorOf(1), () => undefined);
    expect(errors).toHaveLength(2);
    expect(a.idle).toBe(true);
  });

  describe("write cache (writeCache bytes)", () => {
    /** v86's DMA writes: arrays of their own, not the drive's PIO buffer. */
    const dmaOnly = (a: HdaAdapter) => (a.reusedBuffer = () => false);

    it("completes a DMA write when queued; a later read still sees it and a flush waits for it", async () => {
      const disk = new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 20, read: 1, flush: 1 });
      const a = new HdaAdapter(disk, { writeCache: 4 * KiB });
      dmaOnly(a);
      let told = 0;
      a.set(0, sectorOf(3, 1024), () => told++);
      expect(told).toBe(1); // before the disk finished it
      expect(disk.log).toEqual(["write 0+1024 start"]);
      expect(a.idle).toBe(false);
      const got = await readP(a, 0, 1024);
      expect(got.every((b) => b === 3)).toBe(true);
      a.set(1024, sectorOf(4), () => told++);
      await new Promise<void>((resolve) => a.flush(resolve));
      expect(told).toBe(2);
      expect(disk.log.indexOf("flush start")).toBeGreaterThan(disk.log.indexOf("write 1024+512 done"));
      expect(disk.inner.writesBeforeLastFlush).toBe(2);
    });

    it("makes the guest wait again once the cache holds its bytes, and never caches PIO writes or without the option", async () => {
      const disk = new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 5 });
      const a = new HdaAdapter(disk, { writeCache: 2 * KiB });
      dmaOnly(a);
      const told: number[] = [];
      for (let i = 0; i < 4; i++) a.set(i * KiB, sectorOf(i + 1, KiB), () => told.push(i));
      expect(told).toEqual([0, 1]); // 2 KiB ahead of the disk at most
      await a.whenIdle();
      expect(told).toEqual([0, 1, 2, 3]);

      const plain = new HdaAdapter(new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 5 }));
      dmaOnly(plain);
      let plainTold = false;
      plain.set(0, sectorOf(1), () => (plainTold = true));
      expect(plainTold).toBe(false);
      await plain.whenIdle();
      expect(plainTold).toBe(true);

      const pio = new HdaAdapter(new LoggingDisk(new MemoryAsyncDisk(64 * KiB), { write: 5 }), { writeCache: 4 * KiB });
      let pioTold = false; // reusedBuffer unset: every write is taken as PIO (already told by v86)
      pio.set(0, sectorOf(1), () => (pioTold = true));
      expect(pioTold).toBe(false);
      await pio.whenIdle();
    });

    it("reports a cached write that fails, and fails every later flush with it", async () => {
      const mem = new MemoryAsyncDisk(64 * KiB);
      const failing: AsyncDisk = {
        size: mem.size,
        read: (o, l, done) => mem.read(o, l, done),
        write: (o, d, done) => (o === 4096 ? setTimeout(() => done(new Error("ENOSPC"), undefined, undefined), 2) : mem.write(o, d, done)),
        flush: (done) => mem.flush(done),
      };
      const a = new HdaAdapter(failing, { writeCache: 64 * KiB });
      dmaOnly(a);
      const errors: string[] = [];
      a.onError = (e, op) => errors.push(`${op}: ${e.message}`);
      let told = false;
      a.set(4096, sectorOf(9), () => (told = true));
      expect(told).toBe(true);
      let flushed = 0;
      a.flush(() => flushed++);
      await a.whenIdle();
      a.set(0, sectorOf(1), () => undefined);
      a.flush(() => flushed++);
      await a.whenIdle();
      expect(flushed).toBe(0);
      expect(errors[0]).toBe("write: ENOSPC");
      expect(errors.slice(1)).toEqual([
        "flush: a write the guest saw complete (512 bytes at offset 4096) failed: ENOSPC",
        "flush: a write the guest saw complete (512 bytes at offset 4096) failed: ENOSPC",
      ]);
      expect(a.failure?.message).toBe("ENOSPC");
    });
  });
});
