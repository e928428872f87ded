/**
 * The server side of the request ring (see ring.ts for the protocol): opens the image, then serves requests
 * in submission order until a CLOSE request or the STOP word. Platform-neutral — no node: imports — so a
 * browser Web Worker can run it on an OPFS-backed image as the Node worker does on a file.
 *
 * The loop is synchronous: it blocks its own thread in `Atomics.wait` when idle (after a bounded spin), which
 * is the point of running it in a worker.
 */
import { ClosedError, ImageFormatError, RequestError, SnapshotError, UnsupportedFeatureError } from "../engine/errors.js";
import type { SnapshotCreateOptions } from "../engine/types.js";
import { IoError } from "../io/block-file.js";
import {
  C,
  Flag,
  Op,
  OP_NAMES,
  RingView,
  ringClock,
  ServerState,
  SF,
  S,
  SLOT_F64,
  SLOT_I32,
  SlotState,
  SizedSpin,
  SpinPolicy,
  Status,
  writeText,
  readText,
} from "./ring.js";
import { depthExtents, dirtyExtents, extentsWire, mergedBlockStatus } from "./extents.js";
import type { SyncDisk } from "../disk/sync-disk.js";

export interface ServeOptions {
  /** Maximum bounded spin after each request before sleeping, in µs (adaptive, see SpinPolicy). Default 50. */
  spinUs?: number;
  /** Adapt the spin to contention (default true); false spins the full `spinUs` every time. */
  adaptiveSpin?: boolean;
  /** Timeout of each `Atomics.wait`, after which STOP is checked again. Default 1000 ms. */
  waitTimeoutMs?: number;
  /** Identifier of the serving thread, published in SERVER_ID (Node: worker threadId). */
  serverId?: number;
  /**
   * Size the spin after each request from the observed gaps until the next request (SizedSpin), spinning
   * at most this many µs; 0 or absent: the fixed adaptive spin of `spinUs`.
   */
  sizedSpinCapUs?: number;
  /**
   * Make every write (write, write-zeroes, discard, and resize and the snapshot operations) durable before its
   * completion is published: cache=writethrough, with the engine opened in writeback (open/serving-cache.ts).
   */
  durableWrites?: boolean;
  /**
   * Share one flush among the durable requests in hand (group commit; default true). false: a FLUSH flushes
   * at once and each durable write is flushed on its own.
   */
  groupCommit?: boolean;
}

export interface ServeResult {
  /** Why the loop ended. */
  reason: "closed" | "stopped" | "open-failed";
  /** Requests served (including the CLOSE request). */
  requests: number;
  /** The open error message, when reason is "open-failed". */
  error?: string;
}

export const DEFAULT_SERVER_SPIN_US = 50;
/**
 * How long the ring must stay empty before the image's idle work runs, in ms. The work (an apply) blocks the
 * next request while it runs: a guest's gaps between requests (a few ms) must not set it off. 5 ms did: in
 * the guest's rand4k, 55 applies in 256 post-snapshot writes and a p99 of 50 ms at the device.
 */
export const IDLE_MS = 100;

/** Maps an error thrown by the engine to a ring status code. */
export function statusOf(e: unknown): number {
  if (e instanceof RequestError) return Status.REQUEST;
  if (e instanceof SnapshotError) return Status.SNAPSHOT;
  if (e instanceof ClosedError) return Status.CLOSED;
  if (e instanceof ImageFormatError) return Status.FORMAT;
  if (e instanceof UnsupportedFeatureError) return Status.UNSUPPORTED;
  if (e instanceof IoError) return Status.IO;
  if (e instanceof ProtocolError) return Status.PROTOCOL;
  // Errors from another copy of the modules (or rebuilt ones) still carry their class name.
  switch ((e as Error | undefined)?.name) {
    case "RequestError":
      return Status.REQUEST;
    case "SnapshotError":
      return Status.SNAPSHOT;
    case "ClosedError":
      return Status.CLOSED;
    case "ImageFormatError":
      return Status.FORMAT;
    case "UnsupportedFeatureError":
      return Status.UNSUPPORTED;
    case "IoError":
      return Status.IO;
  }
  return Status.INTERNAL;
}

