/**
 * VirtioBlk: a virtio-blk disk for the v86 guest, with many requests in flight, over an AsyncDisk (the
 * worker-served qcow2 image). The device model lives here, free of v86: guest memory, the interrupt line
 * and the I/O registers are reached through small interfaces, so that the unit tests drive it with crafted
 * virtqueues and no emulator. `virtio-blk-v86.ts` plugs it into v86's PCI bus; its PCI side (identity,
 * registers, features, configuration space) is specified in virtio-blk-pci.ts, its queue in virtqueue.ts.
 *
 * ## Completions
 *
 * On each notify the device takes every available chain (virtqueue.ts). Completions may come in any order,
 * and are published in batches: every completion ready at one moment (all those one reap of the disk's
 * ring delivers, from inside v86's run loop or from the event loop, and those a notify completes at once)
 * is written to the used ring, then used.idx is advanced once and the interrupt raised once for the batch — unless the driver suppressed it: with EVENT_IDX
 * (VIRTIO_RING_F_EVENT_IDX, 29) negotiated, only when the new used.idx passes the driver's used_event
 * (vring_need_event, §2.7.10), else unless the driver set NO_INTERRUPT; with NOTIFY_ON_EMPTY (24) negotiated,
 * also whenever the device is left with no request and the available ring is empty. With EVENT_IDX the device
 * writes avail_event = last_avail after each pass over the available ring (the driver then notifies only for
 * buffers added after the ones taken). A batch published from the event loop while v86's CPU is halted
 * wakes the emulator (`wakeEmulator`), so the interrupt is taken at once rather than at v86's next timer.
 * Completions are reaped where v86's loop polls and in the event loop only: reaping the disk's ready ones
 * at every notify and ISR read as well was tried (rand4k at depth 16, lazy, 1024 writes) and cut the
 * device's latency but made batches smaller — 370-590 interrupts a phase instead of about 110 — with no
 * more guest IOPS: the emulated CPU, not the completion path, bounds them.
 *
 * ## Requests (virtio 1.2 §5.2.6)
 *
 * A request is one descriptor chain: the device-readable header { type u32, reserved u32, sector u64 },
 * then the data (device-readable for OUT, DISCARD, WRITE_ZEROES; device-writable for IN, GET_ID), then one
 * device-writable status byte: OK 0, IOERR 1, UNSUPP 2. Types: IN 0 (read), OUT 1 (write), FLUSH 4,
 * GET_ID 8 (20 bytes of serial), DISCARD 11 and WRITE_ZEROES 13 (data: segments of { sector u64,
 * num_sectors u32, flags u32 (UNMAP 1) }). The used length is the bytes the device wrote (read data and
 * status). The header and data may be split over descriptors in any way: the device reads them as one
 * stream, as if ANY_LAYOUT had been negotiated.
 *
 * ## Mapping to the engine
 *
 * IN → `read`, OUT → `write`, FLUSH → `flush` (the engine's flush: its completion is what makes the
 * request complete), DISCARD → `discard`, WRITE_ZEROES → `writeZeroes` (with `unmap` from the segment's
 * flag). Every request goes to the disk at once, without waiting for the others (the worker ring takes many
 * at a time and serves them in submission order); only a FLUSH waits, until every request submitted
 * before it has completed, and is then issued: so its completion covers every write that completed before
 * the driver submitted it (§5.2.6.1), whatever order the disk serves requests in.
 *
 * ## Write cache
 *
 * With `writeCache` bytes (off by default; on in writeback for `refcow boot`, the page and `openV86Disk`,
 * see v86-disk.ts), a write is copied out of guest memory and completed to the guest at once while the
 * copies still on their way to the disk stay within that many bytes — a volatile write cache, as the IDE
 * drive's (hda-adapter.ts). The disk serves requests in submission order, so every later request sees the
 * write; a FLUSH waits for the cached writes submitted before it as for any other request, so its completion
 * still covers every write the guest saw complete; a cached write that fails is reported (`failure`,
 * `onError`) and every later FLUSH completes with IOERR.
 *
 * ## Read-ahead
 *
 * With `readAhead` bytes (off by default; on for `refcow boot`, the page and `openV86Disk`), a sequential
 * reader's next pieces are read ahead (read-ahead.ts) and its requests answered from them. A write, discard
 * or write-zeroes drops what it overlaps when it is issued, so every request issued after it sees it; a
 * restored state drops it all.
 *
 * ## Bad input
 *
 * Nothing the guest puts in its queues throws into the emulator. A descriptor outside guest RAM (or in the
 * VGA hole) or a chain that loops or is longer than the queue: the request completes with IOERR when its
 * status byte can be written, else with used length 0. A request past the end of the disk, a data length
 * that is not a multiple of 512, a read-only data buffer where a writable one is needed: IOERR. An unknown
 * type: UNSUPP. A queue outside guest RAM: the device sets DEVICE_NEEDS_RESET (64) in its status and
 * ignores the queue. Disk errors: IOERR (the error is kept in `failure` and given to `onError`).
 */
