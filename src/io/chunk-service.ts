/**
 * The asynchronous side of a remote file: hands out fixed-size chunks of a pinned object, from a
 * persistent chunk store when it has them, else over HTTP; starts read-ahead fetches and keeps their
 * results until claimed. Runs where `fetch` can be awaited (Node's fetch thread, a browser fetch worker);
 * the engine's side (chunk-reader.ts) talks to it through a synchronous bridge.
 *
 * Chunk i covers bytes [i*chunkSize, min(size, (i+1)*chunkSize)) of the object. A demand request for
 * several chunks asks for each run of adjacent missing chunks in one Range request; read-ahead asks for one
 * chunk per request so that the first arrives first. At most `maxInFlight` read-ahead requests are in flight
 * (demand requests are never held back), and at most `maxPrefetched` fetched-but-unclaimed chunks are kept
 * (the oldest is dropped beyond).
 */
import { fetchRange, type FetchOptions, newWireStats, type WireStats } from "./http-fetch.js";
import type { HttpObject } from "./http-object.js";
import type { ChunkStore } from "./chunk-store.js";

export interface ChunkServiceOptions extends FetchOptions {
  chunkSize: number;
  /** Read-ahead requests in flight at once (default 4). */
  maxInFlight?: number;
  /** Fetched, unclaimed read-ahead chunks kept (default 16). */
  maxPrefetched?: number;
  /** Chunks per demand request at most (default 16). */
  maxRunChunks?: number;
  store?: ChunkStore;
  /** Called when writing to the store fails (the chunk is still served). */
  onStoreError?: (e: unknown) => void;
}

export interface ChunkServiceStats extends WireStats {
  /** Chunks served from the persistent store. */
  storeHits: number;
}

export class ChunkService {
  readonly stats: ChunkServiceStats = { ...newWireStats(), storeHits: 0 };
  private readonly prefetched = new Map<number, Promise<Uint8Array>>();
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  readonly chunkCount: number;

  constructor(
    readonly obj: HttpObject,
    private readonly opts: ChunkServiceOptions,
  ) {
    this.chunkCount = Math.ceil(obj.size / opts.chunkSize);
  }

  chunkLength(index: number): number {
    return Math.min(this.opts.chunkSize, this.obj.size - index * this.opts.chunkSize);
  }

  /** The chunks at `indices` (each valid), in order; rejects with the first failure. */
  async get(indices: number[]): Promise<Uint8Array[]> {
    const out = new Array<Promise<Uint8Array>>(indices.length);
    const missing: number[] = [];
    for (let k = 0; k < indices.length; k++) {
      const p = this.prefetched.get(indices[k]);
      if (p) {
        this.prefetched.delete(indices[k]);
        // A failed read-ahead is retried on demand.
        out[k] = p.catch(() => this.fetchRun([indices[k]]).then((r) => r[0]));
      } else missing.push(k);
    }
    const stored = await Promise.all(missing.map((k) => this.fromStore(indices[k])));
    const toFetch: number[] = [];
    missing.forEach((k, j) => {
      if (stored[j]) out[k] = Promise.resolve(stored[j]);
      else toFetch.push(k);
    });
    for (const run of adjacentRuns(toFetch.map((k) => indices[k]), this.opts.maxRunChunks ?? 16)) {
      const fetched = this.fetchRun(run);
      run.forEach((index, j) => {
        const k = toFetch[toFetch.findIndex((kk) => indices[kk] === index)];
        out[k] = fetched.then((r) => r[j]);
      });
    }
    return Promise.all(out);
  }

  /** Starts fetching chunks the reader is likely to ask for next (never fails; a failure is retried on demand). */
  prefetch(indices: number[]): void {
    for (const index of indices) {
      if (index < 0 || index >= this.chunkCount || this.prefetched.has(index)) continue;
      const p = this.fetchQueued(index);
      p.catch(() => undefined);
      this.prefetched.set(index, p);
      while (this.prefetched.size > (this.opts.maxPrefetched ?? 16)) {
        this.prefetched.delete(this.prefetched.keys().next().value as number);
      }
    }
  }

  private async fetchQueued(index: number): Promise<Uint8Array> {
    const stored = await this.fromStore(index);
    if (stored) return stored;
    while (this.inFlight >= (this.opts.maxInFlight ?? 4)) await new Promise<void>((r) => this.waiting.push(r));
    this.inFlight++;
    try {
      return (await this.fetchRun([index]))[0];
    } finally {
      this.inFlight--;
      this.waiting.shift()?.();
    }
  }

  private async fromStore(index: number): Promise<Uint8Array | undefined> {
    if (!this.opts.store) return undefined;
    const { store } = this.opts;
    // A store may answer synchronously (chunk-store.ts); a failing one reads as absent.
    const data = await Promise.resolve()
      .then(() => store.get(index, this.chunkLength(index)))
      .catch(() => undefined);
    if (data) this.stats.storeHits++;
    return data;
  }

  /** Fetches adjacent chunks in one request and stores each. */
  private async fetchRun(run: number[]): Promise<Uint8Array[]> {
    const { chunkSize } = this.opts;
    const offset = run[0] * chunkSize;
    const length = run.reduce((n, i) => n + this.chunkLength(i), 0);
    const bytes = await fetchRange(this.obj, offset, length, this.opts, this.stats);
    // Copies when several: each chunk then owns its buffer (it may be transferred to another thread alone).
    const chunks = run.length === 1 ? [bytes] : run.map((i) => bytes.slice(i * chunkSize - offset, i * chunkSize - offset + this.chunkLength(i)));
    const { store } = this.opts;
    if (store) {
      for (let j = 0; j < run.length; j++) {
        await Promise.resolve()
          .then(() => store.put(run[j], chunks[j]))
          .catch((e) => this.opts.onStoreError?.(e));
      }
    }
    return chunks;
  }
}

/** Splits sorted-or-not chunk indices into runs of adjacent ones (each at most `max` long). */
export function adjacentRuns(indices: number[], max: number): number[][] {
  const sorted = [...indices].sort((a, b) => a - b);
  const runs: number[][] = [];
  for (const i of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] === i - 1 && last.length < max) last.push(i);
    else runs.push([i]);
  }
  return runs;
}
