/**
 * Fetching a pinned remote object's bytes, asynchronously, with retries: the part of the HTTP block file
 * that runs off the engine's thread (in Node's fetch thread; in the browser, a fetch worker). Uses the
 * platform's `fetch` (redirects followed by it).
 *
 * Retries: a transient failure (5xx, 408, 429, a reset or refused connection, a timeout, a body shorter
 * than announced) is retried `retries` times with exponential back-off from `backoffMs`; a permanent one
 * (404, 403, a changed object, no Range support) fails at once.
 */
import { IoError } from "./block-file.js";
import { checkRangeAnswer, describeRange, HttpPermanentError, type HttpObject, HttpTransientError, pinObject, rangeHeader } from "./http-object.js";

export interface FetchOptions {
  /** Per-request limit in ms, body included (default 30 000). */
  timeoutMs?: number;
  /** Retries of a transient failure (default 4). */
  retries?: number;
  /** First back-off in ms, doubled at each retry (default 100). */
  backoffMs?: number;
  /** Extra request headers (authorization...). */
  headers?: Record<string, string>;
}

export const FETCH_DEFAULTS = { timeoutMs: 30_000, retries: 4, backoffMs: 100 } as const;

/** Counters of what went over the wire. */
export interface WireStats {
  requests: number;
  bytes: number;
  retries: number;
}

export function newWireStats(): WireStats {
  return { requests: 0, bytes: 0, retries: 0 };
}

/** Opens (pins) the object at `url`: one `Range: bytes=0-0` request, redirects followed. */
export async function openHttpObject(url: string, opts: FetchOptions = {}, stats = newWireStats()): Promise<HttpObject> {
  return withRetries(opts, stats, async () => {
    const res = await request(url, rangeHeader(0, 1), opts, stats, `opening ${url}`);
    try {
      const obj = pinObject(url, res.url || url, res.status, (n) => res.headers.get(n));
      await readBody(res, 1, url, stats);
      return obj;
    } finally {
      // A server ignoring Range is sending the whole object: stop it.
      if (!res.bodyUsed) await res.body?.cancel().catch(() => undefined);
    }
  });
}

/** The `length` bytes at `offset` of the pinned object. */
export async function fetchRange(obj: HttpObject, offset: number, length: number, opts: FetchOptions = {}, stats = newWireStats()): Promise<Uint8Array> {
  const what = describeRange(obj.url, offset, length);
  return withRetries(opts, stats, async () => {
    const res = await request(obj.finalUrl, rangeHeader(offset, length), opts, stats, `reading ${what}`);
    try {
      checkRangeAnswer(obj, offset, length, res.status, (n) => res.headers.get(n));
      return await readBody(res, length, what, stats);
    } finally {
      if (!res.bodyUsed) await res.body?.cancel().catch(() => undefined);
    }
  });
}

async function request(url: string, range: string, opts: FetchOptions, stats: WireStats, doing: string): Promise<Response> {
  stats.requests++;
  try {
    return await fetch(url, {
      headers: { ...opts.headers, range, "accept-encoding": "identity" },
      redirect: "follow",
      signal: AbortSignal.timeout(opts.timeoutMs ?? FETCH_DEFAULTS.timeoutMs),
    });
  } catch (e) {
    throw networkError(e, doing);
  }
}

async function readBody(res: Response, length: number, what: string, stats: WireStats): Promise<Uint8Array> {
  let body: Uint8Array;
  try {
    body = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    throw networkError(e, `reading the body of ${what}`);
  }
  stats.bytes += body.length;
  if (body.length !== length) throw new HttpTransientError(`${what}: the server sent ${body.length} bytes instead of ${length}`);
  return body;
}

/** A fetch that threw: a timeout, a reset, a refused connection... all worth a retry. */
function networkError(e: unknown, doing: string): IoError {
  if (e instanceof IoError) return e;
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return new HttpTransientError(`timed out ${doing}`);
  const cause = err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
  return new HttpTransientError(`${doing}: ${cause}`);
}

async function withRetries<T>(opts: FetchOptions, stats: WireStats, attempt: () => Promise<T>): Promise<T> {
  const retries = opts.retries ?? FETCH_DEFAULTS.retries;
  let delay = opts.backoffMs ?? FETCH_DEFAULTS.backoffMs;
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (e instanceof HttpPermanentError || n >= retries) throw e;
      if (!(e instanceof IoError)) throw e;
      stats.retries++;
      await new Promise((r) => setTimeout(r, delay));
      delay *= 2;
    }
  }
}
