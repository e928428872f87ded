/**
 * RingClient: the caller's end of the request ring (ring.ts) as a transport — slots, the doorbell, reaping
 * completions, spinning and waiting. It knows requests only as chunks (one ring slot each) grouped into
 * operations; what the requests mean is the disk APIs' (disk-client.ts: promises; served-async-disk.ts:
 * the asynchronous disk contract), which build their chunks with ring-requests.ts.
 *
 * Never blocking: after submitting it spins for a bounded time, then waits with `Atomics.waitAsync`.
 * Platform-neutral (no node: imports); the host that started the server (the piscina pool in Node, a Web
 * Worker in the browser) tells the client when the server thread has ended or died.
 *
 * Any number of callers may use one client at once. Requests are served in submission order (per-image
 * FIFO); when all slots are in use, chunks wait in a client-side queue (backpressure).
 *
 * Completion: every operation ends in one callback, `done(err, value, timing)`, run synchronously at the
 * moment the client reaps its last chunk — inside `poll()` when the caller polls, else in the microtask or
 * waitAsync continuation that reaped it. An emulator that polls from inside its own run loop thus completes
 * a guest request without going back to its event loop.
 *
 * Spinning: by default a bounded adaptive spin of `spinUs` (SpinPolicy, ring.ts). With `sizedSpinCapUs`, the
 * spin is sized from the service times observed (SizedSpin): long enough for most requests to complete
 * inside it, none when they mostly take longer than the cap, and never while nothing is in flight.
 */
import { ClosedError, ImageFormatError, RequestError, SnapshotError, UnsupportedFeatureError } from "../engine/errors.js";
import { IoError } from "../io/block-file.js";
import { C, readText, RingView, ServerState, SF, S, SizedSpin, SLOT_F64, SLOT_I32, SlotState, SpinPolicy, Status } from "./ring.js";

/** When a request went through each stage, in ms on this thread's `performance.now()` scale. */
export interface RequestTiming {
  /** The caller called the method. */
  readonly called: number;
  /** The (first) ring slot was published to the server (later than `called` when the ring was full). */
  readonly submitted: number;
  /** The server began the (first) request. */
  readonly workerStart: number;
  /** The server finished the (last) request. */
  readonly workerEnd: number;
  /** The result was handed to the caller. */
  readonly completed: number;
  /** Ring requests used (more than 1 when the request was split or staged). */
  readonly chunks: number;
}

/** The server thread serving an image died (terminated, crashed) or stopped on its own. */
export class WorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorkerError";
  }
}

export interface RingClientOptions {
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

export const DEFAULT_CLIENT_SPIN_US = 50;
/** The output of a request that returned none (a write's): one empty view for all of them. */
const NO_OUTPUT = new Uint8Array(0);

/** How an operation ends: `err`, or its value with its timing. Runs once. */
export type OperationDone = (err: Error | undefined, value: unknown, timing: RequestTiming | undefined) => void;

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
  /** Bytes copied into the slot's data share at publication: one buffer or pieces laid end to end. */
  input?: Uint8Array | readonly Uint8Array[];
  /** `input` is a view on the caller's buffer valid only until the call returns: copied if it must wait. */
  borrowed?: boolean;
  owner: Operation;
  /** Called synchronously at completion with the slot's output (valid only during the call). */
  done(status: number, out: Uint8Array, resultTotal: number, resultToken: number): void;
}

/** One caller request: one or more chunks, one completion. Its stage times are its timing once it completes. */
export class Operation implements RequestTiming {
  pending = 0;
  chunks = 0;
  error: Error | undefined;
  submitted = Infinity;
  workerStart = Infinity;
  workerEnd = 0;
  completed = 0;
  settled = false;
  /** Nobody waits for this completion now (a device's write cache told the guest already): no spin for it. */
  background = false;
  /** Makes the value once every chunk has completed without error. */
  finish: () => unknown = () => undefined;
  constructor(
    readonly name: string,
    readonly called: number,
    readonly done: OperationDone,
  ) {}
}

export class RingClient {
  /** Image path or name, for messages. */
  readonly name: string;
  readonly readOnly: boolean;
  /** Identifier of the serving thread (Node worker threadId). */
  readonly serverId: number;
  /** Bytes of data one ring request carries (reads and writes are split at multiples of it). */
  readonly slotData: number;
  /** Per-request timing hook, called for every completed request. */
  onTiming: ((op: string, timing: RequestTiming) => void) | undefined;
  /** Virtual size of the image in bytes (a snapshot apply or a resize changes it). */
  size: number;

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
  /** Outstanding operations someone waits for (not `background`): only these are worth a spin. */
  private awaited = 0;
  private idleWaiters: Array<() => void> = [];
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private dead: Error | undefined;
  private ended = false;
  private endWaiters: Array<() => void> = [];
  private nextToken = 1;

  /**
   * Wraps a ring whose server is READY (see `waitForServer`). The host must call `serverEnded()` when the
   * server thread ends and `fail()` when it dies.
   */
  constructor(ring: SharedArrayBuffer, name: string, opts: RingClientOptions = {}) {
    this.ring = new RingView(ring);
    this.ctl = this.ring.ctl;
    this.i32 = this.ring.slotI32;
    this.f64 = this.ring.slotF64;
    this.slots = new Array(this.ring.nslots).fill(undefined);
    this.name = name;
    this.readOnly = this.ctl[C.READ_ONLY] === 1;
    this.serverId = this.ctl[C.SERVER_ID];
    this.slotData = this.ring.slotData;
    this.size = this.ring.ctlF64[C.F64_IMAGE_SIZE];
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
  }

