/**
 * The version of a remote backing file an overlay was made over, kept beside the overlay so that a changed
 * object is refused instead of read under writes made against its old bytes. (qcow2 stores only the
 * backing file's name; QEMU itself does not notice such a change.)
 *
 * `<overlay>.remote.json`, UTF-8 JSON:
 *   { "url": "<backing URL as named by the overlay>", "size": <bytes>, "etag"?: "<ETag>", "lastModified"?: "<HTTP date>" }
 * Written when refcow makes the overlay (boot --overlay, openV86Disk's overlay); checked whenever refcow
 * opens that overlay's backing file by URL. An overlay without one (made by qemu-img, say) is not checked.
 */
import * as fs from "node:fs";
import { type HttpObject, pinChange } from "../io/http-object.js";
import { RequestError } from "../engine/errors.js";

export function pinPath(overlay: string): string {
  return `${overlay}.remote.json`;
}

/** Records the version of `object` that `overlay` is made over. */
export function writePin(overlay: string, object: HttpObject): void {
  const { url, size, etag, lastModified } = object;
  fs.writeFileSync(pinPath(overlay), `${JSON.stringify({ url, size, etag, lastModified })}\n`);
}

/** Refuses `object` (the backing file `overlay` names) when it is not the version the overlay was made over. */
export function checkPin(overlay: string, object: HttpObject): void {
  let text: string;
  try {
    text = fs.readFileSync(pinPath(overlay), "utf8");
  } catch {
    return;
  }
  let pinned: { url?: unknown; size?: unknown; etag?: unknown; lastModified?: unknown };
  try {
    pinned = JSON.parse(text);
  } catch {
    throw new RequestError(`${pinPath(overlay)} is damaged (not JSON): cannot tell which version of ${object.url} ${overlay} was made over`);
  }
  if (pinned.url !== object.url) return;
  const change = pinChange(
    { size: Number(pinned.size), etag: typeof pinned.etag === "string" ? pinned.etag : undefined, lastModified: typeof pinned.lastModified === "string" ? pinned.lastModified : undefined },
    object,
  );
  if (change) {
    throw new RequestError(`${object.url} changed since the overlay ${overlay} was made over it (${change}): refusing to mix its new bytes with the overlay's writes`);
  }
}
