/**
 * DiskClient: the caller's side of the request ring (see ring.ts). Asynchronous and never blocking: it
 * spins for a bounded time after submitting, then waits with `Atomics.waitAsync`. Platform-neutral (no node:
 * imports); the host that started the server (the piscina pool in Node, a Web Worker in the browser) tells
 * the client when the server thread has ended or died.
 *
 * Any number of async callers may use one client at once. Requests are served in call order (per-image
 * FIFO); when all slots are in use, requests wait in a client-side queue (backpressure). Data passed to
 * write() is copied before write() returns, so the caller may reuse its buffer at once.
 *
 * Callback form (`callbacks`): the same requests with a completion callback that runs synchronously at the
 * moment the client reaps the completion — inside `poll()` when the caller polls — instead of a promise
 * settled a microtask later. An emulator that polls from inside its own run loop completes a guest request
 * without going back to its event loop.
 *
 * Spinning: by default a bounded adaptive spin of `spinUs` (SpinPolicy, ring.ts). With `sizedSpinCapUs`, the
 * spin is sized from the service times observed (SizedSpin): long enough for most requests to complete
 * inside it, none when they mostly take longer than the cap, and never while nothing is in flight.
 */
import { ClosedError, ImageFormatError, RequestError, SnapshotError, UnsupportedFeatureError } from "../engine/errors.js";
import type { SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";
import { IoError } from "../io/block-file.js";
import {
  C,
  Flag,
  MAX_RANGE_CHUNK,
  Op,
  OP_NAMES,
  readText,
  RingView,
  ServerState,
  SF,
  S,
  SizedSpin,
  SLOT_F64,
  SLOT_I32,
  SlotState,
  SpinPolicy,
  splitRange,
  Status,
} from "./ring.js";

/** One extent of DiskClient.blockStatus. */
export interface BlockExtent {
  length: number;
  /** Reads as zeroes. */
  zero: boolean;
  /** Holds data (allocated, not a zero cluster), in this image or its backing chain. */
  data: boolean;
}

/** One extent of DiskClient.allocationDepth: 0 unallocated, 1 the image itself, 2 its backing file... */
export interface DepthExtent {
  length: number;
  depth: number;
}

/** One extent of DiskClient.dirtyExtents. */
export interface DirtyExtent {
  length: number;
  dirty: boolean;
}

/** When a request went through each stage, in ms on this thread's `performance.now()` scale. */
export interface RequestTiming {
  /** The caller called the method. */
  called: number;
  /** The (first) ring slot was published to the server (later than `called` when the ring was full). */
  submitted: number;
  /** The server began the (first) request. */
  workerStart: number;
  /** The server finished the (last) request. */
  workerEnd: number;
  /** The result was handed to the caller. */
  completed: number;
  /** Ring requests used (more than 1 when the request was split or staged). */
  chunks: number;
}

export interface Timed<T> {
  value: T;
  timing: RequestTiming;
}

/** The server thread serving an image died (terminated, crashed) or stopped on its own. */
export class WorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorkerError";
  }
}

export interface DiskClientOptions {
  /**
   * Maximum bounded spin waiting for a completion before falling back to Atomics.waitAsync, in µs (adaptive,
   * see SpinPolicy). Default 50.
   */
  spinUs?: number;
  /** Adapt the spin to contention (default true); false spins the full `spinUs` every time. */
  adaptiveSpin?: boolean;
  /** Cap on the spinning done by one drive of the ring, in µs. Default 4 × spinUs. */
  spinTotalUs?: number;
  /** Timeout of each Atomics.waitAsync, after which the server state is checked. Default 1000 ms. */
  waitTimeoutMs?: number;
  /** Size the spin from the observed service times, spinning at most this many µs (see SizedSpin). */
  sizedSpinCapUs?: number;
  /**
   * Spin only while at most this many ring slots are in flight (default: whatever the number). A server with
   * other work on its event loop (the NBD export: more requests waiting on the socket) spins for a lone
   * request, whose client is waiting for nothing else, and returns to its loop when several are queued.
   */
  spinMaxInFlight?: number;
  /**
   * The clock spins are timed by, ms (default `performance.now`; it must share that clock's origin, as the
   * spin's adaptation compares it with the ring's timestamps). Tests step one to bound a spin exactly.
   */
  spinClock?: () => number;
}

/** Completion callback of the callback form: `err`, or the value and the request's timing. */
export type Completion<T> = (err: Error | undefined, value: T | undefined, timing: RequestTiming | undefined) => void;

/** The callback form of the data requests (see the module comment). */
export interface CallbackApi {
  read(offset: number, length: number, done: Completion<Uint8Array>): void;
  write(offset: number, data: Uint8Array, done: Completion<void>): void;
  flush(done: Completion<void>): void;
}

export const DEFAULT_CLIENT_SPIN_US = 50;

type WaitAsync = (
  ta: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) => { async: false; value: "not-equal" | "timed-out" } | { async: true; value: Promise<"ok" | "timed-out"> };
const waitAsync: WaitAsync | undefined = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;

