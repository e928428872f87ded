/**
 * The piscina task module (Node): `serve(task)` opens one image by path with the engine and serves its
 * request ring until the client closes it (or the STOP word is set). One task occupies one worker thread for
 * the lifetime of the image. Errors — including a failed open — travel through the ring, never as a
 * rejected task; a rejected task means the worker itself died.
 *
 * Node 20 cannot load .ts in a worker: the pool points piscina at the compiled copy of this file in dist/.
 */
import { threadId } from "node:worker_threads";
import { openImagePath, type OpenedImage } from "../open/open-path.js";
import { RequestError } from "../engine/errors.js";
import { OverlayFile } from "../io/overlay-file.js";
import type { ImageOpenOptions } from "../engine/types.js";
import { servingCache } from "./group-commit.js";
import { serveRing, type ServeResult } from "./serve-loop.js";

export interface ServeTask extends ImageOpenOptions {
  ring: SharedArrayBuffer;
  path: string;
  format?: "qcow2" | "raw";
  /**
   * Serve this internal snapshot (by id) instead of the active layer: the image file is only read, the
   * snapshot is applied in a private in-memory view, and what is written to it is lost at close.
   */
  snapshotId?: string;
  /** Bounded spin of the serve loop, in µs. */
  spinUs?: number;
  /** Adapt the serve loop's spin to contention (default true). */
  adaptiveSpin?: boolean;
  /** Size the serve loop's spin from the observed gaps between requests, at most this many µs. */
  sizedSpinCapUs?: number;
  /** Share one flush among the durable requests in hand (default true; see serve-loop.ts). */
  groupCommit?: boolean;
}

export function serve(task: ServeTask): ServeResult {
  // Writethrough is the loop's (group commit): the engine runs in writeback.
  const cache = servingCache(task.cache);
  return serveRing(task.ring, () => openTaskImage({ ...task, cache: cache.engine }), {
    serverId: threadId,
    spinUs: task.spinUs,
    adaptiveSpin: task.adaptiveSpin,
    sizedSpinCapUs: task.sizedSpinCapUs,
    durableWrites: cache.durableWrites,
    groupCommit: task.groupCommit,
  });
}

/** Opens the image a task names, as its serve loop serves it (also used by the NBD export's own worker). */
export function openTaskImage(task: Omit<ServeTask, "ring">): OpenedImage {
  if (task.snapshotId === undefined) {
    return openImagePath(task.path, {
      scheme: task.scheme,
      schemeOptions: task.schemeOptions,
      alloc: task.alloc,
      order: task.order,
      cache: task.cache,
      readOnly: task.readOnly,
      format: task.format,
    });
  }
  const img = openImagePath(task.path, { format: task.format, cache: "unsafe", wrapFile: (f) => new OverlayFile(f) });
  try {
    if (!("snapshotApply" in img)) throw new RequestError(`${task.path} is not a qcow2 image: it has no snapshots`);
    img.snapshotApply(task.snapshotId);
    return img;
  } catch (e) {
    img.close();
    throw e;
  }
}
