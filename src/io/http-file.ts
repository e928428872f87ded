/**
 * Opening a remote image by URL in Node: a read-only BlockFile (remote-file.ts) whose chunks come from a
 * fetch thread (http-fetch-thread.ts). The engine's thread — a worker in every serve path, the CLI's main
 * thread for one-shot commands — blocks in `Atomics.wait` while the fetch thread works; the fetch thread
 * keeps read-ahead requests going in the meantime.
 *
 * One fetch thread serves every remote file a thread opens (its start costs a few hundred ms).
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
import type { FetchThreadData, ObjectOptions } from "./http-fetch-thread.js";
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

/** The synchronous side of the fetch thread, shared by every remote file this thread opens. */
class FetchThread {
  private readonly worker: Worker;
  private readonly port;
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private seq = 0;
  private nextId = 1;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    const data: FetchThreadData = { port: port2, signal: this.signal };
    // A flag meant for the main script (--input-type) would stop the thread from loading.
    const execArgv = process.execArgv.filter((a) => !a.startsWith("--input-type"));
    this.worker = new Worker(threadFilename(), { workerData: data, transferList: [port2], execArgv });
    // Neither keeps the process alive: a command ends when its work does.
    this.worker.unref();
    this.port.unref();
    this.worker.on("error", () => undefined);
    // Its first word says it runs: a thread that cannot start fails the open here, not after every timeout.
    if (Atomics.wait(this.signal, 0, 0, STARTUP_LIMIT_MS) === "timed-out") {
      void this.worker.terminate();
      throw new IoError(`the HTTP fetch thread did not start within ${STARTUP_LIMIT_MS} ms`, "EIO");
    }
  }

  newId(): number {
    return this.nextId++;
  }

  /** Sends a request and waits (blocking this thread) for its reply, at most `limitMs`. */
  call(message: { op: string; id: number; indices?: number[]; options?: ObjectOptions }, limitMs: number): Reply {
    const seq = ++this.seq;
    Atomics.store(this.signal, 0, 0);
    this.port.postMessage({ ...message, seq });
    const deadline = Date.now() + limitMs;
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
      if (Date.now() > deadline) throw new IoError(`the HTTP fetch thread did not answer within ${limitMs} ms`, "ETIMEDOUT");
      // Signalled but the reply is not visible yet: wait a little rather than spin.
      if (Atomics.load(this.signal, 0) === 1) Atomics.wait(this.signal, 0, 1, 1);
    }
  }

  post(message: { op: string; id: number; indices?: number[] }): void {
    this.port.postMessage(message);
  }
}

let fetchThread: FetchThread | undefined;
const STARTUP_LIMIT_MS = 20_000;

/** One remote object's chunk source, through the shared fetch thread. */
class ObjectBridge implements ChunkSource {
  readonly id: number;
  /** Longest a call may take: every retry timing out, plus the back-offs, plus slack. */
  private readonly limitMs: number;

  constructor(
    private readonly thread: FetchThread,
    fetch: Required<Pick<FetchOptions, "timeoutMs" | "retries" | "backoffMs">>,
  ) {
    this.id = thread.newId();
    this.limitMs = (fetch.retries + 1) * (fetch.timeoutMs + 1000) + fetch.backoffMs * 2 ** (fetch.retries + 1) + 10_000;
  }

  open(options: ObjectOptions): HttpObject {
    return this.thread.call({ op: "open", id: this.id, options }, this.limitMs).object!;
  }

  fetch(indices: number[]): Uint8Array[] {
    return this.thread.call({ op: "get", id: this.id, indices }, this.limitMs).chunks!;
  }

  prefetch(indices: number[]): void {
    this.thread.post({ op: "prefetch", id: this.id, indices });
  }

  stats(): ChunkServiceStats {
    return this.thread.call({ op: "stats", id: this.id }, this.limitMs).stats!;
  }

  close(): void {
    this.thread.post({ op: "close", id: this.id });
  }
}

/** A read-only remote file with its wire counters. */
export class HttpFile extends RemoteFile {
  private constructor(
    object: HttpObject,
    reader: ChunkReader,
    private readonly bridge: ObjectBridge,
    log?: (line: string) => void,
  ) {
    super(object, reader, { log, close: () => bridge.close() });
  }

  /** Opens `url` (http: or https:), pinning the object: its size and validators are fixed from here on. */
  static open(url: string, opts: HttpFileOptions = {}): HttpFile {
    if (!isHttpUrl(url)) throw new IoError(`${url}: not an http(s) URL`, "EINVAL");
    const chunk = chunkOptions(opts);
    const fetch = {
      timeoutMs: opts.timeoutMs ?? FETCH_DEFAULTS.timeoutMs,
      retries: opts.retries ?? FETCH_DEFAULTS.retries,
      backoffMs: opts.backoffMs ?? FETCH_DEFAULTS.backoffMs,
    };
    fetchThread ??= new FetchThread();
    const bridge = new ObjectBridge(fetchThread, fetch);
    const object = bridge.open({
      url,
      fetch: { ...fetch, headers: opts.headers },
      chunkSize: chunk.chunkSize,
      maxInFlight: opts.maxInFlight,
      maxPrefetched: Math.max(16, 2 * chunk.readAheadChunks),
      cacheDir: opts.cacheDir === false ? undefined : (opts.cacheDir ?? defaultCacheDir()),
      cacheBytes: opts.cacheBytes ?? DEFAULT_CACHE_BYTES,
    });
    return new HttpFile(object, new ChunkReader(object.size, bridge, chunk), bridge, opts.log);
  }

  /** Requests, bytes and retries on the wire, and chunks served from the persistent cache. */
  wireStats(): ChunkServiceStats {
    return this.bridge.stats();
  }
}
