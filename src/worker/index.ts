/** Serving images from worker threads through a SharedArrayBuffer request ring. */
export { openServedImage, closeAllWorkers, defaultImagePool, ImagePool, ImageLockError, workerFilename } from "./pool.js";
export type { ServedImageOptions } from "./pool.js";
export { DiskClient } from "./disk-client.js";
export type { BlockExtent, DepthExtent, DirtyExtent } from "./disk-client.js";
export { RingClient, WorkerError, waitForServer } from "./ring-client.js";
export type { RequestTiming, RingClientOptions } from "./ring-client.js";
export { ServedAsyncDisk } from "./served-async-disk.js";
export { serveRing } from "./serve-loop.js";
export type { ServeOptions, ServeResult } from "./serve-loop.js";
export { createRing } from "./ring.js";
export type { RingOptions } from "./ring.js";
export type { SyncDisk } from "../disk/sync-disk.js";