function messageOf(e: unknown, status: number): string {
  const err = e as Error | undefined;
  const msg = err && typeof err.message === "string" ? err.message : String(e);
  return status === Status.INTERNAL && err?.name && err.name !== "Error" ? `${err.name}: ${msg}` : msg;
}

/** A request that breaks the ring protocol (bad opcode, bad slot state, unknown token...). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

const encoder = new TextEncoder();

/**
 * Opens the disk with `open` and serves the ring until CLOSE or STOP. Never throws for a failed open or a
 * failed request (those travel through the ring); throws only if the ring itself is broken, after marking it
 * CRASHED so the client learns of it.
 */
export function serveRing(sab: SharedArrayBuffer, open: () => SyncDisk, opts: ServeOptions = {}): ServeResult {
  const ring = new RingView(sab);
  const ctl = ring.ctl;
  let disk: SyncDisk;
  try {
    disk = open();
  } catch (e) {
    const status = statusOf(e);
    const msg = messageOf(e, status);
    const n = writeText(ring.share(0), msg);
    Atomics.store(ctl, C.OPEN_STATUS, status);
    Atomics.store(ctl, C.OPEN_MSG_LEN, n);
    Atomics.store(ctl, C.SERVER_STATE, ServerState.OPEN_FAILED);
    Atomics.notify(ctl, C.SERVER_STATE);
    return { reason: "open-failed", requests: 0, error: msg };
  }
  const server = new RingServer(ring, disk, opts);
  try {
    return server.run();
  } catch (e) {
    Atomics.store(ctl, C.SERVER_STATE, ServerState.CRASHED);
    Atomics.notify(ctl, C.SERVER_STATE);
    Atomics.notify(ctl, C.CQ_TAIL);
    try {
      disk.close();
    } catch {
      // the ring is already broken; the close error adds nothing
    }
    throw e;
  }
}

/** How serving one request ended, for the loop. */
const enum Outcome {
  DONE,
  /** A CLOSE that closed the image. */
  CLOSING,
  /** Succeeded; its completion waits for the group's flush (group commit). */
  AWAITS_COMMIT,
}

interface Staged {
  parts: Uint8Array[];
  size: number;
}

/**
 * The server of one ring on an open disk. Constructing it publishes READY. `run()` is the blocking loop of
 * a worker; `serveAvailable()` serves what has been submitted without waiting (for tests that drive both
 * sides from one thread, or for a host that polls).
 */
export class RingServer {
  private readonly ctl: Int32Array;
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly now: () => number;
  private readonly spin: SpinPolicy;
  private readonly sized: SizedSpin | undefined;
  /** Ring clock when the last completion was published. */
  private lastEnd = -1;
  private readonly waitMs: number;
  private readonly staged = new Map<number, Staged>();
  private readonly held = new Map<number, Uint8Array>();
  private nextToken = 1;
  private isClosed = false;
  /** The loop makes every write durable before it completes (cache=writethrough served over a writeback engine). */
  private readonly durableWrites: boolean;
  /** FLUSH requests in hand share one flush (see serveNext). */
  private readonly groupCommit: boolean;
  /** Slots served whose completion waits for the group's flush. */
  private readonly awaiting: number[] = [];
  /** Submission number of the first completion held back (undefined: none is). */
  private heldFrom: number | undefined;
  /** Group flushes issued. */
  commits = 0;

  private readonly ring: RingView;
  /** Each slot's data share, made once (not a new view per request). */
  private readonly shares: Uint8Array[];
  private served = 0;

