/**
 * The browser's HTTP block file: the same chunk reader and remote file as Node's (chunk-reader.ts,
 * remote-file.ts) and the same wire checks (http-object.ts), with chunks fetched by synchronous
 * XMLHttpRequest — allowed only inside a dedicated Worker, which is where the engine runs in the page
 * (src/worker/web-worker.ts); the page's thread, and the emulator on it, never block.
 *
 * A synchronous XHR cannot run in the background, so there is no read-ahead in flight here: a read waits
 * for its own chunks, asked for in one request per run of adjacent missing chunks. Retries and back-off as
 * in Node (http-fetch.ts), the back-off slept with `Atomics.wait` (allowed in a Worker).
 */
import { IoError } from "./block-file.js";
import { adjacentRuns } from "./chunk-service.js";
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
  constructor(
    private readonly obj: HttpObject,
    private readonly chunkSize: number,
    private readonly opts: WebHttpFileOptions,
  ) {}

  fetch(indices: number[]): Uint8Array[] {
    const got = new Map<number, Uint8Array>();
    for (const run of adjacentRuns(indices, 16)) {
      const offset = run[0] * this.chunkSize;
      const end = Math.min(this.obj.size, (run[run.length - 1] + 1) * this.chunkSize);
      const bytes = withRetries(this.opts, () => {
        const { xhr, body } = rangeRequest(this.obj.finalUrl, offset, end - offset, this.opts);
        checkRangeAnswer(this.obj, offset, end - offset, xhr.status, (n) => xhr.getResponseHeader(n));
        if (body.length !== end - offset) throw new HttpTransientError(`${this.obj.url}: the server sent ${body.length} bytes instead of ${end - offset}`);
        return body;
      });
      for (const i of run) got.set(i, bytes.slice(i * this.chunkSize - offset, Math.min(end, (i + 1) * this.chunkSize) - offset));
    }
    return indices.map((i) => got.get(i)!);
  }

  prefetch(): void {}
}

/** Opens `url` from inside a Worker: a read-only BlockFile, the object pinned. */
export function openWebHttpFile(url: string, opts: WebHttpFileOptions = {}): RemoteFile {
  if (!isHttpUrl(url)) throw new IoError(`${url}: not an http(s) URL`, "EINVAL");
  const chunk = chunkOptions(opts);
  const object = withRetries(opts, () => {
    const { xhr } = rangeRequest(url, 0, 1, opts);
    return pinObject(url, xhr.responseURL || url, xhr.status, (n) => xhr.getResponseHeader(n));
  });
  return new RemoteFile(object, new ChunkReader(object.size, new XhrChunkSource(object, chunk.chunkSize, opts), chunk), { log: opts.log });
}
