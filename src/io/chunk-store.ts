/**
 * The persistent chunk store seam: where a remote object's chunks are kept across runs. The chunk service
 * (chunk-service.ts, Node's fetch thread) and the browser's synchronous chunk source (http-file-web.ts)
 * consult a store before the network and fill it after; the stores are a folder of chunk files
 * (disk-chunk-store.ts, Node) and two slot files reached by synchronous access handles
 * (slot-chunk-cache.ts, the browser's OPFS through opfs-chunk-cache.ts).
 *
 * Every store is keyed by the same identity (chunkKeyText): the URL the object is named by, its validator
 * (size, ETag or Last-Modified: another version never meets the old chunks) and the chunk size. A store
 * never returns a damaged or torn chunk: such an entry reads as absent.
 */

/** A store of one object version's chunks; a synchronous store is usable from both sides. */
export interface ChunkStore {
  /** The chunk's bytes, or undefined when absent or unusable (a damaged entry reads as absent). */
  get(index: number, length: number): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  put(index: number, data: Uint8Array): void | Promise<void>;
}

/** A store answering at once: what the browser's engine worker, which cannot await, needs. */
export interface SyncChunkStore extends ChunkStore {
  get(index: number, length: number): Uint8Array | undefined;
  put(index: number, data: Uint8Array): void;
  /** Whether the chunk is there (without reading or checking it). */
  has(index: number): boolean;
}

/** The identity a store keys an object version's chunks by. */
export function chunkKeyText(url: string, validator: string, chunkSize: number): string {
  return `${url}\n${validator}\n${chunkSize}`;
}
