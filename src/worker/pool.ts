/**
 * The Node side of serving images from worker threads: a piscina pool with one long-running serve task
 * (one thread) per open image, and an in-process registry that gives each image one owner.
 *
 * Pool sizing: minThreads = maxThreads = the number of images open at the same time (grown as images open;
 * threads left over by closed images stay parked for reuse), idleTimeout Infinity, one task per worker.
 *
 * An open image keeps the process alive (its serve task is running), as an open server socket would: close
 * each client, or call closeAllWorkers(), so that cached metadata is flushed before the process exits.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Worker } from "node:worker_threads";
import { Piscina } from "piscina";
import type { AllocPolicyName, CacheMode } from "../engine/types.js";
import { DiskClient, type DiskClientOptions, waitForServer, WorkerError } from "./disk-client.js";
import type { ServeTask } from "./node-worker.js";
import { C, createRing, type RingOptions } from "./ring.js";

export interface ServedImageOptions {
  /** Refcount scheme (default "eager"). */
  scheme?: string;
  /** Allocation policy (default "first-fit"). */
  alloc?: AllocPolicyName;
  /** Cache mode (default "writeback"). */
  cache?: CacheMode;
  readOnly?: boolean;
  /** Image format; probed when absent. */
  format?: "qcow2" | "raw";
  /** Ring geometry (slots, data share per slot). */
  ring?: RingOptions;
  /** Client-side spinning and waiting. */
  client?: DiskClientOptions;
  /** Bounded spin of the worker's serve loop, in µs. */
  serverSpinUs?: number;
  /** Adapt the serve loop's spin to contention (default true). */
  serverAdaptiveSpin?: boolean;
  /** Size the serve loop's spin from the observed gaps between requests, at most this many µs (SizedSpin). */
  serverSizedSpinCapUs?: number;
}

/** Refusal to open an image that this process already has open in a conflicting mode. */
export class ImageLockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageLockError";
  }
}

/** The compiled worker module: next to this module in dist/, or dist/worker/ when running from src/ (tests). */
export function workerFilename(): string {
  const here = fileURLToPath(new URL("./node-worker.js", import.meta.url));
  if (fs.existsSync(here)) return here;
  const dist = fileURLToPath(new URL("../../dist/worker/node-worker.js", import.meta.url));
  if (fs.existsSync(dist)) return dist;
  throw new Error(`the worker module is not built (looked for ${here} and ${dist}): run 'npm run build'`);
}

interface LockEntry {
  writers: number;
  readers: number;
}

export class ImagePool {
  private piscina: Piscina | undefined;
  private readonly locks = new Map<string, LockEntry>();
  private readonly clients = new Set<DiskClient>();
  private opening = 0;
  private threads = 0;
  private destroying: Promise<void> | undefined;