  constructor(
    ring: RingView | SharedArrayBuffer,
    private readonly disk: SyncDisk,
    opts: ServeOptions = {},
  ) {
    if (!(ring instanceof RingView)) ring = new RingView(ring);
    this.ring = ring;
    this.shares = Array.from({ length: ring.nslots }, (_, slot) => (ring as RingView).share(slot));
    this.ctl = ring.ctl;
    this.i32 = ring.slotI32;
    this.f64 = ring.slotF64;
    this.now = ringClock(ring);
    this.spin = new SpinPolicy((opts.sizedSpinCapUs || opts.spinUs || DEFAULT_SERVER_SPIN_US) / 1000, opts.adaptiveSpin ?? true);
    this.sized = opts.sizedSpinCapUs ? new SizedSpin(opts.sizedSpinCapUs / 1000, 75) : undefined;
    this.waitMs = opts.waitTimeoutMs ?? 1000;
    this.durableWrites = opts.durableWrites ?? false;
    this.groupCommit = opts.groupCommit ?? true;
    const ctl = this.ctl;
    ctl[C.SERVER_ID] = opts.serverId ?? 0;
    ctl[C.READ_ONLY] = (disk as { readOnly?: boolean }).readOnly ? 1 : 0;
    ring.ctlF64[C.F64_IMAGE_SIZE] = disk.size;
    Atomics.store(ctl, C.OPEN_STATUS, 0);
    Atomics.store(ctl, C.SERVER_STATE, ServerState.READY);
    Atomics.notify(ctl, C.SERVER_STATE);
  }

  /** True once a CLOSE request was served or the loop stopped. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Requests served so far. */
  get requests(): number {
    return this.served;
  }

  /** ms spent spinning for the next request (with a sized spin; 0 otherwise). */
  get spunMs(): number {
    return this.sized?.spentMs ?? 0;
  }

  /** Serves the requests submitted so far (at most `max`), without waiting; returns how many (stops after a CLOSE). */
  serveAvailable(max = Infinity): number {
    const ctl = this.ctl;
    let n = 0;
    while (!this.isClosed && n < max) {
      const head = Atomics.load(ctl, C.SQ_HEAD);
      if (Atomics.load(ctl, C.SQ_TAIL) === head) break;
      this.serveNext(head);
      n++;
    }
    if (this.awaiting.length > 0) this.commit(Atomics.load(ctl, C.SQ_HEAD));
    return n;
  }

  /**
   * Serves the request at `head` and publishes its completion, or holds it for the group's flush (group
   * commit, open/serving-cache.ts): once a served request needs the image flushed before it completes (a FLUSH, or
   * a write when the loop makes writes durable), its completion and every later one are held while more
   * requests are in hand; when none is left (or a ring's worth is held) the image is flushed once and the
   * held completions are published together. Completions are published in order, so nothing served after a
   * durable request is visible before that flush either. Returns true for a CLOSE.
   */
  private serveNext(head: number): boolean {
    const ctl = this.ctl;
    const next = (head + 1) | 0;
    const slot = head & this.ring.mask;
    Atomics.store(ctl, C.SQ_HEAD, next);
    // Tell the spin policy when this request was submitted (it judges the last missed spin by it).
    const submitted = this.f64[slot * SLOT_F64 + SF.T_SUBMIT];
    this.spin.arrived(submitted);
    if (this.sized && this.lastEnd >= 0) this.sized.observe(submitted - this.lastEnd);
    // CLOSE flushes and closes the image: what waits for the group's flush is committed before it.
    if (this.awaiting.length > 0 && this.i32[slot * SLOT_I32 + S.OPCODE] === Op.CLOSE) this.commit(head);
    const outcome = this.serve(slot, head);
    this.served++;
    if (outcome === Outcome.AWAITS_COMMIT) this.awaiting.push(slot);
    if (this.awaiting.length > 0) {
      if (this.heldFrom === undefined) this.heldFrom = head;
      if (this.groupCommit && Atomics.load(ctl, C.SQ_TAIL) !== next && ((next - this.heldFrom) | 0) < this.ring.mask + 1) return false;
      this.commit(next);
    } else {
      this.publish(next);
    }
    if (outcome === Outcome.CLOSING) {
      Atomics.store(ctl, C.SERVER_STATE, ServerState.STOPPED);
      Atomics.notify(ctl, C.SERVER_STATE);
    }
    return outcome === Outcome.CLOSING;
  }

