import type { AsyncDisk, DiskDone, WriteData } from "../disk/async-disk.js";
import { writeLength } from "../disk/async-disk.js";

/**
 * A raw disk in memory (one Uint8Array), behind the asynchronous disk contract. Operations complete at the
 * next `poll` or on a later microtask, whichever comes first (or after `delayMs` when given), so callers see
 * real asynchrony; they report no timing. The guest floor's disk: polled from v86's run loop, as the
 * worker-served disk is, its completions reach the guest within the same slice, not after v86 yields.
 * Counts operations so a test can tell what reached the disk.
 */
export class MemoryAsyncDisk implements AsyncDisk {
  readonly bytes: Uint8Array;
  readonly counts = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0 };
  /** How many writes had completed when the last flush completed. */
  writesBeforeLastFlush = 0;

  constructor(
    size: number | Uint8Array,
    private readonly delayMs = 0,
  ) {
    this.bytes = typeof size === "number" ? new Uint8Array(size) : size;
  }

  get size(): number {
    return this.bytes.length;
  }

  private outside(offset: number, length: number): Error | undefined {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.bytes.length) {
      return new RangeError(`MemoryAsyncDisk: [${offset}, +${length}) outside a ${this.bytes.length}-byte disk`);
    }
    return undefined;
  }

  /** Completions due now, run by `poll` or on the next microtask, whichever comes first. */
  private readonly ready: (() => void)[] = [];
  private drainQueued = false;

  /** Runs `f` later (at the next `poll` or microtask, or after the delay). */
  private later(f: () => void): void {
    if (this.delayMs > 0) {
      setTimeout(f, this.delayMs);
      return;
    }
    this.ready.push(f);
    if (!this.drainQueued) {
      this.drainQueued = true;
      queueMicrotask(() => {
        this.drainQueued = false;
        this.runReady();
      });
    }
  }

  private runReady(): number {
    const batch = this.ready.splice(0);
    for (const f of batch) f();
    return batch.length;
  }

  /**
   * Runs the completions due now (those of requests made before this call), as a worker-served disk's poll
   * reaps its ring: a device polling from v86's run loop sees them complete there, within the slice.
   */
  poll(_spinMs: number): number {
    return this.runReady();
  }

  read(offset: number, length: number, done: DiskDone<Uint8Array>): void {
    const bad = this.outside(offset, length);
    this.later(() => {
      if (bad) return done(bad, undefined, undefined);
      this.counts.reads++;
      this.counts.bytesRead += length;
      done(undefined, this.bytes.slice(offset, offset + length), undefined);
    });
  }

  write(offset: number, data: WriteData, done: DiskDone): void {
    const length = writeLength(data);
    const bad = this.outside(offset, length);
    // The data is copied now: a device may pass views of guest memory valid only during this call (v86's
    // wasm memory detaches its old buffer when it grows).
    if (!bad) {
      let at = offset;
      for (const piece of data instanceof Uint8Array ? [data] : data) {
        this.bytes.set(piece, at);
        at += piece.length;
      }
    }
    this.later(() => {
      if (bad) return done(bad, undefined, undefined);
      this.counts.writes++;
      this.counts.bytesWritten += length;
      done(undefined, undefined, undefined);
    });
  }

  flush(done: DiskDone): void {
    this.later(() => {
      this.counts.flushes++;
      this.writesBeforeLastFlush = this.counts.writes;
      done(undefined, undefined, undefined);
    });
  }
}
