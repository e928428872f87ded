/**
 * The request ring: one SharedArrayBuffer per open image, shared by one CLIENT (the caller's thread, which
 * must never block) and one SERVER (the worker that owns the image and runs the synchronous engine).
 *
 * ## Layout (all offsets in bytes; all integers little-endian, i.e. platform order of typed arrays)
 *
 * ```
 * 0                      CONTROL AREA (256 bytes), viewed as Int32Array `ctl` (index = byte/4)
 *   ctl[0]  MAGIC           0x776f6372 ("rcow")                  creator, once
 *   ctl[1]  VERSION         RING_VERSION                         creator, once
 *   ctl[2]  NSLOTS          N, a power of two, 1..1024           creator, once
 *   ctl[3]  SLOT_DATA       C = bytes of data share per slot     creator, once (multiple of 4096)
 *   ctl[4]  DATA_AREA       byte offset of the data area         creator, once
 *   --- client-written line (bytes 64..127) ---
 *   ctl[16] SQ_TAIL         submissions published (free-running int32, wraps)       client; Atomics
 *   ctl[17] CQ_HEAD         completions consumed by the client (informational)      client; Atomics
 *   ctl[18] STOP            1 = server must close the image and leave its loop      client (or pool); Atomics
 *   ctl[19] CLIENT_WAITING  1 = client has an Atomics.waitAsync pending on CQ_TAIL  client; Atomics
 *   f64 @80 CLOCK_BASE      client's performance.timeOrigin (ms since the epoch)    creator, once
 *   --- server-written line (bytes 128..191) ---
 *   ctl[32] SQ_HEAD         submissions taken by the server                         server; Atomics
 *   ctl[33] CQ_TAIL         completions published (free-running int32)              server; Atomics
 *   ctl[34] SERVER_STATE    NEW 0 / READY 1 / OPEN_FAILED 2 / STOPPED 3 / CRASHED 4 server; Atomics
 *   ctl[35] SERVER_SLEEPING 1 = server is (about to be) in Atomics.wait on SQ_TAIL  server; Atomics
 *   ctl[36] SERVER_ID       worker thread id (Node) or 0                            server, before READY
 *   ctl[37] OPEN_STATUS     status code of the open (0 or an error code)            server, before READY/OPEN_FAILED
 *   ctl[38] OPEN_MSG_LEN    bytes of open error message in slot 0's data share      server, before OPEN_FAILED
 *   ctl[39] READ_ONLY       1 = image opened read-only                               server, before READY
 *   f64 @160 IMAGE_SIZE     virtual size of the image in bytes                      server, before READY (and on apply)
 *
 * 256                    SLOT AREA: N slots of 128 bytes, slot i at 256 + 128*i
 *   client-written line (slot bytes 0..63)
 *     i32 +0   OPCODE        Op.*
 *     i32 +4   SEQ           submission number (low 32 bits) — sanity check only
 *     i32 +8   LENGTH        u32: bytes of input in the data share (write, put, JSON args) or bytes asked
 *                            for (read; get) or length of the range (write-zeroes, discard)
 *     i32 +12  FLAGS         Flag.* (UNMAP for write-zeroes; VMSTATE for read/write of the VM-state area)
 *     i32 +16  TOKEN         u32: staged-blob token (put/get, vm state of snapshot create)
 *     i32 +20  DATA_OFFSET   byte offset of this slot's data share (creator, once)
 *     i32 +24  DATA_CAP      C (creator, once)
 *     f64 +32  OFFSET        byte offset on the virtual disk (exact integer < 2^53), or blob offset
 *     f64 +40  T_SUBMIT      client clock, when the client published the slot
 *   server-written line (slot bytes 64..127)
 *     i32 +64  STATE         FREE 0 → SUBMITTED 1 (client) → INFLIGHT 2 → DONE 3 (server) → FREE (client); Atomics
 *     i32 +68  STATUS        Status.* (0 = OK, negative = error class)
 *     i32 +72  RESULT_LEN    u32: bytes of result in the data share (read data, JSON, error message UTF-8)
 *     i32 +76  RESULT_TOTAL  u32: total bytes of the result; > RESULT_LEN when the rest is held by the
 *                            server under RESULT_TOKEN and must be fetched with GET requests
 *     i32 +80  RESULT_TOKEN  u32: token of the held result (0 = none)
 *     f64 +96  T_START       client clock, when the server began the request
 *     f64 +104 T_END         client clock, when the server finished it (just before publishing)
 *
 * DATA_AREA              N data shares of C bytes each, share i at DATA_AREA + C*i (DATA_AREA is 4096-aligned)
 * ```
 *
 * ## Protocol
 *
 * Slots are used in submission order: the request with submission number `s` lives in slot `s mod N`.
 * The server serves requests strictly in submission order and publishes completions in the same order, so
 * completion number `c` is in slot `c mod N` as well, and a slot is free again once its completion has been
 * consumed. Per-image FIFO order (read-after-write, write-after-write) follows.
 *
 * Submission (client): pick slot `SQ_TAIL mod N` — only if `SQ_TAIL - consumed < N` (else the ring is full:
 * the client queues the request in its own memory; that is the backpressure). Write the client line and the
 * input bytes into the slot's data share with plain stores, `Atomics.store(STATE, SUBMITTED)`, then
 * `Atomics.store(SQ_TAIL, SQ_TAIL + 1)`. Several slots may be published before one wake-up. Then, only if
 * `Atomics.load(SERVER_SLEEPING) == 1`, `Atomics.notify(ctl, SQ_TAIL)`.
 *
 * Service (server): when `SQ_HEAD != SQ_TAIL`: `Atomics.store(SQ_HEAD, head + 1)`, STATE := INFLIGHT, read the
 * client line, run the request, write STATUS / RESULT_* / output bytes with plain stores, T_END, STATE := DONE,
 * then `Atomics.store(CQ_TAIL, tail + 1)`, then, only if `Atomics.load(CLIENT_WAITING) == 1`,
 * `Atomics.notify(ctl, CQ_TAIL)`.
 *
 * Memory ordering: JavaScript Atomics are sequentially consistent and an Atomics.store/load pair
 * synchronises: every plain store made before `Atomics.store(SQ_TAIL)` (resp. `CQ_TAIL`) is visible to the
 * other side once its `Atomics.load` of that word returns the new value. Each index word has exactly one
 * writer. The sleep flags follow Dekker's pattern, which SC atomics make sound: the server stores
 * SERVER_SLEEPING := 1 and then re-reads SQ_TAIL before `Atomics.wait(ctl, SQ_TAIL, head)`; the client stores
 * SQ_TAIL and then reads SERVER_SLEEPING. Either the server sees the new tail or the client sees the flag and
 * notifies; `Atomics.wait` itself returns at once when SQ_TAIL no longer equals `head`. The same holds for
 * CLIENT_WAITING / CQ_TAIL with `Atomics.waitAsync`.
 *
 * Waiting: the server spins for a bounded time (at most 50 µs by default) after each request before it
 * sleeps in `Atomics.wait(ctl, SQ_TAIL, head, 1000 ms)`, re-checking STOP after each wake. The client spins
 * for a bounded time (at most 50 µs per completion and 200 µs per turn by default) after submitting, then
 * uses `Atomics.waitAsync` on CQ_TAIL — never a blocking wait. Both spins are adaptive (SpinPolicy below):
 * when the two threads share a core, a spin only delays the other side, so a spin that misses and is
 * followed at once by the awaited event halves the budget (down to 0, with a periodic probe). The client's
 * maximum spin must outlast a futex wake-up of the server (5-30 µs on a small VM); otherwise a sleeping
 * server and a client parked in waitAsync keep missing each other. An idle image costs one wake-up per
 * second and no spinning.
 *
 * Completion: the client reads completions `consumed .. CQ_TAIL-1` in order, copies the output out of the
 * data share, stores STATE := FREE, advances `consumed` (and CQ_HEAD), and can reuse the slot.
 *
 * Errors: a failed request has STATUS < 0 and its message (UTF-8, truncated to C bytes) in the data share,
 * RESULT_LEN bytes long. Nothing is ever thrown across the boundary; the client rebuilds an Error of the
 * matching class (RequestError, SnapshotError, ...).
 *
 * Splitting (client): a read or write longer than C is split into chunks that end at multiples of C on the
 * virtual disk (so chunk boundaries stay cluster-aligned), each in its own slot, published consecutively in
 * FIFO order. Write-zeroes and discard carry no data; they are split at multiples of 2^30 only because
 * LENGTH is a u32. A split request fails as a whole with the first chunk error; chunks before it stay done.
 *
 * Large payloads (snapshot VM state, big JSON results): input larger than C is staged with PUT requests
 * (TOKEN = a client-chosen token, OFFSET = position in the blob, data in the share) and then named by the
 * request that consumes it (snapshot create: TOKEN). A result larger than C is returned partially: the server
 * keeps the whole result under RESULT_TOKEN with RESULT_TOTAL set, and the client fetches the rest with GET
 * requests (TOKEN, OFFSET, LENGTH); the server drops the result when its last byte has been fetched.
 *
 * Open handshake: the server opens the image, writes SERVER_ID, READ_ONLY, IMAGE_SIZE, then
 * `SERVER_STATE := READY` and `Atomics.notify(ctl, SERVER_STATE)`; on failure it writes OPEN_STATUS and the
 * message into slot 0's data share, then `SERVER_STATE := OPEN_FAILED`. Close: a CLOSE request flushes and
 * closes the image; after its completion the server stores `SERVER_STATE := STOPPED` and returns.
 *
 * Clock: T_* are milliseconds on the client's `performance.now()` scale. The server converts with
 * `performance.now() + (performance.timeOrigin - CLOCK_BASE)`; the two origins come from the same system
 * clock, so the skew between threads is at most a few microseconds.
 */