  /** Publishes the completions before submission number `next`: every plain store of serve() happens-before this store. */
  private publish(next: number): void {
    const ctl = this.ctl;
    Atomics.store(ctl, C.CQ_TAIL, next);
    if (Atomics.load(ctl, C.CLIENT_WAITING) !== 0) Atomics.notify(ctl, C.CQ_TAIL);
    this.lastEnd = this.now();
  }

  /**
   * The group's flush: one flush of the image for every held request that needs one, then the held
   * completions (up to submission number `next`) are published. A failed flush fails each of those requests
   * with its error; the others keep their own outcome.
   */
  private commit(next: number): void {
    let failure: unknown;
    let failed = false;
    try {
      this.disk.flush();
    } catch (e) {
      failure = e;
      failed = true;
    }
    this.commits++;
    const t = this.now();
    for (const slot of this.awaiting) {
      if (failed) this.fail(slot, this.i32[slot * SLOT_I32 + S.OPCODE], failure);
    }
    this.awaiting.length = 0;
    for (let seq = this.heldFrom ?? next; seq !== next; seq = (seq + 1) | 0) this.f64[(seq & this.ring.mask) * SLOT_F64 + SF.T_END] = t;
    this.heldFrom = undefined;
    this.publish(next);
  }

  /** The worker's loop: serves until a CLOSE request or STOP, sleeping in Atomics.wait when idle. */
  run(): ServeResult {
    const ctl = this.ctl;
    let head = Atomics.load(ctl, C.SQ_HEAD);
    if (this.isClosed) return { reason: "closed", requests: this.served };
    let justServed = false;
    for (;;) {
      let tail = Atomics.load(ctl, C.SQ_TAIL);
      if (tail === head) {
        if (Atomics.load(ctl, C.STOP) !== 0) break;
        // Bounded spin right after a request: back-to-back requests are picked up without a wake-up.
        const budget = justServed ? (this.sized ? Math.min(this.sized.budget(), this.spin.next()) : this.spin.next()) : 0;
        justServed = false;
        if (budget > 0) {
          const from = this.now();
          const until = from + budget;
          while ((tail = Atomics.load(ctl, C.SQ_TAIL)) === head && this.now() < until) {
            // spin
          }
          if (tail !== head) this.spin.hit();
          else this.spin.miss(this.now());
          this.sized?.spun(this.now() - from);
        }
        if (tail === head) {
          // Deferred work of the image (a scheme's pending copies) is done once no request has come for
          // IDLE_MS: the wait is that short while there is some.
          const idleWork = this.disk.hasIdleWork === true;
          Atomics.store(ctl, C.SERVER_SLEEPING, 1);
          let woke = "not-equal";
          if (Atomics.load(ctl, C.SQ_TAIL) === head && Atomics.load(ctl, C.STOP) === 0) {
            woke = Atomics.wait(ctl, C.SQ_TAIL, head, idleWork ? IDLE_MS : this.waitMs);
          }
          Atomics.store(ctl, C.SERVER_SLEEPING, 0);
          if (idleWork && woke === "timed-out" && Atomics.load(ctl, C.SQ_TAIL) === head && !this.isClosed) {
            try {
              this.disk.idle?.();
            } catch {
              // The next request reports the image's state (a corrupt image refuses it).
            }
          }
          continue;
        }
      }
      const closing = this.serveNext(head);
      head = (head + 1) | 0;
      justServed = true;
      if (closing) return { reason: "closed", requests: this.served };
    }
    // STOP: close the image (flushing it) and leave.
    if (!this.isClosed) {
      this.isClosed = true;
      try {
        this.disk.close();
      } catch {
        // nobody is left to tell; the image's dirty bit covers an incomplete close
      }
    }
    Atomics.store(ctl, C.SERVER_STATE, ServerState.STOPPED);
    Atomics.notify(ctl, C.SERVER_STATE);
    Atomics.notify(ctl, C.CQ_TAIL);
    return { reason: "stopped", requests: this.served };
  }