  /** ms this client has spun waiting for completions (sized spins only; 0 otherwise). */
  get spunMs(): number {
    return this.sized?.spentMs ?? 0;
  }

  /** The spin a wait for the next completion would get now, ms (sized spins; the fixed budget otherwise). */
  get spinBudgetMs(): number {
    return this.sized ? Math.min(this.sized.budget(), this.spin.budget) : this.spin.budget;
  }

  /** True once close() was called or the server died. */
  get closed(): boolean {
    return this.closing || this.dead !== undefined;
  }

  /** Operations queued or in flight. */
  get pendingRequests(): number {
    return this.outstanding;
  }

  /** A fresh token naming a staged blob (PUT/GET requests). */
  token(): number {
    const t = this.nextToken++;
    if (this.nextToken > 0x7fffffff) this.nextToken = 1;
    return t;
  }

  /**
   * Reaps the completions published so far, running their callbacks now; with `spinMs` > 0 and requests in
   * flight but none complete, spins up to `spinMs` for one first. Returns the completions reaped. Never
   * blocks longer than `spinMs`.
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

  /**
   * Starts an operation: `build` makes its chunks (and may throw a RequestError for bad arguments, which
   * then goes to `done` at once). `done` runs when every chunk (and every follow-up GET) has completed.
   */
  submit(name: string, build: (op: Operation) => Chunk[], done: OperationDone, isClose = false, background = false): void {
    const called = performance.now();
    if (this.dead) return done(this.dead, undefined, undefined);
    if (this.closing && !isClose) return done(new ClosedError(`${this.name}: the image has been closed (${name} after close)`), undefined, undefined);
    const op = new Operation(name, called, done);
    op.background = background;
    let chunks: Chunk[];
    try {
      chunks = build(op);
    } catch (e) {
      return done(e as Error, undefined, undefined);
    }
    this.outstanding++;
    if (!background) this.awaited++;
    if (chunks.length === 0) return this.settle(op, undefined);
    for (const c of chunks) this.queue.push(c);
    op.pending += chunks.length;
    // Publish at once what fits; copy borrowed input of what must wait in the queue.
    this.pump();
    for (let i = this.queue.length - 1; i >= this.queueHead && this.queue[i]!.owner === op; i--) {
      const c = this.queue[i]!;
      if (c.borrowed && c.input) {
        c.input = c.input instanceof Uint8Array ? c.input.slice() : c.input.map((piece) => piece.slice());
        c.borrowed = false;
      }
    }
    this.schedule();
  }

  /** Adds follow-up chunks to an operation from a chunk's completion (the GETs of a held result). */
  follow(op: Operation, chunks: Chunk[]): void {
    op.pending += chunks.length;
    for (const c of chunks) this.queue.push(c);
  }

  /**
   * Waits for every request already made, then sends `closeChunk`'s request and waits for the server to
   * end. Requests made after close() fail with a ClosedError. Idempotent.
   */
  close(closeChunk: (op: Operation) => Chunk): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.closePromise = (async () => {
      await this.whenIdle();
      if (this.dead) throw this.dead;
      await new Promise<void>((resolve, reject) => this.submit("close", (op) => [closeChunk(op)], (err) => (err ? reject(err) : resolve()), true));
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
   * The host reports that the server died: every queued, in-flight and later request fails with `err`.
   * Idempotent; the first error wins.
   */
  fail(err: Error): void {
    if (!this.dead) {
      this.dead = err;
      const victims: Operation[] = [];
      for (let i = this.queueHead; i < this.queue.length; i++) victims.push(this.queue[i]!.owner);
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

  // ------------------------------------------------------------------------------------------- machinery

  /** The sized spin's budget less what the oldest request in flight has been waiting already, ms. */
  private sizedLeft(): number {
    const b = this.sized!.budget();
    if (b <= 0 || this.sqTail === this.cqHead) return 0;
    const waited = performance.now() - this.f64[(this.cqHead & this.ring.mask) * SLOT_F64 + SF.T_SUBMIT];
    return Math.max(0, b - waited);
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
    const bytes = this.ring.bytes;
    let published = false;
    while (this.queueHead < this.queue.length && this.sqTail - this.cqHead < n) {
      const c = this.queue[this.queueHead]!;
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
      const input = c.input;
      if (input) {
        // The one copy of a write's bytes in JavaScript: from the caller's buffers into the slot's share.
        let at = this.ring.shareOffset(slot);
        if (input instanceof Uint8Array) {
          if (input.length > 0) bytes.set(input, at);
        } else {
          for (const piece of input) {
            bytes.set(piece, at);
            at += piece.length;
          }
        }
        c.input = undefined;
      }
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
          c.done(status, len === 0 ? NO_OUTPUT : this.ring.share(slot, len), i32[b + S.RESULT_TOTAL] >>> 0, i32[b + S.RESULT_TOKEN] >>> 0);
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
    const budget = !alone || this.awaited === 0 ? 0 : this.sized ? Math.min(this.sizedLeft(), this.spin.next()) : this.spin.next();
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
    if (!op.background) this.awaited--;
    let value: unknown;
    if (!err) {
      try {
        value = op.finish();
      } catch (e) {
        err = e as Error;
      }
    }
    if (err) {
      op.done(err, undefined, undefined);
    } else {
      if (op.submitted === Infinity) op.submitted = op.called;
      if (op.workerStart === Infinity) op.workerStart = op.called;
      if (op.workerEnd === 0) op.workerEnd = op.called;
      op.completed = performance.now();
      if (this.onTiming) {
        try {
          this.onTiming(op.name, op);
        } catch {
          // a faulty hook must not break the ring
        }
      }
      op.done(undefined, value, op);
    }
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
