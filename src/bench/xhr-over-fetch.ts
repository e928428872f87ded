/**
 * Just enough of the browser's XMLHttpRequest, over Node's fetch, for v86's own loader to read a disk image
 * by URL in Node the way it does in a browser: v86's AsyncXHRBuffer (`hda: { url, async: true,
 * fixed_chunk_size }`) asks for ranges with XHR, but in Node v86 picks its file-system loader instead
 * whenever `process.versions.node` is set or XMLHttpRequest is missing, and decides once, when its module
 * is evaluated. `withXhrLoader(load)` therefore installs this class, hides `process.versions.node`, runs
 * `load` (which must be the first import of v86 in the process), and puts both back.
 *
 * What v86 uses, and all this class offers: open(method, url, async=true), responseType "arraybuffer" (or
 * "json"), setRequestHeader, send(null), abort(), readyState, status, response, getResponseHeader,
 * onreadystatechange (called when the headers are in, and when done), onload, onerror, onprogress (never
 * called). An URL that is not http(s) (v86 loads its wasm by path) is read from the file system, as v86's
 * own Node loader would. Bodies are read whole; no streaming, no timeouts, no credentials.
 */
import { readFile } from "node:fs/promises";

export interface XhrCounters {
  /** http(s) requests made. */
  requests: number;
  /** Body bytes they received. */
  bytes: number;
}

const counters: XhrCounters = { requests: 0, bytes: 0 };

/** What the XHR loader fetched over http(s) so far in this process. */
export function xhrCounters(): XhrCounters {
  return { ...counters };
}

class FetchXhr {
  readyState = 0;
  status = 0;
  response: unknown = null;
  responseType: "" | "arraybuffer" | "json" = "";
  onreadystatechange: (() => void) | null = null;
  onload: (() => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  onprogress: ((e: unknown) => void) | null = null;
  private method = "GET";
  private url = "";
  private readonly headers: Record<string, string> = {};
  private responseHeaders: Headers | undefined;
  private readonly controller = new AbortController();
  private aborted = false;

  open(method: string, url: string, isAsync = true): void {
    if (!isAsync) throw new Error("XMLHttpRequest (fetch-based): synchronous requests are not supported");
    this.method = method.toUpperCase();
    this.url = url;
    this.readyState = 1;
  }

  setRequestHeader(name: string, value: string): void {
    this.headers[name] = value;
  }

  getResponseHeader(name: string): string | null {
    return this.responseHeaders?.get(name) ?? null;
  }

  abort(): void {
    this.aborted = true;
    this.controller.abort();
  }

  send(_body: null = null): void {
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      let body: Uint8Array;
      if (/^https?:/i.test(this.url)) {
        counters.requests++;
        const res = await fetch(this.url, { method: this.method, headers: this.headers, signal: this.controller.signal });
        this.status = res.status;
        this.responseHeaders = res.headers;
        this.readyState = 2;
        this.onreadystatechange?.();
        if (this.aborted) return;
        body = new Uint8Array(await res.arrayBuffer());
        counters.bytes += body.byteLength;
      } else {
        body = await readFile(this.url);
        this.status = 200;
        this.responseHeaders = new Headers();
      }
      if (this.aborted) return;
      this.response = this.responseType === "json" ? JSON.parse(new TextDecoder().decode(body)) : body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
      this.readyState = 4;
      this.onreadystatechange?.();
      this.onload?.();
    } catch (e) {
      if (this.aborted) return;
      this.readyState = 4;
      this.onerror?.(e);
    }
  }
}

/**
 * Runs `load` (an `import()` that evaluates v86 for the first time) with this XMLHttpRequest installed and
 * `process.versions.node` hidden, so v86 picks its XHR loader; both are put back afterwards, XMLHttpRequest
 * staying for v86's later requests.
 */
export async function withXhrLoader<T>(load: () => Promise<T>): Promise<T> {
  const g = globalThis as { XMLHttpRequest?: unknown };
  g.XMLHttpRequest = FetchXhr;
  const saved = Object.getOwnPropertyDescriptor(process.versions, "node");
  if (!saved?.configurable) throw new Error("process.versions.node cannot be hidden: v86 would load the image with the file system");
  delete (process.versions as { node?: string }).node;
  try {
    return await load();
  } finally {
    Object.defineProperty(process.versions, "node", saved);
  }
}
