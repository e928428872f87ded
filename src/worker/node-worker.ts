/**
 * The piscina task module (Node): `serve(task)` opens one image by path with the engine and serves its
 * request ring until the client closes it (or the STOP word is set). One task occupies one worker thread for
 * the lifetime of the image. Errors — including a failed open — travel through the ring, never as a
 * rejected task; a rejected task means the worker itself died.
 *
 * Node 20 cannot load .ts in a worker: the pool points piscina at the compiled copy of this file in dist/.
 */
import { threadId } from "node:worker_threads";
import { openServedPath, type ServedImageSpec, servingCache } from "../open/serving.js";
import { serveRing, type ServeResult } from "./serve-loop.js";

export interface ServeTask extends ServedImageSpec {
  ring: SharedArrayBuffer;
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
  // Writethrough is the loop's (group commit, open/serving-cache.ts): the engine runs in writeback.
  const cache = servingCache(task.cache);
  return serveRing(task.ring, () => openServedPath({ ...task, cache: cache.engine }), {
    serverId: threadId,
    spinUs: task.spinUs,
    adaptiveSpin: task.adaptiveSpin,
    sizedSpinCapUs: task.sizedSpinCapUs,
    durableWrites: cache.durableWrites,
    groupCommit: task.groupCommit,
  });
}
