/**
 * Opening a remote image by URL in Node: a read-only BlockFile (remote-file.ts) whose chunks come from a
 * fetch thread (http-fetch-thread.ts). The engine's thread — a worker in every serve path, the CLI's main
 * thread for one-shot commands — blocks in `Atomics.wait` while the fetch thread works; the fetch thread
 * keeps read-ahead requests going in the meantime.
 *
 * Memory bound: `memoryBytes` of chunks on the engine's side (default 64 MiB) plus at most
 * `maxPrefetched` (default 16) read-ahead chunks in the fetch thread, plus the chunks of the request being
 * served. Whatever the image's size.
 */
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";
import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { IoError } from "./block-file.js";
import { ChunkReader, type ChunkReaderOptions, type ChunkSource, chunkOptions } from "./chunk-reader.js";
import type { ChunkServiceStats } from "./chunk-service.js";
import { DEFAULT_CACHE_BYTES, defaultCacheDir } from "./disk-chunk-store.js";
import { FETCH_DEFAULTS, type FetchOptions } from "./http-fetch.js";
import type { FetchThreadData } from "./http-fetch-thread.js";
import { type HttpObject, HttpPermanentError, HttpTransientError, isHttpUrl } from "./http-object.js";
import { RemoteFile } from "./remote-file.js";

export interface HttpFileOptions extends ChunkReaderOptions, FetchOptions {
  /** Persistent chunk cache folder (default defaultCacheDir()); false: none. */
  cacheDir?: string | false;
  /** Bound of the persistent cache, all objects together (default 1 GiB). */
  cacheBytes?: number;
  /** Read-ahead requests in flight at once (default 4). */
  maxInFlight?: number;
  /** Where failures are reported once (default stderr). */
  log?: (line: string) => void;
}

/** The compiled fetch thread: next to this module in dist/, or dist/io/ when running from src/ (tests). */
function threadFilename(): string {
  const here = fileURLToPath(new URL("./http-fetch-thread.js", import.meta.url));
  if (fs.existsSync(here)) return here;
  const dist = fileURLToPath(new URL("../../dist/io/http-fetch-thread.js", import.meta.url));
  if (fs.existsSync(dist)) return dist;
  throw new Error(`the HTTP fetch thread is not built (looked for ${here} and ${dist}): run 'npm run build'`);
}

interface Reply {
  seq: number;
  error?: { message: string; code?: string; permanent: boolean };
  object?: HttpObject;
  chunks?: Uint8Array[];
  stats?: ChunkServiceStats;
}

/** The synchronous side of the fetch thread. */
class FetchThreadBridge implements ChunkSource {
  private readonly worker: Worker;
  private readonly port;
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private seq = 0;
  /** Longest a call may take: every retry timing out, plus the back-offs, plus slack. */
  private readonly limitMs: number;

  constructor(url: string, opts: HttpFileOptions, chunkSize: number) {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const retries = opts.retries ?? FETCH_DEFAULTS.retries;
    const timeoutMs = opts.timeoutMs ?? FETCH_DEFAULTS.timeoutMs;
    const backoffMs = opts.backoffMs ?? FETCH_DEFAULTS.backoffMs;
    this.limitMs = (retries + 1) * (timeoutMs + 1000) + backoffMs * 2 ** (retries + 1) + 10_000;
    const data: FetchThreadData = {
      url,
      port: port2,
      signal: this.signal,
      fetch: { timeoutMs, retries, backoffMs, headers: opts.headers },
      chunkSize,
      maxInFlight: opts.maxInFlight,
      maxPrefetched: Math.max(16, 2 * (opts.readAheadChunks ?? 4)),
      cacheDir: opts.cacheDir === false ? undefined : (opts.cacheDir ?? defaultCacheDir()),
      cacheBytes: opts.cacheBytes ?? DEFAULT_CACHE_BYTES,
    };
    this.worker = new Worker(threadFilename(), { workerData: data, transferList: [port2] });
    this.worker.unref();
    this.port.unref();
  }

  call(message: { op: string; indices?: number[] }): Reply {
    const seq = ++this.seq;
    Atomics.store(this.signal, 0, 0);
    this.port.postMessage({ ...message, seq });
    const deadline = Date.now() + this.limitMs;
    for (;;) {
      Atomics.wait(this.signal, 0, 0, 1000);
      const got = receiveMessageOnPort(this.port);
      if (got) {
        const reply = got.message as Reply;
        if (reply.seq !== seq) continue;
        if (reply.error) {
          const { message: text, code, permanent } = reply.error;
          throw permanent ? new HttpPermanentError(text, code) : code === "EIO" ? new HttpTransientError(text) : new IoError(text, code);
        }
        return reply;
      }
      if (Date.now() > deadline) throw new IoError(`the HTTP fetch thread did not answer within ${this.limitMs} ms`, "ETIMEDOUT");
      // Signalled but the reply is not visible yet: wait a little rather than spin.
      if (Atomics.load(this.signal, 0) === 1) Atomics.wait(this.signal, 0, 1, 1);
    }
  }

  fetch(indices: number[]): Uint8Array[] {
    return this.call({ op: "get", indices }).chunks!;
  }

  prefetch(indices: number[]): void {
    this.port.postMessage({ op: "prefetch", indices });
  }

  close(): void {
    this.port.close();
    void this.worker.terminate();
  }
}

/** A read-only remote file with its wire counters. */
export class HttpFile extends RemoteFile {
  constructor(
    object: HttpObject,
    reader: ChunkReader,
    private readonly bridge: FetchThreadBridge,
    log?: (line: string) => void,
  ) {
    super(object, reader, { log, close: () => bridge.close() });
  }

  /** Opens `url` (http: or https:), pinning the object: its size and validators are fixed from here on. */
  static open(url: string, opts: HttpFileOptions = {}): HttpFile {
    if (!isHttpUrl(url)) throw new IoError(`${url}: not an http(s) URL`, "EINVAL");
    const chunk = chunkOptions(opts);
    const bridge = new FetchThreadBridge(url, opts, chunk.chunkSize);
    try {
      const { object } = bridge.call({ op: "open" });
      return new HttpFile(object!, new ChunkReader(object!.size, bridge, chunk), bridge, opts.log);
    } catch (e) {
      bridge.close();
      throw e;
    }
  }

  /** Requests, bytes and retries on the wire, and chunks served from the persistent cache. */
  wireStats(): ChunkServiceStats {
    return this.bridge.call({ op: "stats" }).stats!;
  }
}
