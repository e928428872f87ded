/** Serving images from worker threads through a SharedArrayBuffer request ring. */
export { openServedImage, closeAllWorkers, defaultImagePool, ImagePool, ImageLockError, workerFilename } from "./pool.js";
export type { ServedImageOptions } from "./pool.js";
export { DiskClient, WorkerError, waitForServer } from "./disk-client.js";
export type { BlockExtent, DiskClientOptions, RequestTiming, Timed, TimedApi } from "./disk-client.js";
export { serveRing } from "./serve-loop.js";
export type { ServeOptions, ServeResult } from "./serve-loop.js";
export { createRing } from "./ring.js";
export type { RingOptions } from "./ring.js";
export type { ServedDisk } from "./served-disk.js";
