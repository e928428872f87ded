/**
 * Group commit: how a server that holds several requests at once (the request ring's serve loop, the inline
 * NBD export) makes writes durable. A write that must be durable when it completes (cache=writethrough, or
 * FUA) and a FLUSH do not each flush the image: the server carries out every request it has in hand, then
 * flushes the image once, and only then sends the completions of those requests. "Completed ⇒ durable" holds
 * as with one flush per write: no completion that needed the flush is visible before the flush has returned,
 * and a failed flush fails every one of them.
 *
 * For that the engine runs in writeback (its writes do not flush themselves) and the server carries the
 * writethrough promise — as QEMU's block layer does for its drivers (writethrough is a flush after each
 * write at the device, not a mode of the qcow2 driver). The ordering flushes inside a write (COW data before
 * the L2 entry that maps it) stay the engine's, under engine/write-order.ts; with several writes between two
 * flushes of the image they are shared the way that module states.
 */
import type { CacheMode } from "../engine/types.js";

/** How a server opens an image it serves in cache mode `cache`: the engine's cache mode, and who makes writes durable. */
export interface ServingCache {
  /** The cache mode the engine is opened with. */
  engine: CacheMode | undefined;
  /** The server makes every completed write durable (one flush per group), since the engine does not. */
  durableWrites: boolean;
}

export function servingCache(cache: CacheMode | undefined): ServingCache {
  return cache === "writethrough" ? { engine: "writeback", durableWrites: true } : { engine: cache, durableWrites: false };
}
