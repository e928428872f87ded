/**
 * The browser's HTTP block file: the same chunk reader and remote file as Node's (chunk-reader.ts,
 * remote-file.ts) and the same wire checks (http-object.ts), with chunks fetched by synchronous
 * XMLHttpRequest — allowed only inside a dedicated Worker, which is where the engine runs in the page
 * (src/worker/web-worker.ts); the page's thread, and the emulator on it, never block.
 *
 * A read waits for its own chunks: first from the persistent store (chunk-store.ts; in the page the OPFS
 * cache, opfs-chunk-cache.ts) when there is one, the rest asked for in one request per run of adjacent
 * missing chunks, then stored. A synchronous XHR cannot run in the background, so read-ahead is folded into
 * the demand request instead: when the chunk reader has asked to read ahead of a sequential reader, a
 * missing run is extended over those chunks (up to the read-ahead window), and the extra chunks are kept
 * here (and stored) until claimed. Retries and back-off as in Node (http-fetch.ts), the back-off slept with
 * `Atomics.wait` (allowed in a Worker).
 */
import { IoError } from "./block-file.js";
import { adjacentRuns } from "./chunk-service.js";
import type { SyncChunkStore } from "./chunk-store.js";
import { ChunkReader, type ChunkReaderOptions, type ChunkSource, chunkOptions } from "./chunk-reader.js";
import { FETCH_DEFAULTS, type FetchOptions } from "./http-fetch.js";
import { checkRangeAnswer, type HttpObject, HttpPermanentError, HttpTransientError, isHttpUrl, pinObject, rangeHeader } from "./http-object.js";
import { RemoteFile } from "./remote-file.js";

/** What this module uses of XMLHttpRequest (a Worker's, or a stand-in in tests). */
export interface SyncXhr {
  open(method: string, url: string, async: false): void;
  setRequestHeader(name: string, value: string): void;
  responseType: XMLHttpRequestResponseType;
  timeout: number;
  send(): void;
  readonly status: number;
  readonly response: unknown;
  readonly responseURL: string;
  getResponseHeader(name: string): string | null;
}

export interface WebHttpFileOptions extends ChunkReaderOptions, FetchOptions {
  /** Makes the request object (default: the Worker's XMLHttpRequest). */
  newXhr?: () => SyncXhr;
  log?: (line: string) => void;
  /** The persistent store of the pinned object's chunks (none: every miss goes to the server). */
  store?: (object: HttpObject, chunkSize: number) => SyncChunkStore | undefined;
  /** Why the pinned object must be refused (an overlay made over another version of it), or undefined. */
  refuse?: (object: HttpObject) => string | undefined;
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** One synchronous Range request: the status, the final URL, the headers and the body. */
function rangeRequest(url: string, offset: number, length: number, opts: WebHttpFileOptions): { xhr: SyncXhr; body: Uint8Array } {
  const xhr = opts.newXhr ? opts.newXhr() : (new XMLHttpRequest() as unknown as SyncXhr);
  xhr.open("GET", url, false);
  // Workers may set responseType on a synchronous request (a window may not).
  xhr.responseType = "arraybuffer";
  xhr.timeout = opts.timeoutMs ?? FETCH_DEFAULTS.timeoutMs;
  for (const [k, v] of Object.entries(opts.headers ?? {})) xhr.setRequestHeader(k, v);
  xhr.setRequestHeader("Range", rangeHeader(offset, length));
  try {
    xhr.send();
  } catch (e) {
    throw new HttpTransientError(`${url}: ${(e as Error)?.message ?? e}`);
  }
  if (xhr.status === 0) throw new HttpTransientError(`${url}: the request failed (network error, timeout or CORS refusal)`);
  return { xhr, body: new Uint8Array((xhr.response as ArrayBuffer | null) ?? new ArrayBuffer(0)) };
}

function withRetries<T>(opts: FetchOptions, attempt: () => T): T {
  const retries = opts.retries ?? FETCH_DEFAULTS.retries;
  let delay = opts.backoffMs ?? FETCH_DEFAULTS.backoffMs;
  for (let n = 0; ; n++) {
    try {
      return attempt();
    } catch (e) {
      if (e instanceof HttpPermanentError || !(e instanceof IoError) || n >= retries) throw e;
      sleep(delay);
      delay *= 2;
    }
  }
}

class XhrChunkSource implements ChunkSource {
  /** Chunks fetched ahead of a sequential reader, not yet claimed. */
  private readonly ahead = new Map<number, Uint8Array>();
  /** Chunks the reader asked to have read ahead (fetched with the next demand run they follow). */
  private readonly wanted = new Set<number>();
  private storeFailed = false;

