/**
 * The port the NBD request core (request-core.ts) serves requests through: the image's operations, each
 * answering at once (a value; the engine in this thread: inline-port.ts) or later (a promise; the engine in
 * its worker thread behind the request ring: ring-port.ts). The core chains on an answer with `andThen`, which
 * stays synchronous for a value, so the inline path makes no promise unless a request waits for a flush.
 *
 * Every call fails by throwing (or rejecting with) the engine's errors; the core maps them to the protocol's
 * error numbers (export.ts errnoOf).
 */
import type { MonitorTarget } from "./monitor-socket.js";
import type { SnapshotInfo } from "../engine/types.js";
import type { BlockExtent, DepthExtent, DirtyExtent } from "../worker/extents.js";

export type { BlockExtent, DepthExtent, DirtyExtent };

/** An answer now or later. */
export type Answer<T> = T | Promise<T>;

export interface NbdPort {
  readonly size: number;
  readInto(buf: Uint8Array, offset: number): Answer<void>;
  /**
   * Writes `data` (a view on the socket's bytes: the port copies what it keeps beyond the call). `durable`:
   * the answer comes once the write is durable (FUA, or cache=writethrough).
   */
  write(offset: number, data: Uint8Array, durable: boolean): Answer<void>;
  writeZeroes(offset: number, length: number, unmap: boolean, durable: boolean): Answer<void>;
  discard(offset: number, length: number, durable: boolean): Answer<void>;
  /** Makes every write answered so far durable. */
  flush(): Answer<void>;
  /** Merged extents from `offset`, up to `length` bytes or `maxExtents` extents (worker/extents.ts). */
  blockStatus(offset: number, length: number, maxExtents: number): Answer<BlockExtent[]>;
  allocationDepth(offset: number, length: number, maxExtents: number): Answer<DepthExtent[]>;
  dirtyExtents(bitmap: string, offset: number, length: number, maxExtents: number): Answer<DirtyExtent[]>;
  /**
   * Called by the connection once it has handed over every request of what it received together: the port
   * completes what it held for a shared flush (group commit). Absent: the port holds nothing.
   */
  endOfBatch?(): void;
}

/** `f` of the answer (itself an answer now or later): at once for a value, when it comes for a promise. */
export function andThen<T, U>(answer: Answer<T>, f: (t: T) => Answer<U>): Answer<U> {
  return answer instanceof Promise ? answer.then(f) : f(answer);
}

/** An image opened for an export: its port, and what the export's owner does with it besides serving. */
export interface ExportImage {
  readonly port: NbdPort;
  /** Internal snapshots of the live image, taken between requests (refcow nbd --monitor). */
  readonly monitor: MonitorTarget;
  /** Flushes and closes the image (after the server has stopped). */
  close(): Promise<void>;
}
