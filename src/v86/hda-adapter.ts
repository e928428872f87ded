/**
 * HdaAdapter: the custom disk object v86 gets as `hda`, over an `AsyncDisk`.
 *
 * What v86 (0.5.462) expects of it and how the adapter answers:
 *
 *  - v86 takes an object as a custom disk when it has `get`, `set` and `load`; it calls `load()` and waits
 *    for `onload`, reads `byteLength` (sector count = byteLength / 512), awaits `get_and_cache(0, 512, cb)`
 *    before init, then calls `get_from_cache(0, 512)` synchronously for the disk geometry. The adapter
 *    reads the first sector in `get_and_cache` and keeps it for `get_from_cache`.
 *  - `get(start, len, cb, {signal})`: PIO and DMA reads. The IDE stays busy until `cb(data)`; `data` must be
 *    exactly `len` bytes. A read whose signal is aborted (device reset) before it starts is dropped.
 *  - `set(start, data, cb)`: DMA writes complete to the guest in `cb`, and `data` is a fresh array v86
 *    gathered from the guest's PRDs for this request alone: the adapter keeps it as it is. PIO writes are
 *    acknowledged to the guest *before* `set` is called, with `data` a view of the drive's PIO buffer,
 *    which the IDE reuses at once: the adapter copies it synchronously. Which is which is told by
 *    `reusedBuffer` (set by GuestMachine from the drive object); without it every write is copied.
 *  - `flush(cb)` is not a v86 member: ATA FLUSH CACHE never reaches a v86 disk object. `installHonestFlush`
 *    (ide-flush.ts) patches the IDE drive so the guest's flushes come here and complete in `cb`.
 *  - `get_state()` / `set_state()` are called synchronously by `save_state` / `restore_state`. The adapter
 *    keeps no disk data in the VM state (the disk lives in the AsyncDisk): its state is `[byteLength]`.
 *    Quiesce first: stop the emulator, then `await whenIdle()`.
 *
 * Completion: every request completes through the disk's callback (src/disk/async-disk.ts). Over a disk
 * that can be polled (the worker-served image), `pollFromEmulator()` — which GuestMachine calls from inside
 * v86's run loop, each time v86 runs its hardware timers, which it does as soon as the guest halts — reaps
 * the completions synchronously, spinning (while the guest is halted only) for as long as the request in
 * flight is expected to take. The guest's interrupt is then raised before v86 even leaves its loop.
 *
 * Write cache (`writeCache` bytes, off by default): a DMA write completes to the guest as soon as it is
 * queued, while up to that many bytes of such writes are outstanding — what a drive with its volatile write
 * cache enabled does, and what v86 already does for every PIO write. It is for the writeback cache mode only:
 * the data is visible at once to every later read (the FIFO below), and durable at the guest's FLUSH CACHE,
 * which completes only after every write queued before it. A write the guest was told had completed and
 * that then fails is reported (`onError`, `failure`) and fails every later flush: the guest's fsync sees it.
 * The guest's IDE waits for none of these writes, so the engine's time overlaps the guest's own computing.
 * Nor does the queue: a cached write is handed to the disk and the next request follows it at once (the disk
 * serves requests in call order), so the engine's thread always has the next write in hand.
 *
 * Read-ahead (`readAhead` bytes, off by default): sequential reads are read ahead into memory
 * (read-ahead.ts), so that a guest reading front to back finds its next request answered at once. Writes
 * drop what they overlap when they are issued; a restored machine state (`set_state`,
 * `invalidateCallbacks`: loadvm applies the snapshot's disk first) drops it all.
 *
 * Ordering: requests are issued in submission order (a FIFO), each after the one before it has finished —
 * except after a cached write, which nobody waits for. Fire-and-forget PIO writes and a following read
 * therefore cannot overtake each other. A flush is issued only once every request before it has finished,
 * so it covers every write submitted before it. ATA has one command per drive (no NCQ), so this costs
 * nothing a real drive would do in parallel.
 *
 * Measurement: the adapter keeps none. Its `observer` (disk-device.ts), when set, is told of each request
 * at submission (v86's call) and at completion (the disk's callback, before the guest's), with the start
 * of its service, the queue depth it met, whether its data came through the PIO buffer, and the service
 * and ring times the disk's completion carries (the engine's time in its worker; submission to completion
 * at the ring client).
 */
import type { AsyncDisk, DiskTiming } from "../disk/async-disk.js";
import { lostWriteError, type DiskDevice, type DiskOp, type DiskRequestObserver } from "./disk-device.js";
import { ReadAhead } from "./read-ahead.js";