/** One ring request. */
export interface Chunk {
  op: number;
  offset: number;
  length: number;
  flags: number;
  token: number;
  /** Bytes copied into the slot's data share at submission. */
  input?: Uint8Array;
  /** `input` is a view on the caller's buffer (valid only until the call returns). */
  borrowed?: boolean;
  owner: Operation;
  /** Called synchronously at completion with the slot's output (valid only during the call). */
  done(status: number, out: Uint8Array, resultTotal: number, resultToken: number): void;
}

/** One caller request: one or more chunks, one promise (or one completion callback). */
export class Operation {
  pending = 0;
  chunks = 0;
  error: Error | undefined;
  submitted = Infinity;
  workerStart = Infinity;
  workerEnd = 0;
  settled = false;
  finish: () => unknown = () => undefined;
  constructor(
    readonly name: string,
    readonly called: number,
    readonly resolve: (v: Timed<unknown>) => void,
    readonly reject: (e: Error) => void,
  ) {}
}

const encoder = new TextEncoder();

export class DiskClient {
  /** Image path or name, for messages. */
  readonly name: string;
  readonly readOnly: boolean;
  /** Identifier of the serving thread (Node worker threadId). */
  readonly serverId: number;
  /** Per-request timing hook, called for every completed request. */
  onTiming: ((op: string, timing: RequestTiming) => void) | undefined;
  /** Same methods, resolving with `{ value, timing }`. */
  readonly timed: TimedApi;
  /** Read, write and flush with synchronous completion callbacks (see the module comment). */
  readonly callbacks: CallbackApi;

  private readonly ring: RingView;
  private readonly ctl: Int32Array;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly slots: (Chunk | undefined)[];
  private readonly queue: Chunk[] = [];
  private queueHead = 0;
  private sqTail = 0;
  private cqHead = 0;
  private kickScheduled = false;
  private asyncWaiting = false;
  private readonly spin: SpinPolicy;
  private readonly sized: SizedSpin | undefined;
  private readonly spinMaxInFlight: number;
  private readonly spinTotalMs: number;
  private readonly spinClock: () => number;
  private readonly waitMs: number;
  private outstanding = 0;
  private idleWaiters: Array<() => void> = [];
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private dead: Error | undefined;
  private ended = false;
  private endWaiters: Array<() => void> = [];
  private nextToken = 1;
  private sizeNow: number;

  /**
   * Wraps a ring whose server is READY (see `waitForServer`). The host must call `serverEnded()` when the
   * server thread ends and `fail()` when it dies.
   */
  constructor(ring: SharedArrayBuffer, name: string, opts: DiskClientOptions = {}) {
    this.ring = new RingView(ring);
    this.ctl = this.ring.ctl;
    this.i32 = this.ring.slotI32;
    this.f64 = this.ring.slotF64;
    this.slots = new Array(this.ring.nslots).fill(undefined);
    this.name = name;
    this.readOnly = this.ctl[C.READ_ONLY] === 1;
    this.serverId = this.ctl[C.SERVER_ID];
    this.sizeNow = this.ring.ctlF64[C.F64_IMAGE_SIZE];
    this.sqTail = Atomics.load(this.ctl, C.SQ_TAIL);
    this.cqHead = this.sqTail;
    const spinUs = opts.sizedSpinCapUs || (opts.spinUs ?? DEFAULT_CLIENT_SPIN_US);
    this.spin = new SpinPolicy(spinUs / 1000, opts.adaptiveSpin ?? true);
    this.sized = opts.sizedSpinCapUs ? new SizedSpin(opts.sizedSpinCapUs / 1000) : undefined;
    this.spinMaxInFlight = opts.spinMaxInFlight ?? Infinity;
    this.spinTotalMs = (opts.spinTotalUs ?? spinUs * 4) / 1000;
    this.spinClock = opts.spinClock ?? (() => performance.now());
    this.waitMs = opts.waitTimeoutMs ?? 1000;
    if (!waitAsync) throw new Error("Atomics.waitAsync is not available on this platform");
    this.timed = makeTimedApi(this);
    this.callbacks = makeCallbackApi(this);
  }

  /** ms this client has spun waiting for completions (sized spins only; 0 otherwise). */
  get spunMs(): number {
    return this.sized?.spentMs ?? 0;
  }

  /** The spin a wait for the next completion would get now, ms (sized spins; the fixed budget otherwise). */
  get spinBudgetMs(): number {
    return this.sized ? Math.min(this.sized.budget(), this.spin.budget) : this.spin.budget;
  }

  /** The sized spin's budget less what the oldest request in flight has been waiting already, ms. */
  private sizedLeft(): number {
    const b = this.sized!.budget();
    if (b <= 0 || this.sqTail === this.cqHead) return 0;
    const waited = performance.now() - this.f64[(this.cqHead & this.ring.mask) * SLOT_F64 + SF.T_SUBMIT];
    return Math.max(0, b - waited);
  }