import { percentile as percentileOf } from "../stats/latency.js";

export const RING_MAGIC = 0x776f6372;
export const RING_VERSION = 1;

/** Control-area Int32 indices. */
export const C = {
  MAGIC: 0,
  VERSION: 1,
  NSLOTS: 2,
  SLOT_DATA: 3,
  DATA_AREA: 4,
  SQ_TAIL: 16,
  CQ_HEAD: 17,
  STOP: 18,
  CLIENT_WAITING: 19,
  /** Float64 index of CLOCK_BASE (byte 80). */
  F64_CLOCK_BASE: 10,
  SQ_HEAD: 32,
  CQ_TAIL: 33,
  SERVER_STATE: 34,
  SERVER_SLEEPING: 35,
  SERVER_ID: 36,
  OPEN_STATUS: 37,
  OPEN_MSG_LEN: 38,
  READ_ONLY: 39,
  /** Float64 index of IMAGE_SIZE (byte 160). */
  F64_IMAGE_SIZE: 20,
} as const;

export const CONTROL_BYTES = 256;
export const SLOT_BYTES = 128;

/** Slot field offsets, in Int32 units from the slot's first Int32. */
export const S = {
  OPCODE: 0,
  SEQ: 1,
  LENGTH: 2,
  FLAGS: 3,
  TOKEN: 4,
  DATA_OFFSET: 5,
  DATA_CAP: 6,
  STATE: 16,
  STATUS: 17,
  RESULT_LEN: 18,
  RESULT_TOTAL: 19,
  RESULT_TOKEN: 20,
} as const;
/** Slot field offsets, in Float64 units from the slot's first Float64. */
export const SF = {
  OFFSET: 4,
  T_SUBMIT: 5,
  T_START: 12,
  T_END: 13,
} as const;