  /** Serves the request in `slot`: whether it was a CLOSE, or succeeded and waits for the group's flush. */
  private serve(slot: number, seq: number): Outcome {
    const b = slot * SLOT_I32;
    const fb = slot * SLOT_F64;
    const i32 = this.i32;
    const f64 = this.f64;
    f64[fb + SF.T_START] = this.now();
    const share = this.shares[slot]!;
    let status: number = Status.OK;
    let resultLen = 0;
    let resultTotal = 0;
    let resultToken = 0;
    let outcome = Outcome.DONE;
    const op = i32[b + S.OPCODE];
    try {
      const state = Atomics.load(i32, b + S.STATE);
      if (state !== SlotState.SUBMITTED) throw new ProtocolError(`slot ${slot} is in state ${state}, not SUBMITTED`);
      if (i32[b + S.SEQ] !== seq) throw new ProtocolError(`slot ${slot} holds request ${i32[b + S.SEQ]}, expected ${seq}`);
      Atomics.store(i32, b + S.STATE, SlotState.INFLIGHT);
      const length = i32[b + S.LENGTH] >>> 0;
      const flags = i32[b + S.FLAGS];
      const token = i32[b + S.TOKEN] >>> 0;
      const offset = f64[fb + SF.OFFSET];
      if (this.isClosed && op !== Op.NOP) throw new ClosedError("image is closed");
      let out: Uint8Array | undefined;
      switch (op) {
        case Op.NOP:
          break;
        case Op.READ:
          this.checkLength(length, share);
          if (flags & Flag.VMSTATE) this.need("readVmStateArea").call(this.disk, share.subarray(0, length), offset);
          else this.disk.readInto(share.subarray(0, length), offset);
          resultLen = resultTotal = length;
          break;
        case Op.WRITE:
          this.checkLength(length, share);
          if (flags & Flag.VMSTATE) this.need("writeVmStateArea").call(this.disk, offset, share.subarray(0, length));
          else this.disk.write(offset, share.subarray(0, length));
          if (this.durableWrites) outcome = Outcome.AWAITS_COMMIT;
          break;
        case Op.WRITE_ZEROES:
          this.disk.writeZeroes(offset, length, { unmap: (flags & Flag.UNMAP) !== 0 });
          if (this.durableWrites) outcome = Outcome.AWAITS_COMMIT;
          break;
        case Op.DISCARD:
          this.disk.discard(offset, length);
          if (this.durableWrites) outcome = Outcome.AWAITS_COMMIT;
          break;
        case Op.FLUSH:
          // The group's one flush (commit) covers it; without group commit, flushed here.
          if (this.groupCommit) outcome = Outcome.AWAITS_COMMIT;
          else this.disk.flush();
          break;
        case Op.CLOSE:
          this.isClosed = true;
          this.staged.clear();
          this.held.clear();
          outcome = Outcome.CLOSING;
          this.disk.close();
          break;
        case Op.SNAPSHOT_CREATE: {
          const args = this.args(share, length) as {
            name?: unknown;
            vmClockNsec?: number;
            dateMs?: number;
            vmStateToken?: number;
            vmStateLength?: number;
          };
          if (typeof args.name !== "string") throw new RequestError("snapshot create needs a name");
          const o: SnapshotCreateOptions = {};
          if (typeof args.vmClockNsec === "number") o.vmClockNsec = args.vmClockNsec;
          if (typeof args.dateMs === "number") o.date = new Date(args.dateMs);
          if (typeof args.vmStateToken === "number") {
            const state = this.takeStaged(args.vmStateToken);
            // A lost PUT must not produce a snapshot with a truncated VM state.
            if (state.length !== args.vmStateLength) {
              throw new ProtocolError(`VM state has ${state.length} bytes staged, ${args.vmStateLength} announced`);
            }
            o.vmState = state;
          }
          out = json(this.need("snapshotCreate").call(this.disk, args.name, o));
          break;
        }
        case Op.SNAPSHOT_APPLY: {
          const id = this.idArg(share, length);
          this.need("snapshotApply").call(this.disk, id);
          this.ring.ctlF64[C.F64_IMAGE_SIZE] = this.disk.size;
          out = json({ size: this.disk.size });
          break;
        }
        case Op.SNAPSHOT_DELETE:
          this.need("snapshotDelete").call(this.disk, this.idArg(share, length));
          break;
        case Op.SNAPSHOT_LIST:
          out = json(this.need("snapshotList").call(this.disk));
          break;
        case Op.READ_VMSTATE:
          out = this.need("readVmState").call(this.disk, this.idArg(share, length));
          break;
        case Op.RESIZE: {
          const args = this.args(share, length) as { size?: unknown };
          if (typeof args.size !== "number") throw new RequestError("resize needs a size");
          this.need("resize").call(this.disk, args.size);
          this.ring.ctlF64[C.F64_IMAGE_SIZE] = this.disk.size;
          out = json({ size: this.disk.size });
          break;
        }
        case Op.ALLOCATION: {
          const args = this.args(share, length) as { offset?: unknown; length?: unknown };
          if (typeof args.offset !== "number" || typeof args.length !== "number") throw new RequestError("allocation needs an offset and a length");
          out = json(this.need("allocation").call(this.disk, args.offset, args.length));
          break;
        }
        case Op.BLOCK_STATUS:
        case Op.ALLOCATION_DEPTH:
        case Op.DIRTY_EXTENTS:
          out = json(this.extents(op, this.args(share, length)));
          break;
        case Op.STATS:
          out = json(typeof this.disk.stats === "function" ? (this.disk.stats() ?? null) : null);
          break;
        case Op.PUT: {
          this.checkLength(length, share);
          let st = this.staged.get(token);
          if (!st) this.staged.set(token, (st = { parts: [], size: 0 }));
          if (offset !== st.size) throw new ProtocolError(`staged blob ${token}: piece at ${offset}, expected ${st.size}`);
          st.parts.push(share.slice(0, length));
          st.size += length;
          break;
        }
        case Op.GET: {
          this.checkLength(length, share);
          const blob = this.held.get(token);
          if (!blob) throw new ProtocolError(`no held result with token ${token}`);
          if (offset < 0 || offset + length > blob.length) {
            throw new ProtocolError(`held result ${token}: [${offset}, ${offset + length}) is outside its ${blob.length} bytes`);
          }
          share.set(blob.subarray(offset, offset + length));
          resultLen = resultTotal = length;
          if (offset + length === blob.length) this.held.delete(token);
          break;
        }
        default:
          throw new ProtocolError(`unknown opcode ${op}`);
      }
      // The other requests that change the image are made durable by the group's flush as well.
      if (this.durableWrites && (op === Op.RESIZE || op === Op.SNAPSHOT_CREATE || op === Op.SNAPSHOT_APPLY || op === Op.SNAPSHOT_DELETE)) {
        outcome = Outcome.AWAITS_COMMIT;
      }
      if (out) {
        resultTotal = out.length;
        resultLen = Math.min(out.length, share.length);
        share.set(out.subarray(0, resultLen));
        if (resultLen < resultTotal) {
          resultToken = this.nextToken++;
          if (this.nextToken > 0x7fffffff) this.nextToken = 1;
          this.held.set(resultToken, out);
        }
      }
    } catch (e) {
      this.fail(slot, op, e);
      // A CLOSE whose close failed still ends the loop (the image is closed either way).
      return outcome === Outcome.CLOSING ? Outcome.CLOSING : Outcome.DONE;
    }
    i32[b + S.STATUS] = status;
    i32[b + S.RESULT_LEN] = resultLen;
    i32[b + S.RESULT_TOTAL] = resultTotal;
    i32[b + S.RESULT_TOKEN] = resultToken;
    f64[fb + SF.T_END] = this.now();
    Atomics.store(i32, b + S.STATE, SlotState.DONE);
    return outcome;
  }