  /** Opens `file` in a worker thread and returns its client. */
  async open(file: string, opts: ServedImageOptions = {}): Promise<DiskClient> {
    if (this.destroying) throw new Error("the worker pool is shutting down");
    const key = lockKey(file);
    const readOnly = opts.readOnly ?? false;
    this.lock(key, file, readOnly);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.unlock(key, readOnly);
    };
    this.opening++;
    try {
      const pool = this.grow();
      const ring = createRing(opts.ring);
      const task: ServeTask = {
        ring,
        path: file,
        scheme: opts.scheme,
        alloc: opts.alloc,
        cache: opts.cache,
        readOnly,
        format: opts.format,
        spinUs: opts.serverSpinUs,
        adaptiveSpin: opts.serverAdaptiveSpin,
        sizedSpinCapUs: opts.serverSizedSpinCapUs,
      };
      const run = pool.run(task, { name: "serve" }) as Promise<unknown>;
      const ended = run.then(
        () => new WorkerError(`the worker opening ${file} ended before the image was open`),
        (e: unknown) => new WorkerError(`the worker opening ${file} died: ${(e as Error)?.message ?? e}`),
      );
      try {
        await waitForServer(ring, file, ended);
      } catch (e) {
        release();
        // Make sure the serve task is gone (it returns by itself after a failed open).
        Atomics.store(new Int32Array(ring, 0, 64), C.STOP, 1);
        Atomics.notify(new Int32Array(ring, 0, 64), C.SQ_TAIL);
        throw e;
      }
      const client = new DiskClient(ring, file, opts.client);
      this.clients.add(client);
      run.then(
        () => {
          release();
          this.clients.delete(client);
          client.serverEnded();
        },
        (e: unknown) => {
          release();
          this.clients.delete(client);
          client.fail(new WorkerError(`the worker serving ${file} died (${(e as Error)?.message ?? e}); requests on this image fail`));
        },
      );
      return client;
    } catch (e) {
      release();
      throw e;
    } finally {
      this.opening--;
    }
  }

  /** The worker thread serving `client` (for diagnostics, or to kill a hung image). */
  workerOf(client: DiskClient): Worker | undefined {
    return this.piscina?.threads.find((w) => w.threadId === client.serverId);
  }

  /** Images open now. */
  get openImages(): number {
    return this.clients.size;
  }

  /** Closes every open image (flushing it), then terminates the worker threads. */
  destroy(): Promise<void> {
    if (this.destroying) return this.destroying;
    this.destroying = (async () => {
      await Promise.allSettled([...this.clients].map((c) => c.close()));
      const p = this.piscina;
      this.piscina = undefined;
      this.threads = 0;
      if (p) await p.destroy();
    })().finally(() => {
      this.destroying = undefined;
    });
    return this.destroying;
  }

  private grow(): Piscina {
    const needed = this.clients.size + this.opening;
    if (!this.piscina) {
      this.threads = Math.max(1, needed);
      this.piscina = new Piscina({
        filename: workerFilename(),
        minThreads: this.threads,
        maxThreads: this.threads,
        idleTimeout: Infinity,
        concurrentTasksPerWorker: 1,
        // Idle threads wait on piscina's own futex; the serve task never returns to piscina while open.
        atomics: "sync",
      });
      // A worker that dies with no task reports here; the task's own rejection covers the rest.
      this.piscina.on("error", () => {});
    } else if (needed > this.threads) {
      this.threads = needed;
      // piscina has no resize call; its live options are read whenever it decides to spawn a worker.
      const o = this.piscina.options as { minThreads: number; maxThreads: number };
      o.maxThreads = needed;
      o.minThreads = needed;
    }
    return this.piscina;
  }

  private lock(key: string, file: string, readOnly: boolean): void {
    const e = this.locks.get(key);
    if (e) {
      if (!readOnly) {
        throw new ImageLockError(
          `Failed to get "write" lock: '${file}' is already open ${e.writers ? "for writing" : "read-only"} in this process`,
        );
      }
      if (e.writers) throw new ImageLockError(`Failed to get shared "write" lock: '${file}' is open for writing in this process`);
      e.readers++;
      return;
    }
    this.locks.set(key, { writers: readOnly ? 0 : 1, readers: readOnly ? 1 : 0 });
  }

  private unlock(key: string, readOnly: boolean): void {
    const e = this.locks.get(key);
    if (!e) return;
    if (readOnly) e.readers--;
    else e.writers--;
    if (e.readers <= 0 && e.writers <= 0) this.locks.delete(key);
  }
}

function lockKey(file: string): string {
  const abs = path.resolve(file);
  try {
    return fs.realpathSync(abs);
  } catch {
    return abs;
  }
}

let defaultPool: ImagePool | undefined;

/** The process-wide pool used by openServedImage. */
export function defaultImagePool(): ImagePool {
  return (defaultPool ??= new ImagePool());
}

/** Opens an image in a worker thread of the process-wide pool. */
export function openServedImage(file: string, opts: ServedImageOptions = {}): Promise<DiskClient> {
  return defaultImagePool().open(file, opts);
}

/** Closes every image opened with openServedImage and terminates the pool's threads. */
export async function closeAllWorkers(): Promise<void> {
  const p = defaultPool;
  defaultPool = undefined;
  if (p) await p.destroy();
}