  /**
   * Reaps the completions published so far, running their callbacks (and settling their promises) now; with
   * `spinMs` > 0 and requests in flight but none complete, spins up to `spinMs` for one first. Returns the
   * completions reaped. Never blocks longer than `spinMs`.
   */
  poll(spinMs = 0): number {
    if (this.dead) return 0;
    let n = this.reap();
    if (n > 0 || spinMs <= 0 || this.sqTail === this.cqHead) return n;
    const ctl = this.ctl;
    const now = this.spinClock;
    const from = now();
    const until = from + spinMs;
    let got = false;
    while (!(got = Atomics.load(ctl, C.CQ_TAIL) !== (this.cqHead | 0)) && now() < until) {
      // spin
    }
    const end = now();
    this.sized?.spun(end - from);
    // The same contention rule as drive()'s spin: a miss followed at once by the completion halves the budget.
    if (got) this.spin.hit();
    else this.spin.miss(end);
    if (got) n = this.reap();
    return n;
  }

  /** Virtual size of the image in bytes (may change when a snapshot is applied). */
  get size(): number {
    return this.sizeNow;
  }

  /** True once close() was called or the server died. */
  get closed(): boolean {
    return this.closing || this.dead !== undefined;
  }

  /** Requests queued or in flight. */
  get pendingRequests(): number {
    return this.outstanding;
  }

  // ------------------------------------------------------------------------------------------------ public API

  async read(offset: number, length: number): Promise<Uint8Array> {
    return (await this.readT(offset, length)).value;
  }
  /** Reads into `buf` (its whole length) from `offset`. */
  async readInto(buf: Uint8Array, offset: number): Promise<void> {
    await this.readIntoT(buf, offset);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.writeT(offset, data);
  }
  async writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<void> {
    await this.writeZeroesT(offset, length, opts);
  }
  async discard(offset: number, length: number): Promise<void> {
    await this.discardT(offset, length);
  }
  async flush(): Promise<void> {
    await this.simpleT(Op.FLUSH);
  }
  /** An empty request: measures the ring round trip. */
  async nop(): Promise<void> {
    await this.simpleT(Op.NOP);
  }
  async snapshotCreate(name: string, opts: SnapshotCreateOptions = {}): Promise<SnapshotInfo> {
    return (await this.snapshotCreateT(name, opts)).value;
  }
  async snapshotApply(idOrName: string): Promise<void> {
    await this.snapshotApplyT(idOrName);
  }
  async snapshotDelete(idOrName: string): Promise<void> {
    await this.jsonT(Op.SNAPSHOT_DELETE, { id: idOrName }, false);
  }
  async snapshotList(): Promise<SnapshotInfo[]> {
    return (await this.jsonT(Op.SNAPSHOT_LIST, undefined, true)).value as SnapshotInfo[];
  }
  async readVmState(idOrName: string): Promise<Uint8Array> {
    return (await this.blobT(Op.READ_VMSTATE, { id: idOrName })).value;
  }
  /** Reads the active layer's VM-state area (qemu-io's read -b); `pos` is relative to its start. */
  async readVmStateArea(pos: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(checkLen(length));
    await this.readIntoT(buf, pos, Flag.VMSTATE);
    return buf;
  }
  /** Writes the active layer's VM-state area (qemu-io's write -b). */
  async writeVmStateArea(pos: number, data: Uint8Array): Promise<void> {
    await this.writeT(pos, data, Flag.VMSTATE);
  }
  /** Changes the virtual size (qemu-io's truncate); `size` follows. */
  async resize(size: number): Promise<void> {
    await this.start(Op.RESIZE, "resize", (op) => [
      this.resultChunk(op, Op.RESIZE, this.jsonInput({ size }), (bytes) => {
        const r = parseJson(bytes) as { size?: number } | null;
        if (r && typeof r.size === "number") this.sizeNow = r.size;
        return undefined;
      }),
    ]);
  }
  /** Which parts of [offset, offset + length) the image allocates itself (merged runs, up to the disk's end). */
  async allocation(offset: number, length: number): Promise<{ allocated: boolean; length: number }[]> {
    return (await this.jsonT(Op.ALLOCATION, { offset, length }, true)).value as { allocated: boolean; length: number }[];
  }
  /**
   * Allocation status from `offset`: merged extents (whether each reads as zeroes, whether it holds data)
   * covering at most `length` bytes and at most `maxExtents` extents; at least one unless `length` is 0.
   */
  async blockStatus(offset: number, length: number, maxExtents = 1024): Promise<BlockExtent[]> {
    const raw = (await this.jsonT(Op.BLOCK_STATUS, { offset, length, maxExtents }, true)).value as [number, number, number][];
    return raw.map(([n, zero, data]) => ({ length: n, zero: zero === 1, data: data === 1 }));
  }

