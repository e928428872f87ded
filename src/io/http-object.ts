/**
 * A remote object read by HTTP Range requests (RFC 9110 §14), pinned at open, and the checks every answer
 * must pass. Shared by the Node fetch thread and the browser's fetch code.
 *
 * Wire contract refcow relies on:
 *   request   GET <url>  with  `Range: bytes=<first>-<last>`   (inclusive byte positions)
 *   answer    206 Partial Content
 *             `Content-Range: bytes <first>-<last>/<complete length>`   (the length must be a number, not `*`)
 *             body of exactly last-first+1 bytes
 *             `ETag` and/or `Last-Modified`: the validators the object is pinned by
 * A 200 to a Range request means the server ignores Range (it is sending the whole object): refused. A
 * 3xx is followed (the fetch API does it) and the object is then read at the URL it was found at.
 *
 * Pinning: the first answer fixes the size and the validators. Every later answer must carry the same
 * (a validator the server stops sending is a change too): otherwise the object changed under an image
 * that depends on its bytes, and refcow refuses it instead of mixing old and new bytes.
 */
import { IoError } from "./block-file.js";

export interface HttpObject {
  /** The URL the object was named by (the image's backing file name). */
  url: string;
  /** Where it was found after redirects: every Range request goes there. */
  finalUrl: string;
  size: number;
  etag?: string;
  lastModified?: string;
}

/** A failure that retrying will not cure (404, a changed object, no Range support...). */
export class HttpPermanentError extends IoError {
  constructor(message: string, code = "EIO") {
    super(message, code);
    this.name = "HttpPermanentError";
  }
}

/** A failure worth retrying (5xx, a reset connection, a timeout, a truncated body). */
export class HttpTransientError extends IoError {
  constructor(message: string) {
    super(message, "EIO");
    this.name = "HttpTransientError";
  }
}

/** Statuses that say "try again later". */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** The header view the checks need (a fetch Response's `headers`, or an XHR's getResponseHeader). */
export type HeaderGetter = (name: string) => string | null | undefined;

export interface ContentRange {
  first: number;
  last: number;
  complete: number;
}

/** Parses `bytes <first>-<last>/<complete>`; undefined when absent, malformed or of unknown length. */
export function parseContentRange(value: string | null | undefined): ContentRange | undefined {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+)\s*$/i.exec(value ?? "");
  if (!m) return undefined;
  const [first, last, complete] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (![first, last, complete].every(Number.isSafeInteger) || last < first || last >= complete) return undefined;
  return { first, last, complete };
}

/** `bytes=<first>-<last>` for the `length` bytes at `offset`. */
export function rangeHeader(offset: number, length: number): string {
  return `bytes=${offset}-${offset + length - 1}`;
}

/** "bytes 1048576-2097151 of http://..." for messages. */
export function describeRange(url: string, offset: number, length: number): string {
  return `${url} bytes ${offset}-${offset + length - 1}`;
}

/**
 * Checks the answer to the probe (`Range: bytes=0-0`) and returns the pinned object. `status` and headers
 * are the final answer's, after redirects.
 */
export function pinObject(url: string, finalUrl: string, status: number, header: HeaderGetter): HttpObject {
  if (status === 200) {
    throw new HttpPermanentError(`${url}: the server does not support Range requests (it answered a Range request with the whole object, status 200); refcow reads remote images by ranges only`);
  }
  if (status === 416) {
    const size = /\/(\d+)\s*$/.exec(header("content-range") ?? "")?.[1];
    if (size === "0") throw new HttpPermanentError(`${url}: the object is empty`);
  }
  if (status !== 206) throw statusError(url, status, "opening");
  const range = parseContentRange(header("content-range"));
  if (!range || range.first !== 0) {
    throw new HttpPermanentError(`${url}: the server answered 206 without a usable Content-Range (got '${header("content-range") ?? ""}'): the object's size cannot be known`);
  }
  const etag = header("etag") ?? undefined;
  const lastModified = header("last-modified") ?? undefined;
  return { url, finalUrl, size: range.complete, etag: etag || undefined, lastModified: lastModified || undefined };
}

/** The error for a status that is neither 206 nor a redirect. */
export function statusError(what: string, status: number, doing: string): IoError {
  const text = `${what}: HTTP status ${status} while ${doing}`;
  return isTransientStatus(status) ? new HttpTransientError(text) : new HttpPermanentError(text, status === 404 ? "ENOENT" : status === 403 || status === 401 ? "EACCES" : "EIO");
}

/**
 * Checks the headers of an answer to `Range: bytes=<offset>-<offset+length-1>` against the pinned object.
 * The body's length is checked by the caller once read.
 */
export function checkRangeAnswer(obj: HttpObject, offset: number, length: number, status: number, header: HeaderGetter): void {
  const what = describeRange(obj.url, offset, length);
  if (status === 200) throw new HttpPermanentError(`${what}: the server stopped honouring Range requests (status 200 with the whole object)`);
  if (status !== 206) throw statusError(what, status, "reading");
  const changed = objectChange(obj, header);
  if (changed) throw new HttpPermanentError(`${obj.url} changed since it was opened (${changed}): refusing to mix its old and new bytes`, "ESTALE");
  const range = parseContentRange(header("content-range"));
  if (!range || range.first !== offset || range.last !== offset + length - 1) {
    throw new HttpPermanentError(`${what}: the server answered the wrong range (Content-Range '${header("content-range") ?? ""}')`);
  }
}

/** What differs between the pinned object and an answer's headers ("ETag "a" -> "b""), or undefined. */
export function objectChange(obj: HttpObject, header: HeaderGetter): string | undefined {
  const range = parseContentRange(header("content-range"));
  return pinChange(obj, {
    size: range?.complete ?? obj.size,
    etag: header("etag") || undefined,
    lastModified: header("last-modified") || undefined,
  });
}

/**
 * What differs between a pinned version of an object and another sighting of it, or undefined: the size,
 * then the ETag when the pin has one (a strong identity), else Last-Modified. A validator that disappears
 * counts as a change.
 */
export function pinChange(pinned: Pick<HttpObject, "size" | "etag" | "lastModified">, now: Pick<HttpObject, "size" | "etag" | "lastModified">): string | undefined {
  if (now.size !== pinned.size) return `size ${pinned.size} -> ${now.size}`;
  if (pinned.etag !== undefined && now.etag !== pinned.etag) return `ETag ${pinned.etag} -> ${now.etag ?? "none"}`;
  if (pinned.etag === undefined && pinned.lastModified !== undefined && now.lastModified !== pinned.lastModified) {
    return `Last-Modified ${pinned.lastModified} -> ${now.lastModified ?? "none"}`;
  }
  return undefined;
}

/** What identifies this version of the object: the key of its cached chunks. */
export function objectValidator(obj: HttpObject): string {
  return `${obj.size}|${obj.etag ?? ""}|${obj.etag === undefined ? (obj.lastModified ?? "") : ""}`;
}

/** True for http: and https: names (a backing file name QEMU would hand to its curl driver). */
export function isHttpUrl(name: string): boolean {
  return /^https?:\/\//i.test(name);
}