import { gatherWrite, writeLength, type AsyncDisk, type DiskDone, type DiskTiming } from "../disk/async-disk.js";
import { lostWriteError, type DiskDevice, type DiskOp, type DiskRequestObserver } from "./disk-device.js";
import { configSpace, CONFIG_SIZE, F_EVENT_IDX, F_NOTIFY_ON_EMPTY, offeredFeatures, REG, STATUS_NEEDS_RESET } from "./virtio-blk-pci.js";
import { ReadAhead } from "./read-ahead.js";
import { QUEUE_SIZE, readPrefix, scatter, segmentBytes, viewSegments, Virtqueue, type Chain, type GuestMemory, type Segment } from "./virtqueue.js";

// ---- request types and status (virtio 1.2 §5.2.6; Linux include/uapi/linux/virtio_blk.h) ----------------

export const T_IN = 0;
export const T_OUT = 1;
export const T_FLUSH = 4;
export const T_GET_ID = 8;
export const T_DISCARD = 11;
export const T_WRITE_ZEROES = 13;

export const S_OK = 0;
export const S_IOERR = 1;
export const S_UNSUPP = 2;

const SECTOR = 512;
const GET_ID_BYTES = 20;
const SEGMENT_BYTES = 16;
const HEADER_BYTES = 16;
const WZ_F_UNMAP = 1;

/** The device's interrupt line (level-triggered INTx). */
export interface InterruptLine {
  raise(): void;
  lower(): void;
}

export interface VirtioBlkOptions {
  /** Told of every request, notification and used-ring publication (disk-device.ts); settable later as `observer`. */
  observer?: DiskRequestObserver;
  /** Largest data segment the driver may use, bytes (SIZE_MAX; default 1 MiB). */
  sizeMax?: number;
  /** Most data segments per request (SEG_MAX; default QUEUE_SIZE - 2). */
  segMax?: number;
  /** Logical block size (BLK_SIZE; default 512). */
  blockSize?: number;
  /** Discard granularity in bytes (default 4096; the engine frees whole clusters only). */
  discardGranularity?: number;
  /** GET_ID answer (up to 20 bytes; default "refcow"). */
  serial?: string;
  /** Reap the disk's completions in `pollFromEmulator()` when the disk can be polled (default true). */
  pollCompletions?: boolean;
  /** Offer VIRTIO_RING_F_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** Bytes of writes that may be on their way to the disk after the guest saw them complete (see the top). Default 0. */
  writeCache?: number;
  /** Bytes read ahead of a sequential reader (see the top and read-ahead.ts). Default 0: none. */
  readAhead?: number;
}

/** A write the guest saw complete, on its way to the disk. */
interface CachedWrite {
  readonly offset: number;
  readonly length: number;
}

