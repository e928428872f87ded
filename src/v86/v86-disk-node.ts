/**
 * `openV86Disk(path)`: a qcow2 (or raw) image file, served by refcow from a worker thread, as the disk of
 * a v86 emulator in Node (see v86-disk.ts for the whole recipe).
 *
 * `openV86Disk(url, { overlay: "disk.qcow2" })`: an image read over http(s) (Range requests, chunk cache)
 * under a local qcow2 overlay made on first use and reused after; the guest's writes stay in the overlay.
 */
import type { ImageOpenOptions } from "../engine/types.js";
import { ImagePool, type ServedImageOptions } from "../worker/pool.js";
import { ServedAsyncDisk } from "../worker/served-async-disk.js";
import { isHttpUrl } from "../io/http-object.js";
import { ensureOverlay } from "../open/persistent-overlay.js";
import { withDeviceCaches, RefcowV86Disk, type V86DiskOptions } from "./v86-disk.js";
import { emulatorRingClientOptions } from "./emulator-ring-client.js";

/**
 * `scheme` (default "eager") and `cache` (default "writeback": durable at the guest's flush, which reaches the
 * engine) are ImageOpenOptions'; the other open options go in `served`.
 */
export interface OpenV86DiskOptions extends V86DiskOptions, Pick<ImageOpenOptions, "scheme" | "cache"> {
  /** More options of the served image (ring geometry, spins, read-only...). */
  served?: Omit<ServedImageOptions, "scheme" | "cache">;
  /**
   * A qcow2 overlay over `path` (a file or an http(s) URL), made on first use and reused after: the guest's
   * writes go there and `path` is only read. A URL needs one (or `served.readOnly`).
   */
  overlay?: string;
}

/** Opens `path` in a worker (its own pool; closed by `close()`) and wraps it for v86. */
export async function openV86Disk(path: string, options: OpenV86DiskOptions = {}): Promise<RefcowV86Disk> {
  if (isHttpUrl(path) && options.overlay === undefined && !options.served?.readOnly) {
    throw new Error(`${path} is a remote image, read-only: give an overlay ({ overlay: "disk.qcow2" }) for the guest's writes, or open it with served.readOnly`);
  }
  if (options.overlay !== undefined) ensureOverlay(path, options.overlay);
  const served = options.overlay ?? path;
  const pool = new ImagePool();
  try {
    const lone = emulatorRingClientOptions(options.type ?? "ide");
    const client = await pool.open(served, {
      ...options.served,
      client: { ...lone, ...options.served?.client },
      scheme: options.scheme ?? "eager",
      cache: options.cache ?? "writeback",
    });
    const size = client.size;
    if (size % 512 !== 0) throw new Error(`'${path}' has a virtual size of ${size} bytes, not a multiple of 512`);
    return new RefcowV86Disk(new ServedAsyncDisk(client.ring), withDeviceCaches(options, options.cache ?? "writeback"), async () => {
      await client.close();
      await pool.destroy();
    });
  } catch (e) {
    await pool.destroy().catch(() => undefined);
    throw e;
  }
}
