/**
 * The virtio-blk device on its own (no emulator): a test driver builds legacy virtqueues in a fake guest
 * memory and checks requests in flight, flush ordering, discard / write-zeroes mapping, and that bad input
 * gives virtio-blk status codes, never an exception.
 */
import { describe, expect, it } from "vitest";
import type { VirtioPhaseSummary, VirtioRequestRecord } from "../../src/guest/request-recorder.js";
import { gatherWrite, type AsyncDisk, type DiskDone, type WriteData } from "../../src/disk/async-disk.js";
import { F_DISCARD, F_EVENT_IDX, F_FLUSH, F_NOTIFY_ON_EMPTY, F_WRITE_ZEROES, REG, STATUS_NEEDS_RESET } from "../../src/v86/virtio-blk-pci.js";
import { S_IOERR, S_OK, S_UNSUPP, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES, VirtioBlk } from "../../src/v86/virtio-blk.js";
import { AVAIL_F_NO_INTERRUPT, DESC_F_NEXT, DESC_F_WRITE, QUEUE_ALIGN, QUEUE_SIZE } from "../../src/v86/virtqueue.js";
import { Driver, QUEUE_AT, RAM } from "../helpers/virtio-driver.js";

const MiB = 1 << 20;

/** A disk whose operations complete only when the test says so. */
class ManualDisk implements AsyncDisk {
  readonly bytes: Uint8Array;
  log: string[] = [];
  private waiting: Array<{ what: string; go: () => void }> = [];
  auto = false;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
  get size() {
    return this.bytes.length;
  }
  private gate(what: string, run: () => void, done: () => void): void {
    this.log.push(`start ${what}`);
    const go = () => {
      run();
      this.log.push(`done ${what}`);
      done();
    };
    if (this.auto) queueMicrotask(go);
    else this.waiting.push({ what, go });
  }
  get queued(): string[] {
    return this.waiting.map((w) => w.what);
  }
  /** Completes the waiting operation named `what` (or the first). */
  release(what?: string): void {
    const i = what === undefined ? 0 : this.waiting.findIndex((w) => w.what === what);
    if (i < 0) throw new Error(`nothing waiting named ${what}; waiting: ${this.queued.join(", ")}`);
    const [w] = this.waiting.splice(i, 1);
    w!.go();
  }
  read(offset: number, length: number, done: DiskDone<Uint8Array>) {
    let out = new Uint8Array(0);
    this.gate(`r${offset}`, () => (out = this.bytes.slice(offset, offset + length)), () => done(undefined, out, undefined));
  }
  write(offset: number, data: WriteData, done: DiskDone) {
    const copy = gatherWrite(data).slice();
    this.gate(`w${offset}`, () => this.bytes.set(copy, offset), () => done(undefined, undefined, undefined));
  }
  flush(done: DiskDone) {
    this.gate("flush", () => undefined, () => done(undefined, undefined, undefined));
  }
  discard(offset: number, length: number, done: DiskDone) {
    this.gate(`d${offset}+${length}`, () => this.bytes.fill(0, offset, offset + length), () => done(undefined, undefined, undefined));
  }
  writeZeroes(offset: number, length: number, unmap: boolean, done: DiskDone) {
    this.gate(`z${offset}+${length}${unmap ? "u" : ""}`, () => this.bytes.fill(0, offset, offset + length), () => done(undefined, undefined, undefined));
  }
}

const settle = () => new Promise((r) => setTimeout(r, 0));

/** A pollable disk (as the worker-served one): operations complete in `poll()`, `ready` at a time. */
class PollDisk implements AsyncDisk {
  readonly bytes: Uint8Array;
  private pending: Array<() => void> = [];
  /** How many waiting operations the next poll completes. */
  ready = 0;
  polls = 0;
  readonly spinBudgetMs = 0;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
  get size() {
    return this.bytes.length;
  }
  get waiting() {
    return this.pending.length;
  }
  read(offset: number, length: number, done: DiskDone<Uint8Array>) {
    this.pending.push(() => done(undefined, this.bytes.slice(offset, offset + length), undefined));
  }
  write(offset: number, data: WriteData, done: DiskDone) {
    const copy = gatherWrite(data).slice();
    this.pending.push(() => (this.bytes.set(copy, offset), done(undefined, undefined, undefined)));
  }
  flush(done: DiskDone) {
    this.pending.push(() => done(undefined, undefined, undefined));
  }
  poll(): number {
    this.polls++;
    const n = Math.min(this.ready, this.pending.length);
    for (const f of this.pending.splice(0, n)) f();
    this.ready -= n;
    return n;
  }
}