export interface HdaAdapterOptions {
  /** Told of every request (see disk-device.ts); settable later as `observer`. */
  observer?: DiskRequestObserver;
  /** Hand DMA writes' data to the disk without a copy (default true; see `reusedBuffer`). */
  dmaWithoutCopy?: boolean;
  /** Reap the disk's completions in `pollFromEmulator()` when the disk can be polled (default true). */
  pollCompletions?: boolean;
  /**
   * Bytes of DMA writes that may be outstanding after the guest was told they completed (the drive's write
   * cache, see the top; writeback cache mode only). Default 0: every write waits for the disk.
   */
  writeCache?: number;
  /** Bytes read ahead of a sequential reader (see the top and read-ahead.ts). Default 0: none. */
  readAhead?: number;
}

type ReadCb = (data: Uint8Array) => void;
type DoneCb = () => void;

interface Request {
  op: DiskOp;
  offset: number;
  length: number;
  data?: Uint8Array;
  pio?: boolean;
  cb: ReadCb | DoneCb;
  /** The observer's token for the request. */
  token: unknown;
  submitted: number;
  generation: number;
  signal?: AbortSignal;
  depth: number;
  /** A write the guest was told had completed when it was queued (the write cache), and when. */
  toldAt?: number;
  /** Its place in the queue (0, 1, ...). */
  seq: number;
}

const SECTOR = 512;

export class HdaAdapter implements DiskDevice {
  readonly byteLength: number;
  /** Set by v86 before load(). */
  onload?: (e: object) => void;
  onprogress?: (e: object) => void;

  observer: DiskRequestObserver | undefined;
  /** The first error an operation of the disk raised; the request's callback was not called. */
  failure: Error | undefined;
  /** Called on every failed disk operation. */
  onError?: (err: Error, op: DiskOp, offset: number, length: number) => void;
  /**
   * Tells whether `set()`'s data lies in a buffer v86 reuses (the drive's PIO buffer), which must be
   * copied at once. Unset: every write is treated so.
   */
  reusedBuffer?: (data: Uint8Array) => boolean;

  private readonly queue: Request[] = [];
  private head = 0;
  /** Requests issued to the disk and not finished: the awaited one (`current`) and cached writes. */
  private inFlight = 0;
  private pumping = false;
  /** The request the queue waits for (any but a cached write) and when its service started. */
  private current: Request | undefined;
  private currentStarted = 0;
  /** Reap completions with the disk's poll() from v86's run loop. */
  private readonly polls: boolean;
  private readonly copyDma: boolean;
  private readonly writeCache: number;
  /** Bytes of queued or running writes the guest already saw complete. */
  private cachedBytes = 0;
  /** A write the guest saw complete failed: every later flush fails with it. */
  private lostWrite: Error | undefined;
  private idleWaiters: Array<() => void> = [];
  /**
   * Requests queued so far, and how many of the first ones have all finished (completed, failed or dropped).
   * Cached writes may finish out of order on a disk that completes so; `finishedOutOfOrder` holds the
   * sequence numbers finished ahead of an earlier one.
   */
  private queuedCount = 0;
  private finishedCount = 0;
  private readonly finishedOutOfOrder = new Set<number>();
  private settleWaiters: Array<{ count: number; resolve: () => void }> = [];
  private generation = 0;
  private mbr: Uint8Array | undefined;
  private readonly reader: ReadAhead | undefined;

  constructor(
    readonly disk: AsyncDisk,
    options: HdaAdapterOptions = {},
  ) {
    if (disk.size % SECTOR !== 0) throw new RangeError(`disk size ${disk.size} is not a multiple of ${SECTOR}`);
    this.byteLength = disk.size;
    this.observer = options.observer;
    this.polls = (options.pollCompletions ?? true) && typeof disk.poll === "function";
    this.copyDma = !(options.dmaWithoutCopy ?? true);
    this.writeCache = Math.max(0, options.writeCache ?? 0);
    this.reader = (options.readAhead ?? 0) > 0 ? new ReadAhead(disk, options.readAhead) : undefined;
  }

  // ---- v86 interface --------------------------------------------------------------------------------

  load(): void {
    this.onload?.({});
  }

  get(start: number, len: number, cb: ReadCb, options?: { signal?: AbortSignal }): void {
    this.submit({ op: "read", offset: start, length: len, cb, signal: options?.signal });
  }

