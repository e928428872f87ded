/**
 * Opening an image to serve it, for every server that owns an image (the request ring's worker, the NBD
 * export's thread): by path, with its format, scheme and cache mode, or one of its internal snapshots in a
 * private in-memory view.
 *
 * The cache mode a server opens the engine with, under group commit: serving-cache.ts.
 */
import { RequestError } from "../engine/errors.js";
import type { ImageOpenOptions } from "../engine/types.js";
import { OverlayFile } from "../io/overlay-file.js";
import { openImagePath, type OpenedImage } from "./open-path.js";

export { type ServingCache, servingCache } from "./serving-cache.js";

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
