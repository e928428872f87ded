/**
 * The asynchronous disk contract: what a caller that must never block (an emulator's thread, the v86 disk
 * devices) asks of a disk. Implementations: the worker-served image (src/worker/served-async-disk.ts, over
 * the request ring), MemoryAsyncDisk and ZeroAsyncDisk (src/v86) for development and tests.
 *
 * Every operation completes through ONE callback, `done(err, value, timing)`, which carries the disk's
 * report of how long the request took (`DiskTiming`): there is no side field to read afterwards. A disk that
 * knows nothing of its timing passes `undefined`. `done` may run synchronously (from inside `poll()`, or a
 * disk that completes at once) or later; it runs exactly once. `asPromise` turns one call into a promise
 * for callers that prefer one.
 *
 * Contract:
 *  - `size` is the virtual size in bytes.
 *  - `read(offset, length, done, background, into)` completes with exactly `length` bytes, an array the
 *    caller may keep. `background`: nobody waits for it now (a device's read-ahead), so no spinning for it.
 *    `into`: an array of `length` bytes to read into (a caller that recycles its buffers); a disk may
 *    complete with another array instead.
 *  - `write(offset, data, done)`: `data` is one buffer or a scatter-gather list of buffers written one
 *    after the other from `offset` (a virtio request's segments of guest memory, viewed, not copied). The
 *    disk may read `data` at any time until `done` runs; the caller must not change it meanwhile.
 *    `background`: nobody waits for this completion now (a device's write cache already told the guest), so
 *    the transport should not spend the caller's thread spinning for it; and the caller may reuse `data` as
 *    soon as `write` returns (the disk takes its own copy before returning).
 *  - `flush(done)` completes when every write that completed before it was called is durable (what
 *    "durable" means is the disk's cache mode: writethrough, writeback or unsafe).
 *  - `discard` and `writeZeroes` are optional: a disk without them cannot free or zero ranges cheaply.
 *  - `poll(spinMs)`, optional, runs the callbacks of the completions ready now (spinning up to `spinMs` for
 *    one when none is) and returns how many ran; `spinBudgetMs` is how long a wait for the request in flight
 *    is worth spinning. A disk without `poll` completes on its own (a microtask, a timer).
 *  - Requests are served in call order per disk (the worker ring is FIFO); callers that need ordering
 *    beyond that (a flush after the writes before it) keep it themselves.
 */

/** How long a request took, as the disk saw it. */
export interface DiskTiming {
  /** The backend's own time for the request (the engine in its worker), ms; undefined when unknown. */
  readonly serviceMs: number | undefined;
  /** Submission to completion at the caller's end of the disk's transport, the service included, ms. */
  readonly ringMs: number | undefined;
}

/** The one completion form: `err`, or the value, with the request's timing when the disk knows it. */
export type DiskDone<T = void> = (err: Error | undefined, value: T | undefined, timing: DiskTiming | undefined) => void;

/** Bytes to write: one buffer, or buffers written back to back (a scatter-gather list). */
export type WriteData = Uint8Array | readonly Uint8Array[];

export interface AsyncDisk {
  readonly size: number;
  read(offset: number, length: number, done: DiskDone<Uint8Array>, background?: boolean, into?: Uint8Array): void;
  write(offset: number, data: WriteData, done: DiskDone, background?: boolean): void;
  flush(done: DiskDone): void;
  discard?(offset: number, length: number, done: DiskDone): void;
  writeZeroes?(offset: number, length: number, unmap: boolean, done: DiskDone): void;
  poll?(spinMs: number): number;
  readonly spinBudgetMs?: number;
}

/** Total bytes of `data`. */
export function writeLength(data: WriteData): number {
  if (data instanceof Uint8Array) return data.length;
  let n = 0;
  for (const piece of data) n += piece.length;
  return n;
}

/** `data` as one array: `data` itself when it is one, else a gathered copy. */
export function gatherWrite(data: WriteData): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data.length === 1) return data[0]!;
  const out = new Uint8Array(writeLength(data));
  let at = 0;
  for (const piece of data) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/**
 * The views of bytes [from, from + length) of `data` (no copy), for a transport that moves a write in
 * pieces. `from + length` must not pass the end of `data`.
 */
export function sliceWrite(data: WriteData, from: number, length: number): Uint8Array[] {
  if (data instanceof Uint8Array) return [data.subarray(from, from + length)];
  const out: Uint8Array[] = [];
  let skip = from;
  let left = length;
  for (const piece of data) {
    if (left === 0) break;
    if (skip >= piece.length) {
      skip -= piece.length;
      continue;
    }
    const n = Math.min(piece.length - skip, left);
    out.push(piece.subarray(skip, skip + n));
    skip = 0;
    left -= n;
  }
  return out;
}

/** One asynchronous disk call as a promise: `asPromise<Uint8Array>((done) => disk.read(0, 512, done))`. */
export function asPromise<T = void>(call: (done: DiskDone<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    try {
      call((err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
    }
  });
}
