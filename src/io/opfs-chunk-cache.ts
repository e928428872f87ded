/**
 * The browser's persistent chunk cache: a SlotChunkCache (slot-chunk-cache.ts, where the file format is)
 * in the origin private file system, opened inside the engine's dedicated Web Worker:
 *
 *   <OPFS root>/refcow-http-cache/chunks.index
 *   <OPFS root>/refcow-http-cache/chunks.data
 *
 * Opening is asynchronous (access handles are); everything after is synchronous, as the engine needs. The
 * handles are exclusive: a second tab finds them locked, and runs without the cache after a short wait
 * (the worker of a page being reloaded lets go of them a moment after the new page starts).
 */
import { IoError } from "./block-file.js";
import type { SyncAccessHandle } from "./opfs-file.js";
import { SlotChunkCache, type SlotChunkCacheOptions } from "./slot-chunk-cache.js";

export const OPFS_CACHE_DIR = "refcow-http-cache";
export const OPFS_CACHE_FILES = { index: "chunks.index", data: "chunks.data" } as const;

interface CacheDirectory {
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<CacheDirectory>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<{ createSyncAccessHandle(): Promise<SyncAccessHandle> }>;
}

export interface OpfsChunkCacheOptions extends SlotChunkCacheOptions {
  /** How long to wait for handles another worker still holds (default 5 s). */
  lockWaitMs?: number;
}

/** Opens (creating when missing) the OPFS chunk cache; throws an IoError saying why it cannot. */
export async function openOpfsChunkCache(opts: OpfsChunkCacheOptions): Promise<SlotChunkCache> {
  const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<CacheDirectory> } } }).navigator?.storage;
  if (typeof storage?.getDirectory !== "function") throw new IoError("the origin private file system is not available here", "ENOTSUP");
  const dir = await (await storage.getDirectory()).getDirectoryHandle(OPFS_CACHE_DIR, { create: true });
  const deadline = Date.now() + (opts.lockWaitMs ?? 5000);
  const handles: SyncAccessHandle[] = [];
  try {
    for (const name of [OPFS_CACHE_FILES.data, OPFS_CACHE_FILES.index]) {
      const file = await dir.getFileHandle(name, { create: true });
      for (;;) {
        try {
          handles.push(await file.createSyncAccessHandle());
          break;
        } catch (e) {
          if ((e as { name?: string })?.name !== "NoModificationAllowedError" || Date.now() > deadline) {
            throw new IoError(`${OPFS_CACHE_DIR}/${name}: ${(e as Error)?.message ?? e}`, "EBUSY");
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    return new SlotChunkCache(handles[0], handles[1], opts);
  } catch (e) {
    for (const h of handles) h.close();
    throw e;
  }
}
