/**
 * The NBD port (port.ts) over an image served by a worker thread behind the request ring: every call is a
 * request of the ring's client (worker/disk-client.ts, its promise API), so many are in flight at once and
 * the socket's thread never waits on disk I/O. The one place where NBD meets the ring's client.
 *
 * Durability: with cache=writethrough the ring's serve loop makes every write durable before its completion
 * (and shares one flush among the writes in hand: group commit, open/serving-cache.ts). Otherwise a durable write
 * (FUA) is answered once a flush submitted right behind it has completed: one engine, FIFO order, so the flush
 * covers it — and the serve loop shares one flush among the flushes in hand.
 */
import { asyncImageMonitorTarget } from "./monitor-socket.js";
import type { CacheMode } from "../engine/types.js";
import type { DiskClient } from "../worker/disk-client.js";
import { openServedImage, type ServedImageOptions } from "../worker/pool.js";
import type { ExportImage, NbdPort } from "./port.js";

export class RingPort implements NbdPort {
  /** The ring makes every write durable before completing it (cache=writethrough). */
  private readonly ringDurable: boolean;

  constructor(
    readonly client: DiskClient,
    cache: CacheMode | undefined,
  ) {
    this.ringDurable = cache === "writethrough";
  }

  get size(): number {
    return this.client.size;
  }

  readInto(buf: Uint8Array, offset: number): Promise<void> {
    return this.client.readInto(buf, offset);
  }

  write(offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    return this.durably(this.client.write(offset, data), durable);
  }

  writeZeroes(offset: number, length: number, unmap: boolean, durable: boolean): Promise<void> {
    return this.durably(this.client.writeZeroes(offset, length, { unmap }), durable);
  }

  discard(offset: number, length: number, durable: boolean): Promise<void> {
    return this.durably(this.client.discard(offset, length), durable);
  }

  flush(): Promise<void> {
    return this.client.flush();
  }

  blockStatus(offset: number, length: number, maxExtents: number) {
    return this.client.blockStatus(offset, length, maxExtents);
  }

  allocationDepth(offset: number, length: number, maxExtents: number) {
    return this.client.allocationDepth(offset, length, maxExtents);
  }

  dirtyExtents(bitmap: string, offset: number, length: number, maxExtents: number) {
    return this.client.dirtyExtents(bitmap, offset, length, maxExtents);
  }

  private durably(op: Promise<void>, durable: boolean): Promise<void> {
    if (!durable || this.ringDurable) return op;
    // Submitted together: the flush runs right after the operation in the engine's FIFO order.
    return Promise.all([op, this.client.flush()]).then(() => undefined);
  }
}

/** Opens `file` behind the ring, served by a pool worker (openServedImage's options), for an export. */
export async function openRingImage(file: string, opts: ServedImageOptions): Promise<ExportImage & { port: RingPort }> {
  const client = await openServedImage(file, opts);
  return { port: new RingPort(client, opts.cache), monitor: asyncImageMonitorTarget(client), close: () => client.close() };
}
