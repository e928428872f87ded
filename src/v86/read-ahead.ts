/**
 * ReadAhead: the IDE drive's read-ahead cache (hda-adapter.ts), as a real drive keeps one. When the guest
 * reads sequentially, the adapter reads the next window of the disk before the guest asks for it, and a
 * later guest read that the window covers is answered from it — at once, or when the window's read
 * completes — instead of going to the disk thread and back, one request at a time.
 *
 * Why it is exact: a window is read through the adapter's FIFO, so its data holds every write submitted
 * before it. A write submitted later that overlaps it makes it stale (`written`): guest reads already
 * waiting on it were submitted before that write and still get its data; no later read is answered from it.
 * A machine-state restore (loadvm) clears every window (`clear`), as the disk under them changed.
 *
 * This module decides and keeps; the adapter issues the reads. It knows nothing of v86.
 */

export type ReadDone = (data: Uint8Array) => void;

interface Waiter {
  start: number;
  length: number;
  cb: ReadDone;
  signal?: AbortSignal;
}

/** A range of the disk read ahead: `data` once its read completed. */
export interface Window {
  readonly offset: number;
  readonly end: number;
  data?: Uint8Array;
  /** A later write overlaps it: it serves the reads already waiting on it, and no other. */
  stale: boolean;
  waiters: Waiter[];
}

/** Windows kept at most (the one being read from and those ahead of it). */
const MAX_WINDOWS = 4;

export class ReadAhead {
  private windows: Window[] = [];
  /** Where the guest's last read ended: a read starting there is sequential. */
  private lastEnd = -1;

  constructor(
    /** Bytes read ahead at a time (one disk request). */
    readonly windowBytes: number,
    readonly diskSize: number,
    /** Bytes kept read (or being read) ahead of a sequential reader: a new window starts when less is. */
    readonly aheadBytes = 2 * windowBytes,
  ) {
    if (!(windowBytes > 0) || windowBytes % 512 !== 0) throw new RangeError(`read-ahead window must be a positive multiple of 512 bytes, got ${windowBytes}`);
    if (!(aheadBytes >= windowBytes)) throw new RangeError(`read-ahead of ${aheadBytes} bytes is less than its window of ${windowBytes}`);
  }

  /**
   * A guest read of [start, start + length): answered from a window — `cb` runs now when its data is here,
   * else when its read completes — and true; false when no window covers it (the caller reads the disk).
   */
  take(start: number, length: number, cb: ReadDone, signal?: AbortSignal): boolean {
    const end = start + length;
    const w = this.windows.find((x) => !x.stale && x.offset <= start && end <= x.end);
    if (!w) return false;
    if (w.data) cb(w.data.slice(start - w.offset, end - w.offset));
    else w.waiters.push({ start, length, cb, signal });
    return true;
  }

  /**
   * Told of every guest read (after `take`): when the guest reads sequentially, the windows to read so that
   * `aheadBytes` are ahead of it, which the caller must read (in order) and hand to `filled`/`failed`.
   */
  next(start: number, length: number): Window[] {
    const end = start + length;
    const sequential = start === this.lastEnd;
    this.lastEnd = end;
    // Windows the guest has read past are of no more use (unless reads still wait on them).
    this.windows = this.windows.filter((w) => w.end > start || w.waiters.length > 0);
    if (!sequential) return [];
    let from = end;
    for (let moved = true; moved; ) {
      moved = false;
      for (const w of this.windows) {
        if (!w.stale && w.offset <= from && w.end > from) {
          from = w.end;
          moved = true;
        }
      }
    }
    const opened: Window[] = [];
    while (from - end <= this.aheadBytes - this.windowBytes && from < this.diskSize) {
      if (this.windows.length >= MAX_WINDOWS) {
        const idle = this.windows.findIndex((w) => w.waiters.length === 0 && w.end <= end);
        if (idle < 0) break;
        this.windows.splice(idle, 1);
      }
      const w: Window = { offset: from, end: Math.min(from + this.windowBytes, this.diskSize), stale: false, waiters: [] };
      this.windows.push(w);
      opened.push(w);
      from = w.end;
    }
    return opened;
  }

  /** The window's read completed: the reads waiting on it are answered; it stays for later ones unless stale. */
  filled(w: Window, data: Uint8Array): void {
    const waiters = w.waiters;
    w.waiters = [];
    if (w.stale || !this.windows.includes(w)) this.drop(w);
    else w.data = data;
    for (const r of waiters) {
      if (r.signal?.aborted) continue; // the IDE was reset; nobody waits for it
      r.cb(data.slice(r.start - w.offset, r.start - w.offset + r.length));
    }
  }

  /** The window's read failed: it is dropped; returns how many guest reads waited on it (they fail too). */
  failed(w: Window): number {
    this.drop(w);
    const n = w.waiters.length;
    w.waiters = [];
    return n;
  }

  /** The guest wrote [start, start + length): no later read may be answered from a window it overlaps. */
  written(start: number, length: number): void {
    const end = start + length;
    for (const w of [...this.windows]) {
      if (w.offset >= end || w.end <= start) continue;
      if (w.data || w.waiters.length === 0) this.drop(w);
      else w.stale = true;
    }
  }

  /** Forget every window and its waiting reads (the machine state they belong to was replaced). */
  clear(): void {
    for (const w of this.windows) w.waiters = [];
    this.windows = [];
    this.lastEnd = -1;
  }

  private drop(w: Window): void {
    const i = this.windows.indexOf(w);
    if (i >= 0) this.windows.splice(i, 1);
  }
}