interface Pending {
  head: number;
  type: number;
  op: DiskOp;
  offset: number;
  length: number;
  /** The observer's token for the request. */
  token: unknown;
  submitted: number;
  depth: number;
  generation: number;
  /** Where IN data goes (writable segments before the status byte). */
  dataOut: Segment[];
  /** The status byte, when there is a writable one. */
  statusAt: Segment | undefined;
  done: boolean;
}

export class VirtioBlk implements DiskDevice {
  readonly name = "virtio-blk";
  readonly byteLength: number;
  observer: DiskRequestObserver | undefined;
  failure: Error | undefined;
  onError?: (err: Error, op: DiskOp, offset: number, length: number) => void;
  /** Requests submitted to the disk and not yet completed to the guest. */
  inFlight = 0;
  /** Guest requests seen since creation, and guest flushes. */
  requests = 0;
  guestFlushes = 0;

  irq: InterruptLine | undefined;
  /**
   * Called after a batch of completions published outside v86's run loop raised the interrupt (the embedder
   * makes a halted emulator run now; see virtio-blk-v86.ts `wakeV86`).
   */
  wakeEmulator: (() => void) | undefined;
  /** Interrupts raised (batches that signalled the guest), and used-ring publications (batches). */
  interrupts = 0;
  batches = 0;
  /** Queue notifications from the driver. */
  notifies = 0;

  // registers
  private readonly deviceFeatures: number;
  private driverFeatures = 0;
  private queueSelect = 0;
  private status = 0;
  private isr = 0;
  private readonly config: Uint8Array;
  private readonly queue = new Virtqueue();

  private generation = 0;
  private readonly outstanding: Pending[] = [];
  /** Flushes waiting for the requests submitted before them. */
  private readonly waitingFlushes: Array<{ req: Pending; before: Set<Pending | CachedWrite> }> = [];
  private readonly writeCache: number;
  private readonly reader: ReadAhead | undefined;
  /** Cached writes on their way to the disk, and their bytes. */
  private readonly cached = new Set<CachedWrite>();
  private cachedBytes = 0;
  /** A cached write failed: every later FLUSH fails with it. */
  private lostWrite: Error | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Reap completions with the disk's poll() from v86's run loop. */
  private readonly polls: boolean;
  private readonly serial: Uint8Array;
  private oldestStarted = 0;
  /** Completions written to the used ring but not yet published (used.idx not advanced). */
  private unpublished = 0;
  /** >0 while a synchronous batch is open (a notify, a poll from the run loop). */
  private batchDepth = 0;
  private publishScheduled = false;
  private inRunLoop = false;

  constructor(
    readonly disk: AsyncDisk,
    options: VirtioBlkOptions = {},
  ) {
    if (disk.size % SECTOR !== 0) throw new RangeError(`disk size ${disk.size} is not a multiple of ${SECTOR}`);
    this.byteLength = disk.size;
    this.observer = options.observer;
    this.polls = (options.pollCompletions ?? true) && typeof disk.poll === "function";
    this.serial = new TextEncoder().encode((options.serial ?? "refcow").slice(0, GET_ID_BYTES));
    this.writeCache = Math.max(0, options.writeCache ?? 0);
    this.reader = (options.readAhead ?? 0) > 0 ? new ReadAhead(disk, options.readAhead) : undefined;
    const layout = {
      size: disk.size,
      hasDiscard: typeof disk.discard === "function",
      hasWriteZeroes: typeof disk.writeZeroes === "function",
      eventIdx: options.eventIdx,
      sizeMax: options.sizeMax,
      segMax: options.segMax ?? QUEUE_SIZE - 2,
      blockSize: options.blockSize,
      discardGranularity: options.discardGranularity,
    };
    this.deviceFeatures = offeredFeatures(layout);
    this.config = configSpace(layout);
  }

  /** Guest memory, where the queue and the requests' buffers are. */
  get memory(): GuestMemory | undefined {
    return this.queue.memory;
  }
  set memory(m: GuestMemory | undefined) {
    this.queue.memory = m;
  }

  // ---- registers (BAR0) -------------------------------------------------------------------------------