describe("virtio-blk device", () => {
  it("offers FLUSH, DISCARD and WRITE_ZEROES and reports the capacity", () => {
    const d = new Driver(new ManualDisk(8 * MiB));
    const f = d.dev.ioRead(REG.DEVICE_FEATURES, 4);
    expect(f & (1 << F_FLUSH)).not.toBe(0);
    expect(f & (1 << F_DISCARD)).not.toBe(0);
    expect(f & (1 << F_WRITE_ZEROES)).not.toBe(0);
    let cap = 0;
    for (let i = 7; i >= 0; i--) cap = cap * 256 + d.dev.ioRead(REG.CONFIG + i, 1);
    expect(cap).toBe((8 * MiB) / 512);
    expect(d.dev.ioRead(REG.CONFIG + 20, 4)).toBe(512); // blk_size
  });

  it("keeps many requests in flight and completes them in any order", async () => {
    const disk = new ManualDisk(8 * MiB);
    const d = new Driver(disk);
    const reqs = [];
    for (let k = 0; k < 16; k++) reqs.push(d.request(T_OUT, k * 8, [d.fill(4096, k + 1)]));
    await settle();
    expect(disk.queued.length).toBe(16); // all at the disk at once
    expect(d.dev.inFlight).toBe(16);
    expect(d.rec.summary("boot").maxInFlight).toBe(16);
    disk.release("w" + 15 * 4096);
    await settle();
    const first = d.reap();
    expect(first).toEqual([{ id: reqs[15]!.head, len: 1 }]);
    expect(d.ram.bytes[reqs[15]!.status]).toBe(S_OK);
    while (disk.queued.length) disk.release();
    await settle();
    expect(d.reap().length).toBe(15);
    for (let k = 0; k < 16; k++) expect(disk.bytes[k * 4096]).toBe(k + 1);
    const recs = d.rec.takeRecords() as VirtioRequestRecord[];
    expect(recs.map((r) => r.depth)).toContain(16);
    expect(recs.every((r) => r.op === "write" && r.status === S_OK)).toBe(true);
    expect(d.irqs).toBeGreaterThan(0);
  });

  it("reads into the guest's buffers, split over descriptors", async () => {
    const disk = new ManualDisk(8 * MiB);
    disk.auto = true;
    disk.bytes.fill(7, 1024, 2048);
    disk.bytes.fill(9, 2048, 3072);
    const d = new Driver(disk);
    const a = d.alloc(1024);
    const b = d.alloc(1024);
    const { head, status } = d.request(T_IN, 2, [
      { addr: a, len: 1024, write: true },
      { addr: b, len: 1024, write: true },
    ]);
    await settle();
    expect(d.reap()).toEqual([{ id: head, len: 2049 }]);
    expect(d.ram.bytes[status]).toBe(S_OK);
    expect(d.ram.bytes[a]).toBe(7);
    expect(d.ram.bytes[b + 1023]).toBe(9);
  });

  it("read-ahead: a sequential reader's reads are answered from units read ahead; a write issued before a read is seen by it", async () => {
    const disk = new ManualDisk(8 * MiB);
    disk.auto = true;
    for (let i = 0; i < 64; i++) disk.bytes.fill(i + 1, i * 16384, (i + 1) * 16384);
    const d = new Driver(disk, 0xffffffff, { readAhead: 64 * 1024 });
    const read = async (sector: number, len: number) => {
      const at = d.alloc(len);
      const { status } = d.request(T_IN, sector, [{ addr: at, len, write: true }]);
      await settle();
      expect(d.ram.bytes[status]).toBe(S_OK);
      return d.ram.bytes.slice(at, at + len);
    };
    await read(0, 16384);
    await read(32, 16384); // sequential: [32K, 96K) read ahead as 16 KiB units (an eighth of the window is 8 KiB)
    expect(disk.log.filter((l) => l.startsWith("start r"))).toEqual(["start r0", "start r16384", "start r32768", "start r49152", "start r65536", "start r81920"]);
    const before = disk.log.length;
    const third = await read(64, 16384);
    expect(third.every((b) => b === 3)).toBe(true);
    expect(disk.log.slice(before).filter((l) => l === "start r32768")).toEqual([]); // answered from the unit
    // A write into the window, then the read of that range: the device issues the write first, the read sees it.
    const w = d.request(T_OUT, 96, [d.fill(512, 0xee)]);
    await settle();
    expect(d.ram.bytes[w.status]).toBe(S_OK);
    const fourth = await read(96, 16384);
    expect(fourth[0]).toBe(0xee);
    expect(fourth[512]).toBe(4);
  });

  it("issues a flush only after every request submitted before it completed", async () => {
    const disk = new ManualDisk(8 * MiB);
    const d = new Driver(disk);
    d.request(T_OUT, 0, [d.fill(512, 1)]);
    d.request(T_OUT, 8, [d.fill(512, 2)]);
    const fl = d.request(T_FLUSH, 0);
    await settle();
    expect(disk.queued).toEqual(["w0", "w4096"]); // the flush waits
    disk.release("w4096");
    await settle();
    expect(disk.queued).toEqual(["w0"]);
    disk.release("w0");
    await settle();
    expect(disk.queued).toEqual(["flush"]);
    expect(d.reap().map((u) => u.id)).not.toContain(fl.head);
    disk.release("flush");
    await settle();
    expect(d.reap().map((u) => u.id)).toContain(fl.head);
    expect(d.ram.bytes[fl.status]).toBe(S_OK);
    const flush = (d.rec.takeRecords() as VirtioRequestRecord[]).find((r) => r.op === "flush")!;
    expect(flush.diskDone).toBeLessThanOrEqual(flush.completed);
    expect(disk.log.indexOf("done flush")).toBeGreaterThan(disk.log.indexOf("done w0"));
    expect(d.dev.guestFlushes).toBe(1);
  });

  it("write cache: completes a write at once with its data copied, a flush still waits for it, a later read sees it", async () => {
    const disk = new ManualDisk(8 * MiB);
    const d = new Driver(disk, 0xffffffff, { writeCache: 4096 });
    const buf = d.fill(512, 5);
    const w = d.request(T_OUT, 0, [buf]);
    await settle();
    expect(d.reap().map((u) => u.id)).toContain(w.head); // before the disk has it
    expect(d.ram.bytes[w.status]).toBe(S_OK);
    d.ram.bytes.fill(9, buf.addr, buf.addr + 512); // the driver reuses its buffer
    const big = d.request(T_OUT, 8, [d.fill(4096, 6)]); // over the cache's 4 KiB with the first: waited for
    const fl = d.request(T_FLUSH, 0);
    await settle();
    expect(disk.queued).toEqual(["w0", "w4096"]);
    expect(d.reap().map((u) => u.id)).not.toContain(big.head);
    disk.release("w0");
    disk.release("w4096");
    await settle();
    expect(disk.queued).toEqual(["flush"]);
    expect(d.dev.idle).toBe(false);
    disk.release("flush");
    await settle();
    expect(d.reap().map((u) => u.id)).toEqual(expect.arrayContaining([big.head, fl.head]));
    expect(disk.bytes.subarray(0, 512).every((b) => b === 5)).toBe(true); // the copy, not the reused buffer
    expect(d.dev.idle).toBe(true);
  });

  it("write cache: a cached write that fails fails every later flush with IOERR", async () => {
    const mem = new ManualDisk(8 * MiB);
    mem.auto = true;
    const failing: AsyncDisk = {
      size: mem.size,
      read: (o, l, done) => mem.read(o, l, done),
      write: (o, data, done) => (o === 4096 ? queueMicrotask(() => done(new Error("ENOSPC"), undefined, undefined)) : mem.write(o, data, done)),
      flush: (done) => mem.flush(done),
    };
    const d = new Driver(failing, 0xffffffff, { writeCache: 1 * MiB });
    const errors: string[] = [];
    d.dev.onError = (e, op) => errors.push(`${op}: ${e.message}`);
    const w = d.request(T_OUT, 8, [d.fill(512, 1)]);
    await settle();
    expect(d.ram.bytes[w.status]).toBe(S_OK); // told before it failed
    const fl = d.request(T_FLUSH, 0);
    await settle();
    await settle();
    expect(d.reap().map((u) => u.id)).toContain(fl.head);
    expect(d.ram.bytes[fl.status]).toBe(S_IOERR);
    expect(errors[0]).toBe("write: ENOSPC");
    expect(errors[1]).toMatch(/^flush: a write the guest saw complete \(512 bytes at offset 4096\) failed: ENOSPC$/);
  });

  it("maps DISCARD and WRITE_ZEROES to the disk's discard and write-zeroes", async () => {
    const disk = new ManualDisk(8 * MiB);
    disk.auto = true;
    disk.bytes.fill(5);
    const d = new Driver(disk);
    const seg = (sector: number, n: number, flags: number) => {
      const a = d.alloc(16);
      const dv = new DataView(d.ram.bytes.buffer, a, 16);
      dv.setUint32(0, sector, true);
      dv.setUint32(8, n, true);
      dv.setUint32(12, flags, true);
      return { addr: a, len: 16 };
    };
    const a = d.request(T_DISCARD, 0, [seg(128, 128, 0)]);
    const b = d.request(T_WRITE_ZEROES, 0, [seg(1024, 8, 1)]);
    await settle();
    expect(disk.log).toContain("start d65536+65536");
    expect(disk.log).toContain("start z524288+4096u");
    expect(d.ram.bytes[a.status]).toBe(S_OK);
    expect(d.ram.bytes[b.status]).toBe(S_OK);
    expect(disk.bytes[65536]).toBe(0);
    expect(disk.bytes[524288 + 4095]).toBe(0);
    expect(disk.bytes[524288 + 4096]).toBe(5);
  });

  it("answers GET_ID", async () => {
    const d = new Driver(new ManualDisk(MiB));
    const buf = d.alloc(20);
    const { status } = d.request(T_GET_ID, 0, [{ addr: buf, len: 20, write: true }]);
    expect(d.ram.bytes[status]).toBe(S_OK);
    expect(new TextDecoder().decode(d.ram.bytes.subarray(buf, buf + 6))).toBe("refcow");
  });

  describe("bad input from the guest", () => {
    it("unknown request type: UNSUPP", () => {
      const d = new Driver(new ManualDisk(MiB));
      const { head, status } = d.request(99, 0);
      expect(d.ram.bytes[status]).toBe(S_UNSUPP);
      expect(d.reap()).toEqual([{ id: head, len: 1 }]);
    });

    it("a request past the end of the disk: IOERR, the disk never sees it", async () => {
      const disk = new ManualDisk(MiB);
      const d = new Driver(disk);
      const w = d.request(T_OUT, MiB / 512 - 1, [d.fill(1024, 1)]);
      const r = d.request(T_IN, 2 ** 40, [{ addr: d.alloc(512), len: 512, write: true }]);
      expect(d.ram.bytes[w.status]).toBe(S_IOERR);
      expect(d.ram.bytes[r.status]).toBe(S_IOERR);
      await settle();
      expect(disk.log).toEqual([]);
    });

    it("a data descriptor past guest memory, or in the VGA hole: IOERR", async () => {
      const disk = new ManualDisk(MiB);
      const d = new Driver(disk);
      const a = d.request(T_OUT, 0, [{ addr: RAM - 256, len: 512 }]);
      const b = d.request(T_IN, 0, [{ addr: 2 ** 33, len: 512, write: true }]);
      const c = d.request(T_IN, 0, [{ addr: 0xa0000, len: 512, write: true }]);
      for (const x of [a, b, c]) expect(d.ram.bytes[x.status]).toBe(S_IOERR);
      await settle();
      expect(disk.log).toEqual([]);
      expect(d.reap().length).toBe(3);
    });

    it("a data length that is not a multiple of 512, a missing header, a read-only status: no exception", () => {
      const d = new Driver(new ManualDisk(MiB));
      const a = d.request(T_OUT, 0, [d.fill(100, 1)]);
      expect(d.ram.bytes[a.status]).toBe(S_IOERR);
      const st = d.alloc(1);
      d.ram.bytes[st] = 0xee;
      d.submit([{ addr: d.alloc(8), len: 8 }, { addr: st, len: 1, write: true }]);
      expect(d.ram.bytes[st]).toBe(S_IOERR);
      d.submit([{ addr: d.header(T_OUT, 0), len: 16 }, { addr: d.alloc(1), len: 1 }]); // no writable status
      expect(d.reap().at(-1)!.len).toBe(0);
    });

    it("a descriptor loop, a head past the table, a queue past memory: no exception", () => {
      const d = new Driver(new ManualDisk(MiB));
      const dv = new DataView(d.ram.bytes.buffer);
      // A chain whose last descriptor points back to its first.
      const hdr = d.header(T_IN, 0);
      const head = d.submit([{ addr: hdr, len: 16 }, { addr: d.alloc(512), len: 512, write: true }], false);
      const second = QUEUE_AT + 16 * ((head + 1) % QUEUE_SIZE);
      dv.setUint16(second + 12, DESC_F_NEXT | DESC_F_WRITE, true);
      dv.setUint16(second + 14, head, true);
      expect(() => d.kick()).not.toThrow();
      expect(d.reap()).toEqual([{ id: head, len: 1 }]); // IOERR in the last writable byte
      expect(d.ram.bytes[hdr + 16 + 511]).toBe(S_IOERR);
      // An available entry naming a descriptor past the table.
      dv.setUint16(d.availAddr + 4 + 2 * 1, 5000, true);
      dv.setUint16(d.availAddr + 2, 2, true);
      expect(() => d.kick()).not.toThrow();
      expect(d.reap()).toEqual([{ id: 5000, len: 0 }]);
      // A queue whose rings lie past guest memory.
      expect(() => d.dev.ioWrite(REG.QUEUE_PFN, 4, RAM / QUEUE_ALIGN)).not.toThrow();
      expect(d.dev.ioRead(REG.STATUS, 1) & STATUS_NEEDS_RESET).not.toBe(0);
      expect(() => d.kick()).not.toThrow();
    });

    it("a disk error: IOERR, reported through onError", async () => {
      const disk = new ManualDisk(MiB);
      disk.write = (_o, _d, done) => queueMicrotask(() => done(new Error("boom"), undefined, undefined));
      const d = new Driver(disk);
      const errors: string[] = [];
      d.dev.onError = (e) => errors.push(e.message);
      const w = d.request(T_OUT, 0, [d.fill(512, 1)]);
      await settle();
      expect(d.ram.bytes[w.status]).toBe(S_IOERR);
      expect(errors).toEqual(["boom"]);
    });
  });

  describe("completion batches and interrupt suppression", () => {
    const NO_EVENT_IDX = ~(1 << F_EVENT_IDX) >>> 0;

    it("publishes every completion one poll of the run loop reaps with one used.idx update and one interrupt", () => {
      const disk = new PollDisk(MiB);
      const d = new Driver(disk, NO_EVENT_IDX);
      let wakes = 0;
      d.dev.wakeEmulator = () => wakes++;
      const reqs = [];
      for (let k = 0; k < 8; k++) reqs.push(d.request(T_OUT, k * 8, [d.fill(4096, k + 1)]));
      expect(disk.waiting).toBe(8);
      disk.ready = 3;
      d.dev.pollFromEmulator(false);
      expect(d.reap().map((u) => u.id)).toEqual(reqs.slice(0, 3).map((r) => r.head));
      expect(d.irqs).toBe(1);
      disk.ready = 5;
      d.dev.pollFromEmulator(true);
      expect(d.reap().length).toBe(5);
      expect(d.irqs).toBe(2);
      expect(d.dev.interrupts).toBe(2);
      expect(wakes).toBe(0); // inside the run loop: the interrupt is taken on return, nothing to wake
      for (const r of reqs) expect(d.ram.bytes[r.status]).toBe(S_OK);
      expect(d.dev.idle).toBe(true);
    });

    it("completions reaped in the event loop: one publication per reap, and the emulator is woken", async () => {
      const disk = new ManualDisk(MiB);
      const d = new Driver(disk, NO_EVENT_IDX);
      let wakes = 0;
      d.dev.wakeEmulator = () => wakes++;
      for (let k = 0; k < 6; k++) d.request(T_OUT, k * 8, [d.fill(4096, 1)]);
      await settle();
      for (let k = 0; k < 4; k++) disk.release();
      expect(d.usedIdx).toBe(0); // nothing published before the reap is over
      expect(d.dev.idle).toBe(false);
      await settle();
      expect(d.reap().length).toBe(4);
      expect(d.irqs).toBe(1);
      expect(wakes).toBe(1);
      disk.release();
      disk.release();
      const idle = d.dev.whenIdle();
      await idle; // resolves once the last completions are published
      expect(d.usedIdx).toBe(6);
      expect(d.irqs).toBe(2);
      expect(wakes).toBe(2);
    });

    it("bad requests a notify completes at once are published with it, after the whole available ring", () => {
      const d = new Driver(new ManualDisk(MiB), NO_EVENT_IDX);
      const heads = [];
      for (let k = 0; k < 5; k++) heads.push(d.submit([{ addr: d.header(99, 0), len: 16 }, { addr: d.alloc(1), len: 1, write: true }], false));
      const before = d.dev.notifies;
      d.kick();
      expect(d.reap().map((u) => u.id)).toEqual(heads);
      expect(d.irqs).toBe(1);
      // One notify for the five: counted for the device and for its phase.
      expect(d.dev.notifies - before).toBe(1);
      d.rec.phase = "p";
      d.submit([{ addr: d.header(99, 0), len: 16 }, { addr: d.alloc(1), len: 1, write: true }]);
      d.kick();
      expect((d.rec.summary("p") as VirtioPhaseSummary).notifies).toBe(2);
    });

    it("NO_INTERRUPT suppresses the interrupt; NOTIFY_ON_EMPTY still signals when the device runs dry", () => {
      const disk = new PollDisk(MiB);
      const d = new Driver(disk, NO_EVENT_IDX & ~(1 << F_NOTIFY_ON_EMPTY));
      d.availFlags = AVAIL_F_NO_INTERRUPT;
      d.request(T_OUT, 0, [d.fill(512, 1)]);
      disk.ready = 1;
      d.dev.pollFromEmulator(false);
      expect(d.reap().length).toBe(1);
      expect(d.irqs).toBe(0);

      const disk2 = new PollDisk(MiB);
      const e = new Driver(disk2, NO_EVENT_IDX);
      e.availFlags = AVAIL_F_NO_INTERRUPT;
      e.request(T_OUT, 0, [e.fill(512, 1)]);
      e.request(T_OUT, 8, [e.fill(512, 1)]);
      disk2.ready = 1;
      e.dev.pollFromEmulator(false);
      expect(e.irqs).toBe(0); // one still in flight
      disk2.ready = 1;
      e.dev.pollFromEmulator(false);
      expect(e.irqs).toBe(1); // nothing left, available ring empty
      expect(e.reap().length).toBe(2);
    });

    it("EVENT_IDX: interrupts only once used.idx passes used_event; avail_event follows the available ring", () => {
      const disk = new PollDisk(MiB);
      const d = new Driver(disk, ~(1 << F_NOTIFY_ON_EMPTY) >>> 0);
      expect(d.dev.ioRead(REG.DRIVER_FEATURES, 4) & (1 << F_EVENT_IDX)).not.toBe(0);
      d.usedEvent = 3; // interrupt me when the 4th completion is published
      for (let k = 0; k < 6; k++) d.request(T_OUT, k * 8, [d.fill(512, 1)]);
      expect(d.availEvent).toBe(6); // the device has taken 6: notify for the 7th
      disk.ready = 2;
      d.dev.pollFromEmulator(false);
      expect(d.usedIdx).toBe(2);
      expect(d.irqs).toBe(0);
      disk.ready = 3;
      d.dev.pollFromEmulator(false); // used.idx 2 -> 5 passes 3
      expect(d.irqs).toBe(1);
      disk.ready = 1;
      d.dev.pollFromEmulator(false); // 5 -> 6: used_event is behind, no new interrupt
      expect(d.irqs).toBe(1);
      d.usedEvent = 6;
      d.request(T_OUT, 64, [d.fill(512, 1)]);
      expect(d.availEvent).toBe(7);
      disk.ready = 1;
      d.dev.pollFromEmulator(false); // 6 -> 7 passes 6
      expect(d.irqs).toBe(2);
      expect(d.reap().length).toBe(7);
    });
  });

  it("a reset drops requests in flight; state saves and restores the registers", async () => {
    const disk = new ManualDisk(MiB);
    const d = new Driver(disk);
    d.request(T_OUT, 0, [d.fill(512, 1)]);
    expect(() => d.dev.getState()).toThrow(/in flight/);
    d.dev.ioWrite(REG.STATUS, 1, 0);
    expect(d.dev.idle).toBe(true);
    disk.release();
    await settle();
    expect(d.reap()).toEqual([]); // the completion belongs to the queue that was reset
    const d2 = new Driver(new ManualDisk(MiB));
    const st = d2.dev.getState();
    const fresh = new VirtioBlk(new ManualDisk(MiB));
    fresh.memory = d2.ram;
    fresh.setState(st);
    expect(fresh.ioRead(REG.QUEUE_PFN, 4)).toBe(QUEUE_AT / QUEUE_ALIGN);
    expect(fresh.ioRead(REG.STATUS, 1)).toBe(7);
  });
});
