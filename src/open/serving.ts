/**
 * Opening an image to serve it, for every server that owns an image (the request ring's worker, the NBD
 * export's thread): by path, with its format, scheme and cache mode, or one of its internal snapshots in a
 * private in-memory view.
 *
 * Group commit. A server that holds several requests at once (the ring's serve loop, the NBD request core)
 * does not let each write that must be durable when it completes (cache=writethrough, or FUA) and each FLUSH
 * flush the image on its own: it carries out every request it has in hand, flushes the image once, and only
 * then sends the completions of those requests. "Completed ⇒ durable" holds as with one flush per write: no
 * completion that needed the flush is visible before the flush has returned, and a failed flush fails every
 * one of them. For that the engine runs in writeback (its writes do not flush themselves) and the server
 * carries the writethrough promise — as QEMU's block layer does for its drivers (writethrough is a flush after
 * each write at the device, not a mode of the qcow2 driver). The ordering flushes inside a write (COW data
 * before the L2 entry that maps it) stay the engine's, under engine/allocation/write-order.ts, which states how they are
 * shared between writes that meet between two flushes of the image.
 */
import { RequestError } from "../engine/errors.js";
import type { CacheMode, ImageOpenOptions } from "../engine/types.js";
import { OverlayFile } from "../io/overlay-file.js";
import { openImagePath, type OpenedImage } from "./open-path.js";

/** What a server opens: a path with the open options, or one of its internal snapshots. */
export interface ServedImageSpec extends ImageOpenOptions {
  path: string;
  format?: "qcow2" | "raw";
  /**
   * Serve this internal snapshot (by id) instead of the active layer: the image file is only read, the
   * snapshot is applied in a private in-memory view, and what is written to it is lost at close.
   */
  snapshotId?: string;
}

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

/**
 * Opens the image `spec` names as a server serves it: with `spec.cache` as given (the caller maps it with
 * servingCache when it commits in groups).
 */
export function openServedPath(spec: ServedImageSpec): OpenedImage {
  if (spec.snapshotId === undefined) {
    return openImagePath(spec.path, {
      scheme: spec.scheme,
      schemeOptions: spec.schemeOptions,
      alloc: spec.alloc,
      order: spec.order,
      noReflink: spec.noReflink,
      cache: spec.cache,
      readOnly: spec.readOnly,
      format: spec.format,
    });
  }
  const img = openImagePath(spec.path, { format: spec.format, cache: "unsafe", wrapFile: (f) => new OverlayFile(f) });
  try {
    if (!("snapshotApply" in img)) throw new RequestError(`${spec.path} is not a qcow2 image: it has no snapshots`);
    img.snapshotApply(spec.snapshotId);
    return img;
  } catch (e) {
    img.close();
    throw e;
  }
}