  /** A read of `size` (1, 2 or 4) bytes at BAR0 + offset. */
  ioRead(offset: number, size: number): number {
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | this.readByte(offset + i);
    return v >>> 0;
  }

  /** A write of `size` bytes at BAR0 + offset. */
  ioWrite(offset: number, size: number, value: number): void {
    try {
      this.writeRegister(offset, size, value >>> 0);
    } catch (e) {
      // Never into the emulator: a bug here fails the device, not v86.
      this.fail(e instanceof Error ? e : new Error(String(e)), "read", 0, 0);
      this.status |= STATUS_NEEDS_RESET;
    }
  }

  private readByte(off: number): number {
    if (off >= REG.CONFIG) return off - REG.CONFIG < CONFIG_SIZE ? this.config[off - REG.CONFIG]! : 0;
    if (off < 4) return (this.deviceFeatures >>> (8 * off)) & 0xff;
    if (off < 8) return (this.driverFeatures >>> (8 * (off - 4))) & 0xff;
    if (off < 12) return this.queueSelect === 0 ? (this.queue.pfn >>> (8 * (off - 8))) & 0xff : 0;
    if (off < 14) return this.queueSelect === 0 ? (QUEUE_SIZE >>> (8 * (off - 12))) & 0xff : 0;
    if (off < 16) return (this.queueSelect >>> (8 * (off - 14))) & 0xff;
    if (off < 18) return 0;
    if (off === REG.STATUS) return this.status;
    // ISR: read to clear (a 2- or 4-byte read at 18 covers it too, as on real hardware).
    const v = this.isr;
    this.isr = 0;
    this.irq?.lower();
    return v;
  }

  private writeRegister(off: number, size: number, value: number): void {
    switch (off) {
      case REG.DRIVER_FEATURES:
        this.driverFeatures = value & this.deviceFeatures;
        return;
      case REG.QUEUE_PFN:
        if (this.queueSelect !== 0) return;
        this.queue.pfn = value;
        this.queue.lastAvail = 0;
        if (value !== 0 && !this.queue.inRam()) this.status |= STATUS_NEEDS_RESET;
        return;
      case REG.QUEUE_SELECT:
        this.queueSelect = value & 0xffff;
        return;
      case REG.QUEUE_NOTIFY:
        // From the guest's OUT instruction: inside v86's run loop, the interrupt is taken on return.
        this.notifies++;
        this.observer?.notified?.();
        if ((value & 0xffff) === 0) this.inLoop(() => this.processQueue());
        return;
      case REG.STATUS:
        if (size !== 1) value &= 0xff;
        if (value === 0) this.reset();
        else this.status = value | (this.status & STATUS_NEEDS_RESET);
        return;
      default:
        return; // read-only registers and the configuration ignore writes
    }
  }

  /** Device reset (the driver wrote 0 to status): forget the queue; requests in flight complete nowhere. */
  reset(): void {
    this.generation++;
    this.driverFeatures = 0;
    this.queue.pfn = 0;
    this.queueSelect = 0;
    this.status = 0;
    this.queue.lastAvail = 0;
    this.isr = 0;
    this.unpublished = 0;
    this.irq?.lower();
    for (const p of this.outstanding) p.done = true;
    this.outstanding.length = 0;
    this.inFlight = 0;
    this.waitingFlushes.length = 0;
  }

  // ---- queue ------------------------------------------------------------------------------------------

  /** Takes every new chain from the available ring and submits it. */
  processQueue(): void {
    const q = this.queue;
    if (q.pfn === 0 || !this.memory || this.status & STATUS_NEEDS_RESET) return;
    if (!q.inRam()) {
      this.status |= STATUS_NEEDS_RESET;
      return;
    }
    const eventIdx = this.has(F_EVENT_IDX);
    for (;;) {
      let n = (q.availIdx() - q.lastAvail) & 0xffff;
      if (n > QUEUE_SIZE) {
        // The driver claims more new buffers than the ring holds: a broken queue.
        this.status |= STATUS_NEEDS_RESET;
        return;
      }
      if (n === 0) return;
      while (n-- > 0) {
        this.startRequest(q.readChain(q.nextHead()));
        if (q.pfn === 0 || this.status & STATUS_NEEDS_RESET) return;
      }
      if (!eventIdx) return;
      // avail_event: notify me for the next buffer after these; then look again (the driver may have added
      // one before it saw the new avail_event).
      q.writeAvailEvent();
    }
  }