  set(start: number, data: Uint8Array, cb: DoneCb): void {
    // PIO: `data` is a view of the IDE's reusable buffer and the guest already saw completion: copy now.
    // DMA: v86 gathered the guest's buffers into an array of this request's own, awaited through `cb`.
    const pio = this.reusedBuffer ? this.reusedBuffer(data) : true;
    const cached = !pio && this.writeCache > 0 && this.cachedBytes + data.length <= this.writeCache;
    if (cached) this.cachedBytes += data.length;
    const toldAt = cached ? performance.now() : undefined;
    const req = this.submit({ op: "write", offset: start, length: data.length, data: pio || this.copyDma ? data.slice() : data, pio, cb, toldAt });
    if (!cached) return;
    if (!req) {
      this.cachedBytes -= data.length; // refused: the guest is not told
      return;
    }
    // Queued behind every earlier request, so every later one sees it: the guest may go on (see the top).
    cb();
  }

  get_and_cache(start: number, len: number, cb: ReadCb): void {
    this.get(start, len, (data) => {
      if (start === 0 && len === SECTOR) this.mbr = data.slice();
      cb(data);
    });
  }

  get_from_cache(start: number, len: number): Uint8Array | undefined {
    return start === 0 && len === SECTOR ? this.mbr : undefined;
  }

  get_buffer(cb: (buffer?: ArrayBuffer) => void): void {
    cb(undefined); // the disk is not one buffer; v86 only asks for it from its browser UI
  }

  get_state(): unknown[] {
    if (!this.idle) {
      this.fail(new Error("hda get_state() while disk requests are in flight: stop the emulator and await whenIdle() first"), "read", 0, 0);
    }
    return [this.byteLength];
  }

  set_state(state: unknown[]): void {
    // Completions of requests issued before the restore belong to a machine state that no longer exists.
    this.generation++;
    this.reader?.clear();
    if (!Array.isArray(state) || state[0] !== this.byteLength) {
      this.fail(new Error(`hda set_state: saved disk size ${String(Array.isArray(state) ? state[0] : state)} != ${this.byteLength}`), "read", 0, 0);
    }
  }

  // ---- refcow extensions ----------------------------------------------------------------------------

  /** Queue a flush behind every request submitted so far; `cb` runs when the disk's flush completed. */
  flush(cb: DoneCb): void {
    this.submit({ op: "flush", offset: 0, length: 0, cb });
  }

  /** Requests queued or running. */
  get pending(): number {
    return this.queue.length - this.head + this.inFlight;
  }

  get idle(): boolean {
    return this.inFlight === 0 && this.queue.length === this.head;
  }

  /** Resolves when no request is queued or running. */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Resolves when every request queued before the call has finished — with the write cache, the writes the
   * guest already saw complete among them — whatever the guest queues meanwhile (a running guest may never
   * leave the disk idle). A host-side flush after it covers everything the guest has written.
   */
  settled(): Promise<void> {
    const count = this.queuedCount;
    if (this.finishedCount >= count) return Promise.resolve();
    return new Promise((resolve) => this.settleWaiters.push({ count, resolve }));
  }

  private finished(req: Request): void {
    if (req.seq !== this.finishedCount) {
      this.finishedOutOfOrder.add(req.seq);
      return;
    }
    this.finishedCount++;
    while (this.finishedOutOfOrder.delete(this.finishedCount)) this.finishedCount++;
    if (this.settleWaiters.length === 0) return;
    const ready = this.settleWaiters.filter((w) => w.count <= this.finishedCount);
    this.settleWaiters = this.settleWaiters.filter((w) => w.count > this.finishedCount);
    for (const w of ready) w.resolve();
  }

  /**
   * Called by the emulator from inside its run loop (GuestMachine hooks v86's hardware-timer step): reaps the
   * completions the disk has, running their callbacks now. With `halted` (the guest waits in HLT), spins up
   * to the disk's spin budget, less what the request in flight has taken already, for its completion.
   */
  pollFromEmulator(halted: boolean): void {
    if (!this.polls || this.inFlight === 0) return;
    let spin = 0;
    if (halted && this.current) {
      // (A cached write is waited for by nobody: reap what is there, but spin for none.)
      const left = (this.disk.spinBudgetMs ?? 0) - (performance.now() - this.currentStarted);
      if (left > 0) spin = left;
    }
    this.disk.poll!(spin);
  }

  /** Drop the callbacks of every request submitted so far (they still run against the disk). */
  invalidateCallbacks(): void {
    this.generation++;
    this.reader?.clear();
  }

  // ---- queue ------------------------------------------------------------------------------------------

