/**
 * What the page learns of a remote image before making an overlay over it, by Range requests: its format
 * and virtual size, and the version (size, ETag, Last-Modified) of every remote layer of its chain — the
 * image, then the backing file its qcow2 header names, and so on — for the overlay's record
 * (overlay-pins.ts), so that a change in any layer is refused.
 *
 * qcow2 header fields read (big-endian; QEMU's docs/interop/qcow2.txt):
 *   0   4  magic "QFI\xfb"
 *   8   8  backing_file_offset (0: no backing file)
 *  16   4  backing_file_size
 *  24   8  size (virtual)
 * Anything not qcow2 is raw (its virtual size is its length) and ends the chain. A backing name that is not
 * a URL (a local path on the server's side) ends the walk: the browser cannot read it anyway.
 */
import { isHttpUrl } from "../io/http-object.js";
import type { PinRecord } from "../open/pin-record.js";
import { resolveBackingName } from "../open/raw-disk.js";

const QCOW2_MAGIC = 0x514649fb;
const MAX_LAYERS = 64;

export interface RemoteImage {
  format: "qcow2" | "raw";
  /** Virtual size (the overlay's size). */
  size: number;
  /** The version of each remote layer, the image first. */
  layers: PinRecord[];
}

type Fetch = (url: string, init: { headers: Record<string, string>; cache: "no-store" }) => Promise<Response>;

async function rangeOf(fetchFn: Fetch, url: string, first: number, last: number): Promise<{ bytes: Uint8Array; res: Response }> {
  const res = await fetchFn(url, { headers: { Range: `bytes=${first}-${last}` }, cache: "no-store" });
  if (res.status === 200) throw new Error(`${url}: the server does not support Range requests`);
  if (res.status !== 206) throw new Error(`${url}: HTTP status ${res.status}`);
  return { bytes: new Uint8Array(await res.arrayBuffer()), res };
}

/** Probes `url` and the remote layers under it (one or two Range requests each). */
export async function probeRemoteImage(url: string, fetchFn: Fetch = fetch): Promise<RemoteImage> {
  const layers: PinRecord[] = [];
  let top: Omit<RemoteImage, "layers"> | undefined;
  let at: string | undefined = url;
  while (at !== undefined) {
    if (layers.length >= MAX_LAYERS) throw new Error(`${url}: backing chain deeper than ${MAX_LAYERS} images (loop?)`);
    const { bytes, res } = await rangeOf(fetchFn, at, 0, 511);
    const total = /\/(\d+)\s*$/.exec(res.headers.get("content-range") ?? "")?.[1];
    if (!total) throw new Error(`${at}: no usable Content-Range in the answer`);
    layers.push({ url: at, size: Number(total), etag: res.headers.get("etag") ?? undefined, lastModified: res.headers.get("last-modified") ?? undefined });
    const head = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const qcow2 = head.byteLength >= 32 && head.getUint32(0) === QCOW2_MAGIC;
    top ??= qcow2 ? { format: "qcow2", size: Number(head.getBigUint64(24)) } : { format: "raw", size: Number(total) };
    at = qcow2 ? await backingName(fetchFn, at, bytes, head) : undefined;
  }
  return { ...top!, layers };
}

/** The URL of the layer under the qcow2 image at `url` (undefined: none, or not a URL). */
async function backingName(fetchFn: Fetch, url: string, bytes: Uint8Array, head: DataView): Promise<string | undefined> {
  const offset = Number(head.getBigUint64(8));
  const length = head.getUint32(16);
  if (offset === 0 || length === 0) return undefined;
  if (length > 1023) throw new Error(`${url}: backing file name of ${length} bytes (at most 1023)`);
  const name =
    offset + length <= bytes.length
      ? bytes.subarray(offset, offset + length)
      : (await rangeOf(fetchFn, url, offset, offset + length - 1)).bytes;
  const resolved = resolveBackingName(url, new TextDecoder().decode(name));
  return isHttpUrl(resolved) ? resolved : undefined;
}