  /** Completes the request in `slot` (operation `op`) with the error `e`: its status and message. */
  private fail(slot: number, op: number, e: unknown): void {
    const b = slot * SLOT_I32;
    const status = statusOf(e);
    const what = OP_NAMES[op] ?? `op ${op}`;
    const msg = status === Status.PROTOCOL ? `ring protocol error in ${what}: ${messageOf(e, status)}` : messageOf(e, status);
    const n = writeText(this.ring.share(slot), msg);
    this.i32[b + S.STATUS] = status;
    this.i32[b + S.RESULT_LEN] = n;
    this.i32[b + S.RESULT_TOTAL] = n;
    this.i32[b + S.RESULT_TOKEN] = 0;
    this.f64[slot * SLOT_F64 + SF.T_END] = this.now();
    Atomics.store(this.i32, b + S.STATE, SlotState.DONE);
  }

  private checkLength(length: number, share: Uint8Array): void {
    if (length > share.length) throw new ProtocolError(`length ${length} exceeds the slot's ${share.length}-byte data share`);
  }

  private args(share: Uint8Array, length: number): Record<string, unknown> {
    this.checkLength(length, share);
    let v: unknown;
    try {
      v = JSON.parse(readText(share.subarray(0, length)));
    } catch {
      throw new ProtocolError("request arguments are not valid JSON");
    }
    if (v === null || typeof v !== "object") throw new ProtocolError("request arguments are not a JSON object");
    return v as Record<string, unknown>;
  }

