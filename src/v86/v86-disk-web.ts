/**
 * `openV86DiskOpfs(file)`: a qcow2 image in the origin private file system, served by refcow from a Web
 * Worker, as the disk of a v86 emulator in the page (see v86-disk.ts for the whole recipe). The page must
 * be cross-origin isolated (COOP same-origin + COEP require-corp) and serve refcow's worker bundle
 * (src/worker/web-worker.ts bundled for the browser; `npm run web` builds one as web-worker.js).
 */
import type { ImageOpenOptions } from "../engine/types.js";
import { WebImageHost, type WebImageOptions } from "../worker/web-host.js";
import { ServedAsyncDisk } from "../worker/served-async-disk.js";
import { withDeviceCaches, RefcowV86Disk, type V86DiskOptions } from "./v86-disk.js";
import { emulatorRingClientOptions } from "./emulator-ring-client.js";

/** `scheme` (default "eager") and `cache` (default "writeback") are ImageOpenOptions', as for openV86Disk. */
export interface OpenV86DiskOpfsOptions extends V86DiskOptions, Pick<ImageOpenOptions, "scheme" | "cache"> {
  /** URL of refcow's worker bundle (web-worker.js). */
  workerUrl: string | URL;
  served?: Omit<WebImageOptions, "scheme" | "cache">;
}

/** Starts the worker, serves OPFS file `file` (an existing image) and wraps it for v86. */
export async function openV86DiskOpfs(file: string, options: OpenV86DiskOpfsOptions): Promise<RefcowV86Disk> {
  const host = await WebImageHost.start(options.workerUrl);
  const lone = emulatorRingClientOptions(options.type ?? "ide");
  const client = await host.open(file, {
    ...options.served,
    client: { ...lone, ...options.served?.client },
    scheme: options.scheme ?? "eager",
    cache: options.cache ?? "writeback",
  });
  return new RefcowV86Disk(new ServedAsyncDisk(client.ring), withDeviceCaches(options, options.cache ?? "writeback"), async () => {
    await client.close();
    host.terminate();
  });
}
