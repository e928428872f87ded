/**
 * How a server maps the cache mode it was asked for onto the engine (no Node API here: the browser's worker
 * uses it too).
 *
 * Group commit. A server that holds several requests at once (the ring's serve loop, the NBD request core)
 * does not let each write that must be durable when it completes (cache=writethrough, or FUA) and each FLUSH
 * flush the image on its own: it carries out every request it has in hand, flushes the image once, and only
 * then sends the completions of those requests. "Completed ⇒ durable" holds as with one flush per write: no
 * completion that needed the flush is visible before the flush has returned, and a failed flush fails every
 * one of them. For that the engine runs in writeback (its writes do not flush themselves) and the server
 * carries the writethrough promise — as QEMU's block layer does for its drivers (writethrough is a flush after
 * each write at the device, not a mode of the qcow2 driver). The ordering flushes inside a write (COW data
 * before the L2 entry that maps it) stay the engine's, under engine/allocation/write-order.ts, which states
 * how they are shared between writes that meet between two flushes of the image.
 */
import type { CacheMode } from "../engine/types.js";

/** How a server serves an image in cache mode `cache`: the engine's cache mode, and who makes writes durable. */
export interface ServingCache {
  /** The cache mode the engine is opened with. */
  engine: CacheMode | undefined;
  /** The server makes every completed write durable (group commit), since the engine does not. */
  durableWrites: boolean;
}

export function servingCache(cache: CacheMode | undefined): ServingCache {
  return cache === "writethrough" ? { engine: "writeback", durableWrites: true } : { engine: cache, durableWrites: false };
}