  private has(feature: number): boolean {
    return ((this.driverFeatures >>> feature) & 1) === 1;
  }

  /** Runs `f` as one batch inside v86's run loop: completions it makes are published (and signalled) at its end. */
  private inLoop(f: () => void): void {
    const was = this.inRunLoop;
    this.inRunLoop = true;
    this.batchDepth++;
    try {
      f();
    } finally {
      this.batchDepth--;
      try {
        if (this.batchDepth === 0) this.publish();
      } finally {
        this.inRunLoop = was;
      }
    }
  }

  /**
   * Advances used.idx over the completions written since the last publication and raises the interrupt
   * once, unless the driver suppressed it (EVENT_IDX's used_event, else NO_INTERRUPT; NOTIFY_ON_EMPTY
   * overrides both when the device has nothing left).
   */
  private publish(): void {
    this.publishScheduled = false;
    const k = this.unpublished;
    if (k > 0) {
      this.unpublished = 0;
      const mem = this.memory;
      const q = this.queue;
      if (mem && q.pfn !== 0 && q.inRam()) {
        const { old, now } = q.advanceUsed(k);
        this.batches++;
        let signal = q.wantsInterrupt(old, now, this.has(F_EVENT_IDX));
        if (!signal && this.has(F_NOTIFY_ON_EMPTY) && this.outstanding.length === 0 && q.availIdx() === q.lastAvail) signal = true;
        this.observer?.published?.(signal);
        if (signal) {
          this.interrupts++;
          this.isr |= 1;
          this.irq?.raise();
          if (!this.inRunLoop) this.wakeEmulator?.();
        }
      }
    }
    this.wakeIdleWaiters();
  }