export const SlotState = {
  FREE: 0,
  SUBMITTED: 1,
  INFLIGHT: 2,
  DONE: 3,
} as const;

export const ServerState = {
  NEW: 0,
  READY: 1,
  OPEN_FAILED: 2,
  STOPPED: 3,
  CRASHED: 4,
} as const;

export const Op = {
  NOP: 0,
  READ: 1,
  WRITE: 2,
  WRITE_ZEROES: 3,
  DISCARD: 4,
  FLUSH: 5,
  SNAPSHOT_CREATE: 6,
  SNAPSHOT_APPLY: 7,
  SNAPSHOT_DELETE: 8,
  SNAPSHOT_LIST: 9,
  STATS: 10,
  CLOSE: 11,
  /** Stage a piece of an input blob (TOKEN, OFFSET = position, data). */
  PUT: 12,
  /** Fetch a piece of a held result (TOKEN, OFFSET = position, LENGTH). */
  GET: 13,
  /** Read a snapshot's VM state (JSON args {id}); the result is the raw bytes. */
  READ_VMSTATE: 14,
  /**
   * Allocation status of a range (JSON args {offset, length, maxExtents}); the result is JSON: an array of
   * [length, zero 0|1, data 0|1] extents from `offset` on, merged, covering at most `length` bytes.
   */
  BLOCK_STATUS: 15,
  /** Change the virtual size (JSON args {size}); the result is JSON {size}, IMAGE_SIZE is updated first. */
  RESIZE: 16,
  /** Which parts of a range the image allocates itself (JSON args {offset, length}); JSON [{allocated, length}]. */
  ALLOCATION: 17,
  /**
   * Allocation depth of a range (JSON args {offset, length, maxExtents}); JSON [length, depth] extents from
   * `offset` on, merged: 0 unallocated, 1 the image, 2 its backing file... (qemu:allocation-depth).
   */
  ALLOCATION_DEPTH: 18,
  /**
   * A persistent dirty bitmap over a range (JSON args {bitmap, offset, length, maxExtents}); JSON
   * [length, dirty 0|1] extents from `offset` on, merged (qemu:dirty-bitmap:NAME).
   */
  DIRTY_EXTENTS: 19,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

export const OP_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Op).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, "-")]),
);

