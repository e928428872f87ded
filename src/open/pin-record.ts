/**
 * The record of which version of a remote backing file an overlay was made over, and its check; with no
 * platform API, so that Node (remote-pin.ts: `<overlay>.remote.json` beside the overlay) and the page
 * (web/overlay-pins.ts: a file in the origin private file system) keep and check the same record.
 *
 * UTF-8 JSON, one line:
 *   { "url": "<backing URL as named by the overlay>", "size": <bytes>, "etag"?: "<ETag>", "lastModified"?: "<HTTP date>" }
 * qcow2 stores only the backing file's name (QEMU itself does not notice a change): without this record a
 * changed object would be read under writes made against its old bytes.
 */
import { type HttpObject, pinChange } from "../io/http-object.js";
import { RequestError } from "../engine/errors.js";

export type PinRecord = Pick<HttpObject, "url" | "size" | "etag" | "lastModified">;

export function pinRecordText(object: PinRecord): string {
  const { url, size, etag, lastModified } = object;
  return `${JSON.stringify({ url, size, etag, lastModified })}\n`;
}

/** Parses a record; `where` names it in the error when it is damaged. */
export function parsePinRecord(text: string, where: string, forUrl: string): PinRecord {
  let pinned: { url?: unknown; size?: unknown; etag?: unknown; lastModified?: unknown };
  try {
    pinned = JSON.parse(text);
  } catch {
    throw new RequestError(`${where} is damaged (not JSON): cannot tell which version of ${forUrl} the overlay was made over`);
  }
  return {
    url: String(pinned.url),
    size: Number(pinned.size),
    etag: typeof pinned.etag === "string" ? pinned.etag : undefined,
    lastModified: typeof pinned.lastModified === "string" ? pinned.lastModified : undefined,
  };
}

/** The refusal when `object` is not the version `pin` records (undefined when it is, or the pin is another URL's). */
export function pinRefusal(pin: PinRecord, object: Pick<HttpObject, "url" | "size" | "etag" | "lastModified">, overlay: string): string | undefined {
  if (pin.url !== object.url) return undefined;
  const change = pinChange(pin, object);
  return change && `${object.url} changed since the overlay ${overlay} was made over it (${change}): refusing to mix its new bytes with the overlay's writes`;
}
