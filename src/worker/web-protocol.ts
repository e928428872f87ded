/**
 * Messages between a page and the refcow Web Worker (web-worker.ts). The data path is the request ring
 * (ring.ts), exactly as in Node; these messages only start and end its life and manage image files:
 *
 *   page → worker   { id, kind: "serve", ring, file, ... }   open `file` (OPFS) and serve `ring` until CLOSE/STOP.
 *                                                            The open's outcome travels through the ring
 *                                                            (READY / OPEN_FAILED); the reply comes when the
 *                                                            serve loop has ended and the file is closed.
 *                   { id, kind: "create", file, options }    write a new empty qcow2 image (replacing `file`).
 *                   { id, kind: "check", file }              open read-only and check (as `qemu-img check`).
 *   worker → page   { kind: "hello", ... }                   once, when the worker's module has loaded.
 *                   { id, kind: "result", value }            the request finished.
 *                   { id, kind: "error", name, message }     it failed (errors never cross as exceptions).
 *
 * The serve loop blocks the worker's thread, so a worker serves one image at a time and handles no message
 * while serving; the host (web-host.ts) refuses to send one then.
 */
import type { CheckResult, CreateOptions, ImageOpenOptions } from "../engine/types.js";
import type { ServeResult } from "./serve-loop.js";

/** Serves an image: the open options as the library takes them (ImageOpenOptions), but for the flush order. */
export interface WebServeRequest extends Omit<ImageOpenOptions, "order"> {
  id: number;
  kind: "serve";
  ring: SharedArrayBuffer;
  /** File name in the origin private file system. */
  file: string;
  /** Bounded spin of the serve loop, in µs. */
  spinUs?: number;
  adaptiveSpin?: boolean;
  /**
   * Bytes the persistent chunk cache of remote backing files may hold in OPFS (io/opfs-chunk-cache.ts;
   * default 1 GiB; 0: none).
   */
  httpCacheBytes?: number;
}

export interface WebCreateRequest {
  id: number;
  kind: "create";
  file: string;
  options: CreateOptions;
}

export interface WebCheckRequest {
  id: number;
  kind: "check";
  file: string;
}

export type WebWorkerRequest = WebServeRequest | WebCreateRequest | WebCheckRequest;

export interface WebWorkerHello {
  kind: "hello";
  /** The worker may use SharedArrayBuffer (the page is cross-origin isolated). */
  crossOriginIsolated: boolean;
  /** `navigator.storage.getDirectory` exists in the worker. */
  opfs: boolean;
}

export interface WebWorkerResult {
  id: number;
  kind: "result";
  value: ServeResult | CheckResult | null;
}

export interface WebWorkerError {
  id: number;
  kind: "error";
  name: string;
  message: string;
}

export type WebWorkerReply = WebWorkerHello | WebWorkerResult | WebWorkerError;
