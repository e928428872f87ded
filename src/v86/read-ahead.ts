/**
 * ReadAhead: sequential read-ahead for a disk device (the IDE drive, hda-adapter.ts; virtio-blk,
 * virtio-blk.ts) over an AsyncDisk that serves requests in call order (the worker ring).
 *
 * Why: a guest reading a file or a device front to back has one request in flight (an IDE drive has one
 * command; `dd` with O_DIRECT has one read), so it waits, per request, for the whole round trip to the
 * engine's thread (the doorbell, the engine, the reap), while that thread then sits idle as the guest copies
 * the data and asks for the next piece. With read-ahead, the next pieces are already being read on the
 * engine's thread while the guest works, and a request they cover is answered at once, from memory, as v86's
 * own in-memory disk answers every request.
 *
 * How:
 *  - A read that starts where the previous one ended is sequential. After it, units of the same length
 *    (at least an eighth of the window: small reads are not read ahead in as many small requests) are read
 *    ahead, back to back, until `windowBytes` past the end of the read are covered (or the disk ends). A
 *    unit is a plain disk read, issued after the guest's request, so the disk serves it after every request
 *    issued before it.
 *  - A read covered by units is answered from them: at once when they are in, else when they arrive.
 *    Units wholly behind the read leave the window.
 *  - A read that is not covered empties the window and goes to the disk.
 *
 * Consistency: a unit holds the disk's data as of its place in the disk's call order. The owner calls
 * `written(offset, length)` when it issues a write (or anything that changes data) to the disk, which drops
 * the window if it overlaps; a read issued after the write then never finds a unit issued before it. (A read
 * already waiting for a unit is answered from it: it was issued before the write.) `clear()` empties the
 * window, and sends the reads still waiting to the disk: for a disk changed beneath the device (a snapshot
 * applied by loadvm) and a restored machine state, whose owner drops those reads' callbacks anyway.
 *
 * Errors: a read waiting for a unit that failed is sent to the disk itself, so that an error reaches the
 * guest only for data it asked for.
 *
 * Buffers: the units' arrays are recycled (a fresh 1 MiB array per request cost the emulator's thread its
 * page faults at the first copy into it, more than the copy itself). So the array a read completes with is
 * a view valid only during its `done` callback, which must copy what it keeps — as both devices do (into
 * guest memory, or into the IDE drive's PIO buffer).
 */
import type { AsyncDisk, DiskDone } from "../disk/async-disk.js";

/** Read-ahead window default: how far past a sequential read the units reach. */
export const DEFAULT_READ_AHEAD_BYTES = 2 * 2 ** 20;
/** Arrays kept for reuse: the window's units (at most 8, see `unitFor`) and those being answered. */
const POOL_ARRAYS = 10;

interface Unit {
  readonly offset: number;
  readonly end: number;
  /** The array the unit is read into (from the pool). */
  readonly buffer: Uint8Array;
  data: Uint8Array | undefined;
  /** Still being read by the disk. */
  inFlight: boolean;
  failed: boolean;
  /** Out of the window (read past, or dropped). */
  left: boolean;
  /** Waiting reads that will be answered from it. */
  holds: number;
  recycled: boolean;
}

interface Waiter {
  readonly offset: number;
  readonly length: number;
  readonly units: Unit[];
  readonly done: DiskDone<Uint8Array>;
}

export class ReadAhead {
  /** The window: units in offset order, back to back. */
  private units: Unit[] = [];
  /** End of the last read; -1 before the first. */
  private lastEnd = -1;
  /** Reads waiting for units, in call order. */
  private waiters: Waiter[] = [];
  /** Arrays of units nobody holds any more: reused for new units. */
  private pool: Uint8Array[] = [];
  /** Where a read that spans units is gathered. */
  private scratch = new Uint8Array(0);
  /** Reads answered from units, and units read (for tests and diagnostics). */
  hits = 0;
  unitsIssued = 0;

  constructor(
    private readonly disk: AsyncDisk,
    readonly windowBytes: number = DEFAULT_READ_AHEAD_BYTES,
  ) {
    if (!(windowBytes > 0)) throw new RangeError(`read-ahead window must be positive, got ${windowBytes}`);
  }

  /** Bytes held or in flight ahead of the reader. */
  get aheadBytes(): number {
    return this.units.length === 0 ? 0 : this.units[this.units.length - 1]!.end - this.units[0]!.offset;
  }

  /** A guest read: answered from units when they cover it, else by the disk; then the window is topped up. */
  read(offset: number, length: number, done: DiskDone<Uint8Array>): void {
    const end = offset + length;
    const sequential = offset === this.lastEnd;
    const covering = this.covering(offset, end);
    if (covering) {
      this.hits++;
      this.lastEnd = end;
      for (const u of covering) u.holds++;
      this.waiters.push({ offset, length, units: covering, done });
      this.answer();
      // After the answer: the guest's next request is what matters now, the units after it can follow.
      this.topUp(end, this.unitFor(length));
      return;
    }
    this.empty();
    this.lastEnd = end;
    this.disk.read(offset, length, done);
    if (sequential) this.topUp(end, this.unitFor(length));
  }

  /** The owner issues a request that changes [offset, offset + length): the window goes if it overlaps. */
  written(offset: number, length: number): void {
    if (this.units.length === 0) return;
    const end = offset + length;
    if (end <= this.units[0]!.offset || offset >= this.units[this.units.length - 1]!.end) return;
    this.empty();
  }