  /**
   * Which layer of the backing chain each part of the range comes from (qemu:allocation-depth): merged
   * extents from `offset`, covering at most `length` bytes and at most `maxExtents` extents.
   */
  async allocationDepth(offset: number, length: number, maxExtents = 1024): Promise<DepthExtent[]> {
    const raw = (await this.jsonT(Op.ALLOCATION_DEPTH, { offset, length, maxExtents }, true)).value as [number, number][];
    return raw.map(([n, depth]) => ({ length: n, depth }));
  }
  /**
   * The persistent dirty bitmap `bitmap` over the range (qemu:dirty-bitmap:NAME): merged extents from
   * `offset`, covering at most `length` bytes and at most `maxExtents` extents.
   */
  async dirtyExtents(bitmap: string, offset: number, length: number, maxExtents = 1024): Promise<DirtyExtent[]> {
    const raw = (await this.jsonT(Op.DIRTY_EXTENTS, { bitmap, offset, length, maxExtents }, true)).value as [number, number][];
    return raw.map(([n, dirty]) => ({ length: n, dirty: dirty === 1 }));
  }

  /** The engine's cost records (`stats()`), or null when the engine has none. */
  async stats(): Promise<unknown> {
    return (await this.jsonT(Op.STATS, undefined, true)).value;
  }