  private startRequest(chain: Chain): void {
    this.requests++;
    const mem = this.memory!;
    // The status byte is the last writable byte of the chain.
    const w = chain.writable;
    let statusAt: Segment | undefined;
    const dataOut: Segment[] = [];
    if (w.length > 0) {
      const last = w[w.length - 1]!;
      if (last.len >= 1) {
        statusAt = { addr: last.addr + last.len - 1, len: 1 };
        for (let k = 0; k < w.length - 1; k++) dataOut.push(w[k]!);
        if (last.len > 1) dataOut.push({ addr: last.addr, len: last.len - 1 });
      }
    }
    // The header is read in place; the data stays in guest memory, viewed, until the disk copies it.
    const head = readPrefix(mem, chain.readable, HEADER_BYTES);
    const hdr = head ? new DataView(head.buffer, head.byteOffset, HEADER_BYTES) : undefined;
    const type = hdr ? hdr.getUint32(0, true) : -1;
    const sector = hdr ? hdr.getUint32(8, true) + hdr.getUint32(12, true) * 2 ** 32 : 0;
    const payload = hdr ? viewSegments(mem, chain.readable, HEADER_BYTES) : [];
    const payloadBytes = writeLength(payload);
    const req: Pending = {
      head: chain.head,
      type,
      op: type === T_IN ? "read" : type === T_FLUSH ? "flush" : "write",
      offset: type === T_IN || type === T_OUT ? sector * SECTOR : 0,
      length: 0,
      token: undefined,
      submitted: performance.now(),
      depth: 0,
      generation: this.generation,
      dataOut,
      statusAt,
      done: false,
    };
    this.outstanding.push(req);
    this.inFlight++;
    req.depth = this.inFlight;
    if (this.observer) req.token = this.observer.submitted({ op: req.op, submitted: req.submitted, depth: req.depth });
    if (this.inFlight === 1) this.oldestStarted = req.submitted;

    if (chain.bad || !hdr || !statusAt) return this.complete(req, S_IOERR, 0);
    const dataBytes = segmentBytes(dataOut);
    const inDisk = (off: number, len: number) => Number.isSafeInteger(off) && off >= 0 && len >= 0 && off + len <= this.byteLength;

    switch (type) {
      case T_IN: {
        req.length = dataBytes;
        if (dataBytes % SECTOR !== 0 || !inDisk(req.offset, dataBytes) || payloadBytes !== 0) return this.complete(req, S_IOERR, 0);
        if (dataBytes === 0) return this.complete(req, S_OK, 0);
        return this.issueRead(req);
      }
      case T_OUT: {
        req.length = payloadBytes;
        if (payloadBytes % SECTOR !== 0 || !inDisk(req.offset, payloadBytes) || dataOut.length !== 0) return this.complete(req, S_IOERR, 0);
        if (payloadBytes === 0) return this.complete(req, S_OK, 0);
        this.reader?.written(req.offset, payloadBytes);
        if (this.writeCache > 0 && this.cachedBytes + payloadBytes <= this.writeCache) return this.writeCached(req, payload, payloadBytes);
        // The guest's buffers go to the disk as they are: the driver leaves them alone until completion.
        return this.issue(req, (done) => this.disk.write(req.offset, payload, done));
      }
      case T_FLUSH: {
        this.guestFlushes++;
        const before = new Set<Pending | CachedWrite>(this.outstanding.filter((p) => p !== req && !p.done));
        for (const w of this.cached) before.add(w);
        if (before.size === 0) return this.issueFlush(req);
        this.waitingFlushes.push({ req, before });
        return;
      }
      case T_GET_ID: {
        const id = new Uint8Array(GET_ID_BYTES);
        id.set(this.serial);
        const n = scatter(mem, dataOut, id);
        return this.complete(req, S_OK, n);
      }
      case T_DISCARD:
      case T_WRITE_ZEROES: {
        const fn = type === T_DISCARD ? this.disk.discard : this.disk.writeZeroes;
        if (typeof fn !== "function") return this.complete(req, S_UNSUPP, 0);
        if (payloadBytes === 0 || payloadBytes % SEGMENT_BYTES !== 0 || dataOut.length !== 0) return this.complete(req, S_IOERR, 0);
        const segs: Array<{ off: number; len: number; unmap: boolean }> = [];
        const ranges = gatherWrite(payload);
        const dv = new DataView(ranges.buffer, ranges.byteOffset, ranges.length);
        for (let o = 0; o < ranges.length; o += SEGMENT_BYTES) {
          const off = (dv.getUint32(o, true) + dv.getUint32(o + 4, true) * 2 ** 32) * SECTOR;
          const len = dv.getUint32(o + 8, true) * SECTOR;
          const flags = dv.getUint32(o + 12, true);
          if (!inDisk(off, len) || (type === T_DISCARD && flags !== 0) || flags & ~WZ_F_UNMAP) return this.complete(req, type === T_DISCARD && flags !== 0 ? S_UNSUPP : S_IOERR, 0);
          segs.push({ off, len, unmap: (flags & WZ_F_UNMAP) !== 0 });
        }
        req.offset = segs[0]!.off;
        req.length = segs.reduce((a, x) => a + x.len, 0);
        for (const x of segs) this.reader?.written(x.off, x.len);
        const disk = this.disk;
        return this.issue(req, (done) => {
          // Every segment at once; the request completes with the last, failed if one failed.
          let left = segs.length;
          let failed: Error | undefined;
          const one: DiskDone = (err) => {
            failed ??= err;
            if (--left === 0) done(failed, undefined, undefined);
          };
          for (const x of segs) {
            if (type === T_DISCARD) disk.discard!(x.off, x.len, one);
            else disk.writeZeroes!(x.off, x.len, x.unmap, one);
          }
        });
      }
      default:
        return this.complete(req, S_UNSUPP, 0);
    }
  }