  /** Empties the window and sends the waiting reads to the disk (see the top). */
  clear(): void {
    this.empty();
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) {
      this.unhold(w);
      this.disk.read(w.offset, w.length, w.done);
    }
  }

  /** Every unit leaves the window; the next read starts afresh. */
  private empty(): void {
    for (const u of this.units) this.leave(u);
    this.units = [];
    this.lastEnd = -1;
  }

  private leave(u: Unit): void {
    u.left = true;
    this.maybeRecycle(u);
  }

  private unhold(w: Waiter): void {
    for (const u of w.units) {
      u.holds--;
      this.maybeRecycle(u);
    }
  }

  /** A unit's array goes back to the pool once it is out of the window, read, and held by nobody. */
  private maybeRecycle(u: Unit): void {
    if (!u.left || u.holds > 0 || u.inFlight || u.recycled) return;
    u.recycled = true;
    this.pool.push(u.buffer);
    // The smallest goes: a large array serves any unit (a pool kept full of a boot's small arrays served
    // none of a 1 MiB reader's units).
    if (this.pool.length > POOL_ARRAYS) {
      let smallest = 0;
      for (let i = 1; i < this.pool.length; i++) if (this.pool[i]!.length < this.pool[smallest]!.length) smallest = i;
      this.pool[smallest] = this.pool[this.pool.length - 1]!;
      this.pool.pop();
    }
  }

  /** An array of `length` bytes from the pool (the smallest that fits), else a new one. */
  private buffer(length: number): Uint8Array {
    let best = -1;
    for (let i = 0; i < this.pool.length; i++) {
      const b = this.pool[i]!;
      if (b.length >= length && (best < 0 || b.length < this.pool[best]!.length)) best = i;
    }
    if (best < 0) return new Uint8Array(length);
    const b = this.pool[best]!;
    this.pool[best] = this.pool[this.pool.length - 1]!;
    this.pool.pop();
    return b;
  }

  /** The units that cover [offset, end), from the one holding `offset`; undefined when they do not. */
  private covering(offset: number, end: number): Unit[] | undefined {
    const units = this.units;
    let i = 0;
    while (i < units.length && units[i]!.end <= offset) i++;
    if (i === units.length || units[i]!.offset > offset) return undefined;
    let j = i;
    while (units[j]!.end < end) {
      if (++j === units.length) return undefined;
    }
    const covering = units.slice(i, j + 1);
    if (covering.some((u) => u.failed)) return undefined;
    // Units behind the read leave the window; the last covering one stays if it holds more than the read.
    const keep = units[j]!.end === end ? j + 1 : j;
    for (let k = 0; k < keep; k++) this.leave(units[k]!);
    this.units = units.slice(keep);
    return covering;
  }

  /** The size of the units read ahead of reads of `length` bytes. */
  private unitFor(length: number): number {
    return Math.max(length, Math.ceil(this.windowBytes / 8 / 512) * 512);
  }

  /** Issues units of `unit` bytes after the last one (or after `from`) until the window is covered. */
  private topUp(from: number, unit: number): void {
    const size = this.disk.size;
    let at = this.units.length > 0 ? this.units[this.units.length - 1]!.end : from;
    while (at < size && at - from < this.windowBytes) {
      const end = Math.min(at + unit, size);
      const buffer = this.buffer(end - at);
      const u: Unit = { offset: at, end, buffer, data: undefined, inFlight: true, failed: false, left: false, holds: 0, recycled: false };
      this.units.push(u);
      this.unitsIssued++;
      const into = buffer.length === end - at ? buffer : buffer.subarray(0, end - at);
      this.disk.read(at, end - at, (err, data) => this.arrived(u, err, data), true, into);
      at = end;
    }
  }

  private arrived(u: Unit, err: Error | undefined, data: Uint8Array | undefined): void {
    u.inFlight = false;
    if (err || data?.length !== u.end - u.offset) {
      u.failed = true;
      // The window ends before the failed unit: a read past it goes to the disk.
      const at = this.units.indexOf(u);
      if (at >= 0) {
        for (const x of this.units.slice(at)) this.leave(x);
        this.units = this.units.slice(0, at);
      }
    } else {
      u.data = data;
    }
    this.maybeRecycle(u);
    this.answer();
  }

  /** Answers, in call order, the waiting reads whose units are all in. */
  private answer(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      if (w.units.some((u) => u.failed)) {
        this.waiters.shift();
        this.unhold(w);
        this.disk.read(w.offset, w.length, w.done);
        continue;
      }
      if (w.units.some((u) => u.data === undefined)) return;
      this.waiters.shift();
      try {
        w.done(undefined, this.gather(w), undefined);
      } finally {
        // `done` has copied what it keeps: the units it used up may be reused.
        this.unhold(w);
      }
    }
  }

  /** The read's bytes from its units: a view of the unit when one holds them. */
  private gather(w: Waiter): Uint8Array {
    const end = w.offset + w.length;
    if (w.units.length === 1) {
      const u = w.units[0]!;
      return u.data!.subarray(w.offset - u.offset, end - u.offset);
    }
    // Several units: gathered into one array kept for the purpose (a view valid during `done`, as above).
    if (this.scratch.length < w.length) this.scratch = new Uint8Array(w.length);
    const out = this.scratch.subarray(0, w.length);
    for (const u of w.units) {
      const from = Math.max(u.offset, w.offset);
      const to = Math.min(u.end, end);
      out.set(u.data!.subarray(from - u.offset, to - u.offset), from - w.offset);
    }
    return out;
  }
}
