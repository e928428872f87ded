/**
 * The Node side of serving images from worker threads: one long-running serve task per open image, each in
 * a piscina pool of its own with exactly one thread, and an in-process registry that gives each image one
 * owner.
 *
 * Pools: one per image open at the same time (minThreads = maxThreads = 1, idleTimeout Infinity, one task
 * per worker). piscina sizes a pool only at construction, so the set grows by adding pools; the pool of a
 * closed image stays parked, its thread alive, for the next image opened.
 *
 * An open image keeps the process alive (its serve task is running), as an open server socket would: close
 * each client, or call closeAllWorkers(), so that cached metadata is flushed before the process exits.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Worker } from "node:worker_threads";
import { Piscina } from "piscina";
import type { ImageOpenOptions } from "../engine/types.js";
import { DiskClient } from "./disk-client.js";
import { type RingClientOptions, waitForServer, WorkerError } from "./ring-client.js";
import type { ServeTask } from "./node-worker.js";
import { C, createRing, type RingOptions } from "./ring.js";

/** How to serve an image: the open options (ImageOpenOptions: scheme default eager, cache default writeback...) and the ring's. */
export interface ServedImageOptions extends ImageOpenOptions {
  /** Image format; probed when absent. */
  format?: "qcow2" | "raw";
  /** Serve this internal snapshot (id), read from a private in-memory view of the image (see ServeTask). */
  snapshotId?: string;
  /** Ring geometry (slots, data share per slot). */
  ring?: RingOptions;
  /** Client-side spinning and waiting. */
  client?: RingClientOptions;
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
  /** Every pool made and not yet destroyed: serving an image, or parked in `idle`. */
  private readonly pools = new Set<Piscina>();
  private readonly idle: Piscina[] = [];
  private readonly locks = new Map<string, LockEntry>();
  /** Open images, with the pool serving each. */
  private readonly clients = new Map<DiskClient, Piscina>();
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
    let pool: Piscina | undefined;
    let started = false;
    try {
      pool = this.take();
      const ring = createRing(opts.ring);
      const task: ServeTask = {
        ring,
        path: file,
        scheme: opts.scheme,
        schemeOptions: opts.schemeOptions,
        alloc: opts.alloc,
        order: opts.order,
        noReflink: opts.noReflink,
        cache: opts.cache,
        readOnly,
        format: opts.format,
        snapshotId: opts.snapshotId,
        spinUs: opts.serverSpinUs,
        adaptiveSpin: opts.serverAdaptiveSpin,
        sizedSpinCapUs: opts.serverSizedSpinCapUs,
      };
      const run = pool.run(task, { name: "serve" }) as Promise<unknown>;
      started = true;
      const served = pool;
      // Whatever way the task ends, its pool's thread is free again (piscina replaces a thread that died).
      run.then(
        () => this.park(served),
        () => this.park(served),
      );
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
      this.clients.set(client, pool);
      run.then(
        () => {
          release();
          this.clients.delete(client);
          client.ring.serverEnded();
        },
        (e: unknown) => {
          release();
          this.clients.delete(client);
          client.ring.fail(new WorkerError(`the worker serving ${file} died (${(e as Error)?.message ?? e}); requests on this image fail`));
        },
      );
      return client;
    } catch (e) {
      release();
      // A pool whose task never started is free at once (a started task parks its pool when it ends).
      if (pool && !started) this.park(pool);
      throw e;
    }
  }

  /** The worker thread serving `client` (for diagnostics, or to kill a hung image). */
  workerOf(client: DiskClient): Worker | undefined {
    return this.clients.get(client)?.threads.find((w) => w.threadId === client.ring.serverId);
  }

  /** Images open now. */
  get openImages(): number {
    return this.clients.size;
  }

  /** Closes every open image (flushing it), then terminates the worker threads. */
  destroy(): Promise<void> {
    if (this.destroying) return this.destroying;
    this.destroying = (async () => {
      await Promise.allSettled([...this.clients.keys()].map((c) => c.close()));
      const pools = [...this.pools];
      this.pools.clear();
      this.idle.length = 0;
      await Promise.allSettled(pools.map((p) => p.destroy()));
    })().finally(() => {
      this.destroying = undefined;
    });
    return this.destroying;
  }

  /** A parked pool, or a new one with one thread. */
  private take(): Piscina {
    const parked = this.idle.pop();
    if (parked) return parked;
    const pool = new Piscina({
      filename: workerFilename(),
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: 1,
      // The idle thread waits on piscina's own futex; the serve task never returns to piscina while open.
      atomics: "sync",
    });
    // A worker that dies with no task reports here; the task's own rejection covers the rest.
    pool.on("error", () => {});
    this.pools.add(pool);
    return pool;
  }

  /** Parks a pool whose serve task has ended (unless the pool is being destroyed). */
  private park(pool: Piscina): void {
    if (this.pools.has(pool) && !this.idle.includes(pool)) this.idle.push(pool);
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