  private issueRead(req: Pending): void {
    const onData: DiskDone<Uint8Array> = (err, data, timing) => {
      if (req.done || req.generation !== this.generation) return;
      if (err || !data || data.length !== req.length) {
        this.fail(err ?? new Error(`disk read returned ${data?.length ?? 0} bytes, ${req.length} asked`), "read", req.offset, req.length);
        return this.complete(req, S_IOERR, 0);
      }
      // The guest's buffers: checked at submission, written now (the driver must not touch them meanwhile).
      const n = scatter(this.memory!, req.dataOut, data);
      this.complete(req, S_OK, n, timing);
    };
    try {
      if (this.reader) this.reader.read(req.offset, req.length, onData);
      else this.disk.read(req.offset, req.length, onData);
    } catch (e) {
      onData(asError(e), undefined, undefined);
    }
  }

  private issueFlush(req: Pending): void {
    this.issue(req, (done) => this.disk.flush(done));
  }

  /**
   * A write through the write cache: handed to the disk as a background write — the disk copies the guest's
   * buffers before it returns, as the driver reuses them once the request completes — and the request
   * completed to the guest now.
   */
  private writeCached(req: Pending, payload: readonly Uint8Array[], bytes: number): void {
    const w: CachedWrite = { offset: req.offset, length: bytes };
    this.cached.add(w);
    this.cachedBytes += bytes;
    const onDone: DiskDone = (err) => {
      this.cached.delete(w);
      this.cachedBytes -= bytes;
      if (err) {
        this.lostWrite ??= lostWriteError(w.offset, bytes, err);
        this.fail(err, "write", w.offset, bytes);
      }
      this.settledForFlushes(w);
      this.wakeIdleWaiters();
    };
    try {
      this.disk.write(req.offset, payload, onDone, true);
    } catch (e) {
      onDone(asError(e), undefined, undefined);
    }
    this.complete(req, S_OK, 0);
  }

  /** Writes, flushes, discards and write-zeroes: `run` starts the disk operation. */
  private issue(req: Pending, run: (done: DiskDone) => void): void {
    const onDone: DiskDone = (err, _v, timing) => {
      if (req.done || req.generation !== this.generation) return;
      if (!err && req.type === T_FLUSH && this.lostWrite) err = this.lostWrite;
      if (err) this.fail(err, req.op, req.offset, req.length);
      this.complete(req, err ? S_IOERR : S_OK, 0, timing);
    };
    try {
      run(onDone);
    } catch (e) {
      onDone(asError(e), undefined, undefined);
    }
  }

  /** Writes the status byte and the used element, raises the interrupt; then starts flushes now unblocked. */
  private complete(req: Pending, status: number, written: number, timing?: DiskTiming): void {
    if (req.done) return;
    req.done = true;
    const observer = this.observer;
    const diskDone = observer ? performance.now() : 0;
    const mem = this.memory;
    let len = written;
    const q = this.queue;
    if (req.generation === this.generation && mem && q.pfn !== 0 && q.inRam()) {
      if (req.statusAt) {
        mem.write(req.statusAt.addr, new Uint8Array([status]));
        len += 1;
      }
      // The element goes in now; used.idx moves (and the interrupt is raised) when the batch is published.
      q.writeUsed((q.usedIdx() + this.unpublished) & 0xffff, req.head, len);
      this.unpublished++;
      if (this.batchDepth === 0 && !this.publishScheduled) {
        // Outside a batch (a completion reaped in the event loop): publish after every completion that the
        // same reap delivers.
        this.publishScheduled = true;
        queueMicrotask(() => this.publish());
      }
    }
    const completed = observer ? performance.now() : 0;
    const i = this.outstanding.indexOf(req);
    if (i >= 0) this.outstanding.splice(i, 1);
    if (req.generation === this.generation) this.inFlight--;
    if (this.outstanding.length > 0) this.oldestStarted = this.outstanding[0]!.submitted;
    if (observer) this.report(observer, req, status, diskDone, completed, timing);
    this.settledForFlushes(req);
    this.wakeIdleWaiters();
  }

