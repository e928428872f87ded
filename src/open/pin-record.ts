/**
 * The record of which version of a remote backing file an overlay was made over, and its check; with no
 * platform API, so that Node (remote-pin.ts: `<overlay>.remote.json` beside the overlay) and the page
 * (web/overlay-pins.ts: a file in the origin private file system) keep and check the same record.
 *
 * UTF-8 JSON, one line:
 *   { "url": "<backing URL as named by the overlay>", "size": <bytes>, "etag"?: "<ETag>", "lastModified"?: "<HTTP date>",
 *     "layers"?: [ { "url", "size", "etag"?, "lastModified"? }, ... ] }
 * `layers` records the remote layers deeper in the chain (a remote qcow2 over another URL), nearest first,
 * when the overlay was made by a refcow that reads the whole chain; a layer without a record is not checked.
 * qcow2 stores only the backing file's name (QEMU itself does not notice a change): without this record a
 * changed object would be read under writes made against its old bytes.
 */
import { type HttpObject, pinChange } from "../io/http-object.js";
import { RequestError } from "../engine/errors.js";

export type PinRecord = Pick<HttpObject, "url" | "size" | "etag" | "lastModified">;

export function pinRecordText(records: PinRecord[]): string {
  const version = ({ url, size, etag, lastModified }: PinRecord) => ({ url, size, etag, lastModified });
  const [direct, ...deeper] = records;
  return `${JSON.stringify({ ...version(direct), layers: deeper.length > 0 ? deeper.map(version) : undefined })}\n`;
}

/** Parses a record (the direct backing file's version first); `where` names it in the error when it is damaged. */
export function parsePinRecord(text: string, where: string, forUrl: string): PinRecord[] {
  type Raw = { url?: unknown; size?: unknown; etag?: unknown; lastModified?: unknown };
  let pinned: Raw & { layers?: unknown };
  try {
    pinned = JSON.parse(text);
  } catch {
    throw new RequestError(`${where} is damaged (not JSON): cannot tell which version of ${forUrl} the overlay was made over`);
  }
  const version = (r: Raw): PinRecord => ({
    url: String(r.url),
    size: Number(r.size),
    etag: typeof r.etag === "string" ? r.etag : undefined,
    lastModified: typeof r.lastModified === "string" ? r.lastModified : undefined,
  });
  return [version(pinned), ...(Array.isArray(pinned.layers) ? (pinned.layers as Raw[]).map(version) : [])];
}

/** The refusal when `object` is not the version the records hold for its URL (undefined when it is, or none does). */
export function pinRefusal(records: PinRecord[], object: Pick<HttpObject, "url" | "size" | "etag" | "lastModified">, overlay: string): string | undefined {
  const pin = records.find((r) => r.url === object.url);
  const change = pin && pinChange(pin, object);
  return change && `${object.url} changed since the overlay ${overlay} was made over it (${change}): refusing to mix its new bytes with the overlay's writes`;
}