  private idArg(share: Uint8Array, length: number): string {
    const id = this.args(share, length).id;
    if (typeof id !== "string") throw new RequestError("a snapshot id or name is needed");
    return id;
  }

  private takeStaged(token: number): Uint8Array {
    const st = this.staged.get(token);
    this.staged.delete(token);
    if (!st) return new Uint8Array(0); // an empty blob needs no PUT
    if (st.parts.length === 1) return st.parts[0];
    const all = new Uint8Array(st.size);
    let pos = 0;
    for (const p of st.parts) {
      all.set(p, pos);
      pos += p.length;
    }
    return all;
  }

  /**
   * Op.BLOCK_STATUS, Op.ALLOCATION_DEPTH, Op.DIRTY_EXTENTS: merged extents from `offset`, up to `length`
   * bytes or `maxExtents` extents (extents.ts).
   */
  private extents(op: number, args: Record<string, unknown>): unknown[] {
    const { offset, length, maxExtents, bitmap } = args;
    const what = OP_NAMES[op] ?? `op ${op}`;
    if (!isCount(offset) || !isCount(length) || !isCount(maxExtents) || maxExtents < 1) {
      throw new ProtocolError(`${what} needs an offset, a length and a number of extents`);
    }
    const size = this.disk.size;
    if (offset + length > size) {
      throw new RequestError(`${what} at offset ${offset}, length ${length} is past the end of the disk (${size} bytes)`);
    }
    if (op === Op.ALLOCATION_DEPTH) return extentsWire(depthExtents(this.disk, offset, length, maxExtents));
    if (op === Op.DIRTY_EXTENTS) {
      if (typeof bitmap !== "string") throw new ProtocolError(`${what} needs a bitmap name`);
      return extentsWire(dirtyExtents(this.disk, bitmap, offset, length, maxExtents));
    }
    return extentsWire(mergedBlockStatus(this.disk, offset, length, maxExtents));
  }

  private need<K extends "snapshotCreate" | "snapshotApply" | "snapshotDelete" | "snapshotList" | "readVmState" | "resize" | "allocation" | "readVmStateArea" | "writeVmStateArea">(
    name: K,
  ): NonNullable<SyncDisk[K]> {
    const f = this.disk[name];
    if (typeof f !== "function") throw new UnsupportedFeatureError(`this image does not support ${name}`);
    return f as NonNullable<SyncDisk[K]>;
  }
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function json(v: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(v === undefined ? null : v));
}