  /** Starts the flushes that waited for `done` (a request or a cached write) and nothing else. */
  private settledForFlushes(done: Pending | CachedWrite): void {
    for (let k = 0; k < this.waitingFlushes.length; ) {
      const w = this.waitingFlushes[k]!;
      w.before.delete(done);
      if (w.before.size === 0) {
        this.waitingFlushes.splice(k, 1);
        if (!w.req.done && w.req.generation === this.generation) this.issueFlush(w.req);
      } else k++;
    }
  }

  private wakeIdleWaiters(): void {
    if (!this.idle) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of waiters) f();
  }

  private report(observer: DiskRequestObserver, req: Pending, status: number, diskDone: number, completed: number, timing: DiskTiming | undefined): void {
    // A discard or write-zeroes may be several disk requests: no one service time.
    const serviceMs = req.type === T_IN || req.type === T_OUT || req.type === T_FLUSH ? timing?.serviceMs : undefined;
    observer.completed(req.token, {
      op: req.op,
      offset: req.offset,
      length: req.length,
      submitted: req.submitted,
      depth: req.depth,
      started: req.submitted,
      diskDone,
      completed,
      ...(serviceMs !== undefined ? { serviceMs } : {}),
      virtio: { type: req.type, status },
    });
  }

  // ---- the embedder's interface (disk-device.ts) ---------------------------------------------------

  get pending(): number {
    return this.outstanding.length;
  }

  get idle(): boolean {
    return this.outstanding.length === 0 && this.unpublished === 0 && this.cached.size === 0;
  }

  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** As HdaAdapter.pollFromEmulator: reap the disk's completions from inside v86's run loop. */
  pollFromEmulator(halted: boolean): void {
    if (!this.polls || this.outstanding.length === 0) return;
    let spin = 0;
    if (halted) {
      const left = (this.disk.spinBudgetMs ?? 0) - (performance.now() - this.oldestStarted);
      if (left > 0) spin = left;
    }
    // Everything this poll reaps is one batch: one used.idx update, at most one interrupt.
    this.inLoop(() => this.disk.poll!(spin));
  }

  /** Requests submitted so far complete nowhere (a state restore replaced the machine they belong to). */
  invalidateCallbacks(): void {
    this.generation++;
    this.reader?.clear();
    for (const p of this.outstanding) p.done = true;
    this.outstanding.length = 0;
    this.waitingFlushes.length = 0;
    this.inFlight = 0;
    this.unpublished = 0;
  }

  /** The registers, for a saved machine state. Only when idle (stop the guest and await whenIdle()). */
  getState(): VirtioBlkState {
    if (!this.idle) throw new Error("virtio-blk state with requests in flight: stop the guest and await whenIdle() first");
    return { version: 1, size: this.byteLength, driverFeatures: this.driverFeatures, queuePfn: this.queue.pfn, queueSelect: this.queueSelect, status: this.status, isr: this.isr, lastAvail: this.queue.lastAvail };
  }

  setState(s: VirtioBlkState): void {
    if (s.version !== 1 || s.size !== this.byteLength) throw new Error(`virtio-blk state: version ${s.version}, size ${s.size} (this disk: ${this.byteLength})`);
    this.invalidateCallbacks();
    this.driverFeatures = s.driverFeatures & this.deviceFeatures;
    this.queue.pfn = s.queuePfn;
    this.queueSelect = s.queueSelect;
    this.status = s.status;
    this.isr = s.isr;
    this.queue.lastAvail = s.lastAvail;
    if (this.isr) this.irq?.raise();
  }

  private fail(err: Error, op: DiskOp, offset: number, length: number): void {
    this.failure ??= err;
    this.onError?.(err, op, offset, length);
  }
}

export interface VirtioBlkState {
  version: 1;
  size: number;
  driverFeatures: number;
  queuePfn: number;
  queueSelect: number;
  status: number;
  isr: number;
  lastAvail: number;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