  private submit(r: Omit<Request, "token" | "submitted" | "generation" | "depth" | "seq">): Request | undefined {
    const req = r as Request;
    req.submitted = performance.now();
    req.generation = this.generation;
    if (req.op !== "flush" && !this.inRange(req.offset, req.length)) {
      // v86 checks bounds before calling us; this would be a bug in the caller.
      this.fail(new RangeError(`hda ${req.op} [${req.offset}, +${req.length}) is unaligned or outside the ${this.byteLength}-byte disk`), req.op, req.offset, req.length);
      return undefined;
    }
    this.queue.push(req);
    req.seq = this.queuedCount++;
    req.depth = this.pending;
    if (this.observer) {
      const pio = req.op === "write" && this.reusedBuffer ? req.pio : undefined;
      req.token = this.observer.submitted({ op: req.op, submitted: req.submitted, depth: req.depth, ...(pio !== undefined ? { pio } : {}) });
    }
    this.pump();
    return req;
  }

  /** Starts queued requests, each after the one before has finished (but a cached write); a completion calls it again. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.current && this.head < this.queue.length) {
        const req = this.queue[this.head]!;
        // A flush covers what completed before it was issued: it waits for the cached writes in flight.
        if (req.op === "flush" && this.inFlight > 0) break;
        this.queue[this.head++] = undefined as unknown as Request;
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue.splice(0, this.head);
          this.head = 0;
        }
        if (req.op === "read" && req.signal?.aborted) {
          this.finished(req); // the IDE was reset; nobody waits for it
          continue;
        }
        this.start(req);
      }
    } finally {
      this.pumping = false;
    }
    if (this.idle) {
      this.queue.length = 0;
      this.head = 0;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private start(req: Request): void {
    this.inFlight++;
    const started = performance.now();
    if (req.toldAt === undefined) {
      this.current = req;
      this.currentStarted = started;
    }
    const done = (err: Error | undefined, data: Uint8Array | undefined | void, timing: DiskTiming | undefined) => this.finish(req, started, err, data ?? undefined, timing);
    try {
      if (req.op === "read") {
        if (this.reader) this.reader.read(req.offset, req.length, done);
        else this.disk.read(req.offset, req.length, done);
      } else if (req.op === "write") {
        this.reader?.written(req.offset, req.length);
        this.disk.write(req.offset, req.data!, done, req.toldAt !== undefined);
      } else this.disk.flush(done);
    } catch (e) {
      done(e instanceof Error ? e : new Error(String(e)), undefined, undefined);
    }
  }

  private finish(req: Request, started: number, err: Error | undefined, result: Uint8Array | undefined, timing: DiskTiming | undefined): void {
    this.inFlight--;
    if (this.current === req) this.current = undefined;
    if (!err && req.op === "read" && result?.length !== req.length) err = new Error(`disk read returned ${result?.length ?? 0} bytes, ${req.length} asked`);
    if (req.toldAt !== undefined) {
      this.cachedBytes -= req.length;
      if (err) this.lostWrite ??= lostWriteError(req.offset, req.length, err);
    }
    if (!err && req.op === "flush" && this.lostWrite) err = this.lostWrite;
    if (err) {
      // The guest sees a hung command (and, after its timeout, resets the drive); the queue goes on.
      this.fail(err, req.op, req.offset, req.length);
    } else {
      if (this.observer) this.report(this.observer, req, started, timing);
      if (req.generation === this.generation && req.toldAt === undefined) {
        try {
          if (req.op === "read") (req.cb as ReadCb)(result!);
          else (req.cb as DoneCb)();
        } catch (e) {
          this.fail(e instanceof Error ? e : new Error(String(e)), req.op, req.offset, req.length);
        }
      }
    }
    this.finished(req);
    this.pump();
  }

  private report(observer: DiskRequestObserver, req: Request, started: number, timing: DiskTiming | undefined): void {
    const done = performance.now();
    observer.completed(req.token, {
      op: req.op,
      offset: req.offset,
      length: req.length,
      submitted: req.submitted,
      depth: req.depth,
      started,
      diskDone: done,
      completed: req.toldAt ?? done,
      ...(timing?.serviceMs !== undefined ? { serviceMs: timing.serviceMs } : {}),
      ...(timing?.ringMs !== undefined ? { ringMs: timing.ringMs } : {}),
      ...(req.pio && this.reusedBuffer ? { pio: true as const } : {}),
    });
  }

  private inRange(offset: number, length: number): boolean {
    return offset % SECTOR === 0 && length % SECTOR === 0 && offset >= 0 && offset + length <= this.byteLength;
  }

  private fail(err: Error, op: DiskOp, offset: number, length: number): void {
    this.failure ??= err;
    this.onError?.(err, op, offset, length);
  }
}
