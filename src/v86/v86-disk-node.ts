/**
 * `openV86Disk(path)`: a qcow2 (or raw) image file, served by refcow from a worker thread, as the disk of
 * a v86 emulator in Node (see v86-disk.ts for the whole recipe).
 */
import type { ImageOpenOptions } from "../engine/types.js";
import { ImagePool, type ServedImageOptions } from "../worker/pool.js";
import { ServedAsyncDisk } from "../worker/served-async-disk.js";
import { RefcowV86Disk, type V86DiskOptions } from "./v86-disk.js";

/**
 * `scheme` (default "eager") and `cache` (default "writeback": durable at the guest's flush, which reaches the
 * engine) are ImageOpenOptions'; the other open options go in `served`.
 */
export interface OpenV86DiskOptions extends V86DiskOptions, Pick<ImageOpenOptions, "scheme" | "cache"> {
  /** More options of the served image (ring geometry, spins, read-only...). */
  served?: Omit<ServedImageOptions, "scheme" | "cache">;
}

/** Opens `path` in a worker (its own pool; closed by `close()`) and wraps it for v86. */
export async function openV86Disk(path: string, options: OpenV86DiskOptions = {}): Promise<RefcowV86Disk> {
  const pool = new ImagePool();
  try {
    const lone = options.type === "virtio" ? { spinMaxInFlight: 1 } : {};
    const client = await pool.open(path, {
      ...options.served,
      client: { ...lone, ...options.served?.client },
      scheme: options.scheme ?? "eager",
      cache: options.cache ?? "writeback",
    });
    const size = client.size;
    if (size % 512 !== 0) throw new Error(`'${path}' has a virtual size of ${size} bytes, not a multiple of 512`);
    return new RefcowV86Disk(new ServedAsyncDisk(client.ring), options, async () => {
      await client.close();
      await pool.destroy();
    });
  } catch (e) {
    await pool.destroy().catch(() => undefined);
    throw e;
  }
}