  constructor(
    private readonly obj: HttpObject,
    private readonly chunk: Required<ChunkReaderOptions>,
    private readonly opts: WebHttpFileOptions,
    private readonly store: SyncChunkStore | undefined,
  ) {}

  fetch(indices: number[]): Uint8Array[] {
    const got = new Map<number, Uint8Array>();
    const missing: number[] = [];
    for (const i of indices) {
      const held = this.ahead.get(i) ?? this.fromStore(i);
      this.ahead.delete(i);
      this.wanted.delete(i);
      if (held) got.set(i, held);
      else missing.push(i);
    }
    for (const run of adjacentRuns(missing, 16)) {
      const extra = this.extension(run[run.length - 1]);
      const chunks = this.fetchRun(run[0], run.length + extra.length);
      run.forEach((i, k) => got.set(i, chunks[k]));
      extra.forEach((i, k) => this.ahead.set(i, chunks[run.length + k]));
      while (this.ahead.size > 2 * Math.max(1, this.chunk.readAheadChunks)) this.ahead.delete(this.ahead.keys().next().value as number);
    }
    return indices.map((i) => got.get(i)!);
  }

  prefetch(indices: number[]): void {
    for (const i of indices) this.wanted.add(i);
    // Forget the oldest wishes of a reader that jumped away.
    for (const i of this.wanted) {
      if (this.wanted.size <= 4 * Math.max(1, this.chunk.readAheadChunks)) break;
      this.wanted.delete(i);
    }
  }

  /** The chunks after `last` asked for ahead and not had yet (adjacent, up to the read-ahead window). */
  private extension(last: number): number[] {
    const out: number[] = [];
    for (let i = last + 1; out.length < this.chunk.readAheadChunks && this.wanted.has(i); i++) {
      if (this.ahead.has(i) || this.store?.has(i)) break;
      this.wanted.delete(i);
      out.push(i);
    }
    return out;
  }

  private chunkLength(i: number): number {
    return Math.min(this.chunk.chunkSize, this.obj.size - i * this.chunk.chunkSize);
  }

  private fromStore(i: number): Uint8Array | undefined {
    try {
      return this.store?.get(i, this.chunkLength(i));
    } catch (e) {
      this.reportStore(e);
      return undefined;
    }
  }

  /** `count` chunks from `first` in one request, each stored. */
  private fetchRun(first: number, count: number): Uint8Array[] {
    const { chunkSize } = this.chunk;
    const offset = first * chunkSize;
    const end = Math.min(this.obj.size, (first + count) * chunkSize);
    const bytes = withRetries(this.opts, () => {
      const { xhr, body } = rangeRequest(this.obj.finalUrl, offset, end - offset, this.opts);
      checkRangeAnswer(this.obj, offset, end - offset, xhr.status, (n) => xhr.getResponseHeader(n));
      if (body.length !== end - offset) throw new HttpTransientError(`${this.obj.url}: the server sent ${body.length} bytes instead of ${end - offset}`);
      return body;
    });
    const chunks: Uint8Array[] = [];
    for (let i = first; i < first + count; i++) {
      const data = bytes.slice(i * chunkSize - offset, i * chunkSize - offset + this.chunkLength(i));
      chunks.push(data);
      try {
        this.store?.put(i, data);
      } catch (e) {
        this.reportStore(e);
      }
    }
    return chunks;
  }

  /** A store that fails (quota, a lost handle) is reported once; chunks are still served. */
  private reportStore(e: unknown): void {
    if (this.storeFailed) return;
    this.storeFailed = true;
    (this.opts.log ?? console.error)(`refcow: the chunk cache failed for ${this.obj.url}: ${(e as Error)?.message ?? e}`);
  }
}

/** Opens `url` from inside a Worker: a read-only BlockFile, the object pinned. */
export function openWebHttpFile(url: string, opts: WebHttpFileOptions = {}): RemoteFile {
  if (!isHttpUrl(url)) throw new IoError(`${url}: not an http(s) URL`, "EINVAL");
  const chunk = chunkOptions(opts);
  const object = withRetries(opts, () => {
    const { xhr } = rangeRequest(url, 0, 1, opts);
    return pinObject(url, xhr.responseURL || url, xhr.status, (n) => xhr.getResponseHeader(n));
  });
  const refusal = opts.refuse?.(object);
  if (refusal) throw new HttpPermanentError(refusal);
  const source = new XhrChunkSource(object, chunk, opts, opts.store?.(object, chunk.chunkSize));
  return new RemoteFile(object, new ChunkReader(object.size, source, chunk), { log: opts.log });
}