  /**
   * Waits for every request already made, then flushes and closes the image and waits for the server to
   * end. Requests made after close() reject with a ClosedError. Idempotent.
   */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.closePromise = (async () => {
      await this.whenIdle();
      if (this.dead) throw this.dead;
      await this.start(Op.CLOSE, "close", (op) => [this.chunk(op, Op.CLOSE)], true);
      await this.whenEnded();
    })();
    return this.closePromise;
  }

  // ------------------------------------------------------------------------------------------- host interface

  /** The host reports that the server thread has ended (its serve task returned). */
  serverEnded(): void {
    if (this.ended) return;
    this.ended = true;
    // Completions published before the server ended are still in the ring.
    this.reap();
    if (!this.closing || this.outstanding > 0) {
      this.fail(new WorkerError(`the worker serving ${this.name} stopped unexpectedly`));
    }
    for (const w of this.endWaiters.splice(0)) w();
  }

  /**
   * The host reports that the server died: every queued, in-flight and later request rejects with `err`.
   * Idempotent; the first error wins.
   */
  fail(err: Error): void {
    if (!this.dead) {
      this.dead = err;
      const victims: Operation[] = [];
      for (let i = this.queueHead; i < this.queue.length; i++) victims.push(this.queue[i].owner);
      this.queue.length = 0;
      this.queueHead = 0;
      for (let i = 0; i < this.slots.length; i++) {
        const c = this.slots[i];
        if (c) victims.push(c.owner);
        this.slots[i] = undefined;
      }
      for (const op of victims) this.settle(op, err);
      // Release our own pending waitAsync, if any.
      Atomics.notify(this.ctl, C.CQ_TAIL);
    }
    this.ended = true;
    for (const w of this.endWaiters.splice(0)) w();
  }

  // --------------------------------------------------------------------------------------- request builders

  /** @internal */ readT(offset: number, length: number): Promise<Timed<Uint8Array>> {
    let buf: Uint8Array;
    try {
      buf = new Uint8Array(checkLen(length));
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.readIntoT(buf, offset).then((t) => ({ value: buf, timing: t.timing }));
  }

  /** @internal `flags`: Flag.VMSTATE reads the VM-state area (the server checks its range). */
  readIntoT(buf: Uint8Array, offset: number, flags = 0): Promise<Timed<void>> {
    return this.start(Op.READ, "read", (op) => this.readChunks(op, buf, offset, flags)) as Promise<Timed<void>>;
  }

  /** @internal `flags`: Flag.VMSTATE writes the VM-state area (the server checks its range). */
  writeT(offset: number, data: Uint8Array, flags = 0): Promise<Timed<void>> {
    return this.start(Op.WRITE, "write", (op) => this.writeChunks(op, offset, data, flags)) as Promise<Timed<void>>;
  }

  /** @internal */ readChunks(op: Operation, buf: Uint8Array, offset: number, flags = 0): Chunk[] {
    if (!(flags & Flag.VMSTATE)) this.checkRange(offset, buf.length);
    const cap = this.ring.slotData;
    return splitRange(offset, buf.length, cap).map(([off, len]) => {
      const at = off - offset;
      return this.chunk(op, Op.READ, { offset: off, length: len, flags }, (out) => buf.set(out, at));
    });
  }

  /** @internal */ writeChunks(op: Operation, offset: number, data: Uint8Array, flags = 0): Chunk[] {
    if (!(flags & Flag.VMSTATE)) this.checkRange(offset, data.length);
    const cap = this.ring.slotData;
    const pieces = splitRange(offset, data.length, cap);
    // The chunks borrow the caller's buffer; start() copies what it cannot publish at once, since the
    // caller may reuse its buffer as soon as write() returns (v86 PIO writes do).
    return pieces.map(([off, len]) => {
      const at = off - offset;
      const c = this.chunk(op, Op.WRITE, { offset: off, length: len, input: data.subarray(at, at + len), flags });
      c.borrowed = true;
      return c;
    });
  }

  /** @internal */ flushChunks(op: Operation): Chunk[] {
    return [this.chunk(op, Op.FLUSH)];
  }

  /** @internal */ writeZeroesT(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<Timed<void>> {
    return this.rangeT(Op.WRITE_ZEROES, "write-zeroes", offset, length, opts.unmap ? Flag.UNMAP : 0);
  }

  /** @internal */ discardT(offset: number, length: number): Promise<Timed<void>> {
    return this.rangeT(Op.DISCARD, "discard", offset, length, 0);
  }

  private rangeT(code: number, name: string, offset: number, length: number, flags: number): Promise<Timed<void>> {
    return this.start(code, name, (op) => {
      this.checkRange(offset, length);
      return splitRange(offset, length, MAX_RANGE_CHUNK).map(([off, len]) => this.chunk(op, code, { offset: off, length: len, flags }));
    }) as Promise<Timed<void>>;
  }

  /** @internal */ simpleT(code: number): Promise<Timed<void>> {
    return this.start(code, OP_NAMES[code], (op) => [this.chunk(op, code)]) as Promise<Timed<void>>;
  }

  /** @internal */ snapshotCreateT(name: string, opts: SnapshotCreateOptions = {}): Promise<Timed<SnapshotInfo>> {
    return this.start(Op.SNAPSHOT_CREATE, "snapshot-create", (op) => {
      const args: Record<string, unknown> = { name };
      if (opts.vmClockNsec !== undefined) args.vmClockNsec = opts.vmClockNsec;
      if (opts.date !== undefined) args.dateMs = opts.date.getTime();
      const chunks: Chunk[] = [];
      if (opts.vmState !== undefined) {
        // Stage the VM state with PUT requests, then name it in the create request.
        const token = this.token();
        const state = opts.vmState.slice();
        args.vmStateToken = token;
        args.vmStateLength = state.length;
        for (const [off, len] of splitRange(0, state.length, this.ring.slotData)) {
          chunks.push(this.chunk(op, Op.PUT, { offset: off, length: len, token, input: state.subarray(off, off + len) }));
        }
      }
      chunks.push(this.resultChunk(op, Op.SNAPSHOT_CREATE, this.jsonInput(args), (bytes) => parseJson(bytes)));
      return chunks;
    }) as Promise<Timed<SnapshotInfo>>;
  }

  /** @internal */ snapshotApplyT(idOrName: string): Promise<Timed<void>> {
    return this.start(Op.SNAPSHOT_APPLY, "snapshot-apply", (op) => [
      this.resultChunk(op, Op.SNAPSHOT_APPLY, this.jsonInput({ id: idOrName }), (bytes) => {
        const r = parseJson(bytes) as { size?: number } | null;
        if (r && typeof r.size === "number") this.sizeNow = r.size;
        return undefined;
      }),
    ]) as Promise<Timed<void>>;
  }

  /** @internal */ jsonT(code: number, args: unknown, parse: boolean): Promise<Timed<unknown>> {
    return this.start(code, OP_NAMES[code], (op) => [
      this.resultChunk(op, code, args === undefined ? undefined : this.jsonInput(args), (bytes) => (parse ? parseJson(bytes) : undefined)),
    ]);
  }

  /** @internal */ blobT(code: number, args: unknown): Promise<Timed<Uint8Array>> {
    return this.start(code, OP_NAMES[code], (op) => [this.resultChunk(op, code, this.jsonInput(args), (bytes) => bytes)]) as Promise<
      Timed<Uint8Array>
    >;
  }

  // ------------------------------------------------------------------------------------------- machinery

  /**
   * Starts an operation: `build` makes its chunks (and may throw a RequestError for bad arguments). The
   * promise resolves when every chunk (and every follow-up GET) has completed.
   */
  private start(code: number, name: string, build: (op: Operation) => Chunk[], isClose = false): Promise<Timed<unknown>> {
    return new Promise<Timed<unknown>>((resolve, reject) => this.startWith(name, build, resolve, reject, isClose));
  }

  /** @internal The callback form: `done` runs synchronously when the request is reaped (or at once on refusal). */
  startCb<T>(name: string, build: (op: Operation) => Chunk[], done: Completion<T>): void {
    this.startWith(
      name,
      build,
      (t) => done(undefined, t.value as T, t.timing),
      (e) => done(e, undefined, undefined),
    );
  }

  private startWith(name: string, build: (op: Operation) => Chunk[], resolve: (v: Timed<unknown>) => void, reject: (e: Error) => void, isClose = false): void {
    const called = performance.now();
    if (this.dead) return reject(this.dead);
    if (this.closing && !isClose) return reject(new ClosedError(`${this.name}: the image has been closed (${name} after close)`));
    {
      const op = new Operation(name, called, resolve, reject);
      let chunks: Chunk[];
      try {
        chunks = build(op);
      } catch (e) {
        reject(e as Error);
        return;
      }
      this.outstanding++;
      if (chunks.length === 0) {
        this.settle(op, undefined);
        return;
      }
      for (const c of chunks) this.queue.push(c);
      op.pending += chunks.length;
      // Publish at once what fits; copy borrowed input of what must wait in the queue.
      this.pump();
      for (let i = this.queue.length - 1; i >= this.queueHead && this.queue[i].owner === op; i--) {
        const c = this.queue[i];
        if (c.borrowed && c.input) {
          c.input = c.input.slice();
          c.borrowed = false;
        }
      }
      this.schedule();
    }
  }

  private chunk(
    owner: Operation,
    code: number,
    p: { offset?: number; length?: number; flags?: number; token?: number; input?: Uint8Array } = {},
    onOut?: (out: Uint8Array) => void,
  ): Chunk {
    const input = p.input;
    return {
      op: code,
      offset: p.offset ?? 0,
      length: p.length ?? input?.length ?? 0,
      flags: p.flags ?? 0,
      token: p.token ?? 0,
      input,
      owner,
      done: (status, out) => {
        if (status === Status.OK) {
          if (onOut) onOut(out);
        } else {
          owner.error ??= rebuildError(status, readText(out), this.name, OP_NAMES[code]);
        }
      },
    };
  }

  /** A chunk whose result may exceed the data share: the rest is fetched with GET requests. */
  private resultChunk(owner: Operation, code: number, input: Uint8Array | undefined, onResult: (bytes: Uint8Array) => unknown): Chunk {
    return {
      op: code,
      offset: 0,
      length: input?.length ?? 0,
      flags: 0,
      token: 0,
      input,
      owner,
      done: (status, out, total, token) => {
        if (status !== Status.OK) {
          owner.error ??= rebuildError(status, readText(out), this.name, OP_NAMES[code]);
          return;
        }
        const all = new Uint8Array(total);
        all.set(out);
        const finish = (): unknown => onResult(all);
        if (total <= out.length) {
          owner.finish = finish;
          return;
        }
        // Fetch the rest of the held result.
        owner.finish = finish;
        const gets = splitRange(out.length, total - out.length, this.ring.slotData).map(([off, len]) =>
          this.chunk(owner, Op.GET, { offset: off, length: len, token }, (piece) => all.set(piece, off)),
        );
        owner.pending += gets.length;
        for (const g of gets) this.queue.push(g);
      },
    };
  }

  private jsonInput(args: unknown): Uint8Array {
    const bytes = encoder.encode(JSON.stringify(args));
    if (bytes.length > this.ring.slotData) {
      throw new RequestError(`request arguments of ${bytes.length} bytes exceed the ring's ${this.ring.slotData}-byte slot`);
    }
    return bytes;
  }

  private token(): number {
    const t = this.nextToken++;
    if (this.nextToken > 0x7fffffff) this.nextToken = 1;
    return t;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RequestError(`${this.name}: invalid offset ${offset}`);
    checkLen(length);
    if (offset + length > this.sizeNow) {
      throw new RequestError(`request at offset ${offset}, length ${length} is past the end of the disk (${this.sizeNow} bytes)`);
    }
  }

  private schedule(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    // Collect completions one microtask later, so that requests made in the same turn share one spin.
    queueMicrotask(() => {
      this.kickScheduled = false;
      this.drive();
    });
  }

  /** Publishes queued chunks into free slots; wakes the server if it sleeps. */
  private pump(): void {
    if (this.dead) return;
    const n = this.ring.nslots;
    const mask = this.ring.mask;
    const i32 = this.i32;
    const f64 = this.f64;
    let published = false;
    while (this.queueHead < this.queue.length && this.sqTail - this.cqHead < n) {
      const c = this.queue[this.queueHead];
      this.queue[this.queueHead++] = undefined as unknown as Chunk;
      const slot = this.sqTail & mask;
      const b = slot * SLOT_I32;
      const fb = slot * SLOT_F64;
      i32[b + S.OPCODE] = c.op;
      i32[b + S.SEQ] = this.sqTail | 0;
      i32[b + S.LENGTH] = c.length;
      i32[b + S.FLAGS] = c.flags;
      i32[b + S.TOKEN] = c.token;
      f64[fb + SF.OFFSET] = c.offset;
      if (c.input && c.input.length > 0) this.ring.bytes.set(c.input, this.ring.shareOffset(slot));
      c.input = undefined;
      const t = performance.now();
      f64[fb + SF.T_SUBMIT] = t;
      if (t < c.owner.submitted) c.owner.submitted = t;
      Atomics.store(i32, b + S.STATE, SlotState.SUBMITTED);
      this.slots[slot] = c;
      this.sqTail++;
      published = true;
    }
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    if (published) {
      Atomics.store(this.ctl, C.SQ_TAIL, this.sqTail | 0);
      if (Atomics.load(this.ctl, C.SERVER_SLEEPING) !== 0) Atomics.notify(this.ctl, C.SQ_TAIL, 1);
    }
  }

  /** Consumes published completions; returns how many. */
  private reap(): number {
    const ctl = this.ctl;
    const i32 = this.i32;
    const f64 = this.f64;
    const mask = this.ring.mask;
    let tail = Atomics.load(ctl, C.CQ_TAIL);
    let n = 0;
    while ((this.cqHead | 0) !== tail && !this.dead) {
      const slot = this.cqHead & mask;
      const b = slot * SLOT_I32;
      const fb = slot * SLOT_F64;
      const c = this.slots[slot];
      this.slots[slot] = undefined;
      this.cqHead++;
      n++;
      if (c) {
        const op = c.owner;
        op.chunks++;
        const ts = f64[fb + SF.T_START];
        const te = f64[fb + SF.T_END];
        // What a spin waits for: submission to completion of this ring request.
        this.sized?.observe(te - f64[fb + SF.T_SUBMIT]);
        if (ts < op.workerStart) op.workerStart = ts;
        if (te > op.workerEnd) op.workerEnd = te;
        const status = i32[b + S.STATUS];
        const len = i32[b + S.RESULT_LEN] >>> 0;
        try {
          c.done(status, this.ring.share(slot, len), i32[b + S.RESULT_TOTAL] >>> 0, i32[b + S.RESULT_TOKEN] >>> 0);
        } catch (e) {
          op.error ??= e as Error;
        }
        if (--op.pending === 0) this.settle(op, op.error);
      }
      Atomics.store(i32, b + S.STATE, SlotState.FREE);
      if ((this.cqHead | 0) === tail) tail = Atomics.load(ctl, C.CQ_TAIL);
    }
    if (n > 0) {
      Atomics.store(ctl, C.CQ_HEAD, this.cqHead | 0);
      this.pump();
    }
    return n;
  }

  /** Reaps completions, spinning for a bounded (adaptive) time, then hands over to Atomics.waitAsync. */
  private drive(): void {
    if (this.dead) return;
    this.reap();
    if (this.sqTail === this.cqHead) return;
    const alone = this.sqTail - this.cqHead <= this.spinMaxInFlight;
    const budget = !alone ? 0 : this.sized ? Math.min(this.sizedLeft(), this.spin.next()) : this.spin.next();
    if (budget > 0) {
      const ctl = this.ctl;
      const now = this.spinClock;
      const spinFrom = now();
      const stopAt = spinFrom + Math.max(budget, this.spinTotalMs);
      for (;;) {
        const until = Math.min(now() + budget, stopAt);
        let got = false;
        while (!(got = Atomics.load(ctl, C.CQ_TAIL) !== (this.cqHead | 0)) && now() < until) {
          // spin
        }
        if (!got) {
          this.spin.miss(now());
          break;
        }
        this.spin.hit();
        this.reap();
        if (this.sqTail === this.cqHead || this.dead) break;
        if (now() >= stopAt) break;
      }
      this.sized?.spun(now() - spinFrom);
      if (this.sqTail === this.cqHead || this.dead) return;
    }
    this.waitForCompletions();
  }

  private waitForCompletions(): void {
    if (this.asyncWaiting) return;
    const ctl = this.ctl;
    for (;;) {
      if (this.dead) return;
      this.reap();
      if (this.sqTail === this.cqHead) return;
      Atomics.store(ctl, C.CLIENT_WAITING, 1);
      const r = waitAsync!(ctl, C.CQ_TAIL, this.cqHead | 0, this.waitMs);
      if (!r.async) {
        if (Atomics.load(ctl, C.CQ_TAIL) !== (this.cqHead | 0)) {
          this.spin.arrived(this.f64[(this.cqHead & this.ring.mask) * SLOT_F64 + SF.T_END]);
        }
        continue;
      }
      this.asyncWaiting = true;
      r.value.then((how) => {
        this.asyncWaiting = false;
        Atomics.store(ctl, C.CLIENT_WAITING, 0);
        if (this.dead) return;
        if (Atomics.load(ctl, C.CQ_TAIL) !== (this.cqHead | 0)) {
          // Tell the spin policy when the server finished the request we were waiting for.
          this.spin.arrived(this.f64[(this.cqHead & this.ring.mask) * SLOT_F64 + SF.T_END]);
        } else if (how === "timed-out") {
          const state = Atomics.load(ctl, C.SERVER_STATE);
          if (state === ServerState.CRASHED || state === ServerState.STOPPED) {
            this.fail(new WorkerError(`the worker serving ${this.name} ${state === ServerState.CRASHED ? "crashed" : "stopped"} with requests in flight`));
            return;
          }
        }
        this.drive();
      });
      return;
    }
  }

  private settle(op: Operation, err: Error | undefined): void {
    if (op.settled) return;
    op.settled = true;
    this.outstanding--;
    if (err) {
      op.reject(err);
    } else {
      let value: unknown;
      try {
        value = op.finish();
      } catch (e) {
        op.reject(e as Error);
        this.checkIdle();
        return;
      }
      const timing: RequestTiming = {
        called: op.called,
        submitted: op.submitted === Infinity ? op.called : op.submitted,
        workerStart: op.workerStart === Infinity ? op.called : op.workerStart,
        workerEnd: op.workerEnd || op.called,
        completed: performance.now(),
        chunks: op.chunks,
      };
      if (this.onTiming) {
        try {
          this.onTiming(op.name, timing);
        } catch {
          // a faulty hook must not break the ring
        }
      }
      op.resolve({ value, timing });
    }
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.outstanding === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private whenIdle(): Promise<void> {
    if (this.outstanding === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private whenEnded(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((r) => this.endWaiters.push(r));
  }
}

/** The timed variants of DiskClient's methods. */
export interface TimedApi {
  read(offset: number, length: number): Promise<Timed<Uint8Array>>;
  readInto(buf: Uint8Array, offset: number): Promise<Timed<void>>;
  write(offset: number, data: Uint8Array): Promise<Timed<void>>;
  writeZeroes(offset: number, length: number, opts?: { unmap?: boolean }): Promise<Timed<void>>;
  discard(offset: number, length: number): Promise<Timed<void>>;
  flush(): Promise<Timed<void>>;
  nop(): Promise<Timed<void>>;
  snapshotCreate(name: string, opts?: SnapshotCreateOptions): Promise<Timed<SnapshotInfo>>;
  snapshotApply(idOrName: string): Promise<Timed<void>>;
  snapshotDelete(idOrName: string): Promise<Timed<void>>;
  snapshotList(): Promise<Timed<SnapshotInfo[]>>;
  readVmState(idOrName: string): Promise<Timed<Uint8Array>>;
  stats(): Promise<Timed<unknown>>;
}

function makeCallbackApi(c: DiskClient): CallbackApi {
  return {
    read: (offset, length, done) => {
      let buf: Uint8Array;
      try {
        buf = new Uint8Array(checkLen(length));
      } catch (e) {
        done(e as Error, undefined, undefined);
        return;
      }
      c.startCb<void>("read", (op) => c.readChunks(op, buf, offset), (err, _v, timing) => done(err, err ? undefined : buf, timing));
    },
    write: (offset, data, done) => c.startCb("write", (op) => c.writeChunks(op, offset, data), done),
    flush: (done) => c.startCb("flush", (op) => c.flushChunks(op), done),
  };
}

function makeTimedApi(c: DiskClient): TimedApi {
  return {
    read: (o, l) => c.readT(o, l),
    readInto: (b, o) => c.readIntoT(b, o),
    write: (o, d) => c.writeT(o, d),
    writeZeroes: (o, l, opts) => c.writeZeroesT(o, l, opts),
    discard: (o, l) => c.discardT(o, l),
    flush: () => c.simpleT(Op.FLUSH),
    nop: () => c.simpleT(Op.NOP),
    snapshotCreate: (n, o) => c.snapshotCreateT(n, o),
    snapshotApply: (id) => c.snapshotApplyT(id),
    snapshotDelete: (id) => c.jsonT(Op.SNAPSHOT_DELETE, { id }, false) as Promise<Timed<void>>,
    snapshotList: () => c.jsonT(Op.SNAPSHOT_LIST, undefined, true) as Promise<Timed<SnapshotInfo[]>>,
    readVmState: (id) => c.blobT(Op.READ_VMSTATE, { id }),
    stats: () => c.jsonT(Op.STATS, undefined, true),
  };
}

function checkLen(length: number): number {
  if (!Number.isSafeInteger(length) || length < 0) throw new RequestError(`invalid length ${length}`);
  return length;
}

function parseJson(bytes: Uint8Array): unknown {
  return JSON.parse(readText(bytes));
}

/** Rebuilds the engine's error class from a ring status. */
export function rebuildError(status: number, message: string, image: string, op: string): Error {
  switch (status) {
    case Status.REQUEST:
      return new RequestError(message);
    case Status.SNAPSHOT:
      return new SnapshotError(message);
    case Status.CLOSED:
      return new ClosedError(message);
    case Status.FORMAT:
      return new ImageFormatError(message);
    case Status.UNSUPPORTED:
      return new UnsupportedFeatureError(message);
    case Status.IO:
      return new IoError(message);
    case Status.PROTOCOL:
      return new WorkerError(`${image}: ${message}`);
    default:
      return new WorkerError(`${image}: ${op} failed in the worker: ${message}`);
  }
}

/**
 * Waits (asynchronously) until the server has opened the image. Resolves when READY; rejects with the
 * rebuilt open error when the open failed, or with the error `ended` resolves to when the server thread
 * ended (or died) before either.
 */
export async function waitForServer(ring: SharedArrayBuffer, name: string, ended?: Promise<Error>): Promise<void> {
  const view = new RingView(ring);
  const ctl = view.ctl;
  let endError: Error | undefined;
  // Registered first, so it runs before the race below resumes.
  void ended?.then((e) => (endError = e));
  for (;;) {
    const state = Atomics.load(ctl, C.SERVER_STATE);
    if (state === ServerState.READY) return;
    if (state === ServerState.OPEN_FAILED) {
      const status = Atomics.load(ctl, C.OPEN_STATUS);
      const msg = readText(view.share(0, Atomics.load(ctl, C.OPEN_MSG_LEN)));
      throw rebuildError(status, msg, name, "open");
    }
    if (state !== ServerState.NEW) throw new WorkerError(`the worker opening ${name} ended before the image was open`);
    if (endError) throw endError;
    const r = waitAsync!(ctl, C.SERVER_STATE, ServerState.NEW, 1000);
    if (r.async) await (ended ? Promise.race([r.value, ended]) : r.value);
  }
}