export const Flag = {
  UNMAP: 1,
  /** READ / WRITE: OFFSET is a position in the active layer's VM-state area, not on the disk. */
  VMSTATE: 2,
} as const;

/** Request status codes. 0 is success; each negative code names the error class the client rebuilds. */
export const Status = {
  OK: 0,
  REQUEST: -1,
  SNAPSHOT: -2,
  CLOSED: -3,
  FORMAT: -4,
  UNSUPPORTED: -5,
  IO: -6,
  PROTOCOL: -7,
  INTERNAL: -8,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** Largest LENGTH of a write-zeroes or discard chunk (split points are multiples of it). */
export const MAX_RANGE_CHUNK = 2 ** 30;

export interface RingOptions {
  /** Number of request slots (power of two). Default 16. */
  slots?: number;
  /** Data share per slot in bytes (multiple of 4096). Default 256 KiB. */
  slotDataBytes?: number;
}

export const DEFAULT_SLOTS = 16;
export const DEFAULT_SLOT_DATA_BYTES = 256 * 1024;

/** Allocates and initialises a ring. */
export function createRing(opts: RingOptions = {}): SharedArrayBuffer {
  const n = opts.slots ?? DEFAULT_SLOTS;
  const cap = opts.slotDataBytes ?? DEFAULT_SLOT_DATA_BYTES;
  if (!Number.isInteger(n) || n < 1 || n > 1024 || (n & (n - 1)) !== 0) {
    throw new RangeError(`ring slots must be a power of two between 1 and 1024, not ${n}`);
  }
  if (!Number.isInteger(cap) || cap < 4096 || cap % 4096 !== 0 || cap > 2 ** 30) {
    throw new RangeError(`ring slot data size must be a multiple of 4096 between 4 KiB and 1 GiB, not ${cap}`);
  }
  const dataArea = alignUp(CONTROL_BYTES + n * SLOT_BYTES, 4096);
  const sab = new SharedArrayBuffer(dataArea + n * cap);
  const ctl = new Int32Array(sab, 0, CONTROL_BYTES / 4);
  ctl[C.MAGIC] = RING_MAGIC;
  ctl[C.VERSION] = RING_VERSION;
  ctl[C.NSLOTS] = n;
  ctl[C.SLOT_DATA] = cap;
  ctl[C.DATA_AREA] = dataArea;
  new Float64Array(sab, 0, CONTROL_BYTES / 8)[C.F64_CLOCK_BASE] = performance.timeOrigin;
  const i32 = new Int32Array(sab, CONTROL_BYTES, (n * SLOT_BYTES) / 4);
  for (let i = 0; i < n; i++) {
    const b = (i * SLOT_BYTES) / 4;
    i32[b + S.DATA_OFFSET] = dataArea + i * cap;
    i32[b + S.DATA_CAP] = cap;
  }
  return sab;
}

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** Typed views on a ring, shared by both sides. */
export class RingView {
  readonly sab: SharedArrayBuffer;
  readonly ctl: Int32Array;
  readonly ctlF64: Float64Array;
  /** Int32 view on the slot area; slot i's fields start at i * SLOT_I32. */
  readonly slotI32: Int32Array;
  /** Float64 view on the slot area; slot i's fields start at i * SLOT_F64. */
  readonly slotF64: Float64Array;
  readonly bytes: Uint8Array;
  readonly nslots: number;
  readonly mask: number;
  readonly slotData: number;
  readonly dataArea: number;

  constructor(sab: SharedArrayBuffer) {
    if (!(sab instanceof SharedArrayBuffer)) throw new TypeError("ring must be a SharedArrayBuffer");
    this.sab = sab;
    this.ctl = new Int32Array(sab, 0, CONTROL_BYTES / 4);
    this.ctlF64 = new Float64Array(sab, 0, CONTROL_BYTES / 8);
    if (this.ctl[C.MAGIC] !== RING_MAGIC || this.ctl[C.VERSION] !== RING_VERSION) {
      throw new Error("not a refcow request ring (bad magic or version)");
    }
    this.nslots = this.ctl[C.NSLOTS];
    this.mask = this.nslots - 1;
    this.slotData = this.ctl[C.SLOT_DATA];
    this.dataArea = this.ctl[C.DATA_AREA];
    this.slotI32 = new Int32Array(sab, CONTROL_BYTES, (this.nslots * SLOT_BYTES) / 4);
    this.slotF64 = new Float64Array(sab, CONTROL_BYTES, (this.nslots * SLOT_BYTES) / 8);
    this.bytes = new Uint8Array(sab);
  }

  /** Byte view of slot i's data share (`len` bytes, default all of it). */
  share(slot: number, len = this.slotData): Uint8Array {
    return new Uint8Array(this.sab, this.dataArea + slot * this.slotData, len);
  }

  /** Offset of slot i's data share in `bytes`. */
  shareOffset(slot: number): number {
    return this.dataArea + slot * this.slotData;
  }
}

export const SLOT_I32 = SLOT_BYTES / 4;
export const SLOT_F64 = SLOT_BYTES / 8;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Writes `text` as UTF-8 into `dst` (truncating at a character boundary); returns the bytes written. */
export function writeText(dst: Uint8Array, text: string): number {
  // encodeInto refuses SharedArrayBuffer views in some engines: encode then copy.
  let enc = encoder.encode(text);
  if (enc.length > dst.length) {
    let end = dst.length;
    while (end > 0 && (enc[end] & 0xc0) === 0x80) end--; // do not cut a multi-byte character
    enc = enc.subarray(0, end);
  }
  dst.set(enc);
  return enc.length;
}

/** Decodes UTF-8 from a (possibly shared) view. */
export function readText(src: Uint8Array): string {
  // TextDecoder refuses SharedArrayBuffer views: copy first.
  return decoder.decode(src.buffer instanceof SharedArrayBuffer ? src.slice() : src);
}

/** Clock on the client's performance.now() scale, for the side that owns `ring`. */
export function ringClock(view: RingView): () => number {
  const delta = performance.timeOrigin - view.ctlF64[C.F64_CLOCK_BASE];
  if (delta === 0) return () => performance.now();
  return () => performance.now() + delta;
}

/** Splits [offset, offset+length) into pieces that end at multiples of `unit` (absolute). */
export function splitRange(offset: number, length: number, unit: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const next = Math.min(end, Math.floor(pos / unit) * unit + unit);
    out.push([pos, next - pos]);
    pos = next;
  }
  return out;
}

