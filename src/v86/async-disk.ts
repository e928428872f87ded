/**
 * The asynchronous disk the v86 hda adapter sits on.
 *
 * The emulator's thread must never block, so every operation returns a promise. Implementations: the
 * worker-served `DiskClient` (src/worker) over a qcow2 image, and `MemoryAsyncDisk` (a plain in-memory raw
 * disk) for development and tests.
 *
 * `DiskClient` (src/worker/disk-client.ts) has exactly this shape (`size`, `read`, `write`, `flush`) and can be
 * given as it is; `ServedAsyncDisk` wraps it to also report how long the engine itself took per request.
 *
 * Contract:
 *  - `size` is the virtual size in bytes (a multiple of 512 for the IDE disk).
 *  - `read(offset, length)` resolves to exactly `length` bytes. The caller may keep the array.
 *  - `write(offset, data)` may keep a reference to `data` until it resolves; the adapter always passes a
 *    private copy.
 *  - `flush()` resolves when every write that resolved before it was called is durable (the meaning of
 *    "durable" is the disk's cache mode: writethrough, writeback or unsafe).
 *  - The adapter issues one operation at a time, in guest order, so an implementation needs no ordering
 *    of its own.
 */
export interface AsyncDisk {
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
}

/**
 * Optional: a disk that knows how long its backend itself spent on the operation that resolved last (the
 * engine's time in its worker, without queueing, ring and wake-up delays). The hda adapter runs one operation
 * at a time, so "the last one" is the one it just awaited.
 */
export interface ServiceTimedDisk extends AsyncDisk {
  /** Backend time of the last resolved operation in ms, or undefined when unknown. */
  readonly lastServiceMs: number | undefined;
  /**
   * Time of the last resolved operation on its transport to the backend, in ms: submission to completion
   * at the caller's end of the worker's request ring (the backend's time included). Undefined when unknown.
   */
  readonly lastRingMs?: number | undefined;
}

/**
 * Optional: a disk whose requests can complete through callbacks run synchronously when the caller polls
 * (the worker-served disk: DiskClient.callbacks and DiskClient.poll). The hda adapter polls it from inside
 * v86's run loop, so a completion reaches the guest without a trip through the event loop.
 */
export interface PollableDisk extends ServiceTimedDisk {
  readCb(offset: number, length: number, done: (err: Error | undefined, data: Uint8Array | undefined) => void): void;
  writeCb(offset: number, data: Uint8Array, done: (err: Error | undefined) => void): void;
  flushCb(done: (err: Error | undefined) => void): void;
  /** Runs the callbacks of the completions published so far; spins up to `spinMs` for one when none is. */
  poll(spinMs: number): number;
  /** How long a wait for the request in flight is worth spinning, in ms (sized from observed service times). */
  readonly spinBudgetMs: number;
}

export function isPollable(d: AsyncDisk): d is PollableDisk {
  const p = d as Partial<PollableDisk>;
  return typeof p.writeCb === "function" && typeof p.readCb === "function" && typeof p.flushCb === "function" && typeof p.poll === "function";
}