/**
 * Adaptive bounded spinning, used by both sides. Spinning pays when the two threads run on different cores:
 * the other side's answer arrives within the spin and the wake-up is saved. When they share a core (an
 * oversubscribed machine), spinning is harmful: the other side cannot run until the spin ends, so each
 * spin is a pure delay. The policy tells the two cases apart by what happens after a spin that missed: if
 * the awaited event then happens within `CONTENDED_MS` of the spin's end, the spin most likely held the
 * other side off, and the budget is halved (down to 0). A spin that hits doubles the budget again (up to
 * the maximum); with a budget of 0, one wait in `PROBE_EVERY` probes with the maximum.
 * Times are ms on one clock (the ring clock).
 */
export class SpinPolicy {
  static readonly CONTENDED_MS = 0.015;
  static readonly PROBE_EVERY = 64;
  private budgetMs: number;
  private missEnd = -1;
  private sinceProbe = 0;

  /** `adaptive: false` keeps the budget at the maximum. */
  constructor(
    readonly maxMs: number,
    readonly adaptive = true,
  ) {
    this.budgetMs = maxMs;
  }

  /** Current budget, in ms. */
  get budget(): number {
    return this.budgetMs;
  }

  /** Budget for the next spin, in ms (0: do not spin). */
  next(): number {
    if (this.budgetMs > 0 || this.maxMs <= 0) return this.budgetMs;
    if (++this.sinceProbe < SpinPolicy.PROBE_EVERY) return 0;
    this.sinceProbe = 0;
    return this.maxMs;
  }

  /** The spin saw the event. */
  hit(): void {
    this.missEnd = -1;
    this.budgetMs = Math.min(this.maxMs, Math.max(this.budgetMs * 2, this.maxMs / 4));
  }

  /** The spin ran out at `end` (ms) without the event. */
  miss(end: number): void {
    this.missEnd = end;
  }

  /** The awaited event happened at `at` (ms, the other side's timestamp), after a sleep. */
  arrived(at: number): void {
    if (this.missEnd < 0 || !this.adaptive) return;
    const d = at - this.missEnd;
    this.missEnd = -1;
    if (d >= -SpinPolicy.CONTENDED_MS && d < SpinPolicy.CONTENDED_MS) {
      this.budgetMs = this.budgetMs / 2 < 0.001 ? 0 : this.budgetMs / 2;
    }
  }
}

/**
 * A spin budget sized from what was observed: the client waits for the server's service time, the server
 * for the gap until the client's next request. The budget is a high quantile of the last `window` samples
 * plus a margin, so that most waits end inside the spin; when that exceeds `capMs`, the budget is 0: a spin
 * that would mostly run out burns a core for nothing, so the waiting side sleeps at once. Nothing is spun
 * before the first samples, nor once the side is idle (a spin only ever follows a request).
 * Times are ms.
 */
export class SizedSpin {
  /** The caps refcow uses: the client's spin for a completion (a v86 frame), the server's for the next request. */
  static readonly CLIENT_CAP_US = 1000;
  static readonly SERVER_CAP_US = 200;
  static readonly MARGIN = 1.25;
  static readonly SLACK_MS = 0.02;
  private readonly samples: Float64Array;
  private count = 0;
  private next = 0;
  /** Total ms spun by the owner (it adds what it spins: see `spun`). */
  spentMs = 0;

  constructor(
    readonly capMs: number,
    /** The percentile of the samples the budget covers (src/stats's nearest rank), 0..100. */
    readonly percentile = 90,
    window = 32,
  ) {
    this.samples = new Float64Array(window);
  }

  observe(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) return;
    this.samples[this.next] = ms;
    this.next = (this.next + 1) % this.samples.length;
    if (this.count < this.samples.length) this.count++;
  }

  /** The budget for the next spin, ms (0: do not spin). */
  budget(): number {
    if (this.count < 4 || this.capMs <= 0) return 0;
    const q = percentileOf(Array.from(this.samples.subarray(0, this.count)), this.percentile);
    const b = q * SizedSpin.MARGIN + SizedSpin.SLACK_MS;
    return b > this.capMs ? 0 : b;
  }

  /** Records `ms` spun. */
  spun(ms: number): void {
    if (ms > 0) this.spentMs += ms;
  }
}
