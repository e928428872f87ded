/**
 * The NBD export served from one worker thread that owns both the sockets and the image (refcow nbd's
 * default): it opens the image with the engine itself, listens, runs every connection's handshake and
 * transmission (inline-transmission.ts: each request read, served and answered in this thread, as qemu-nbd
 * does), and closes the image when the server stops. The thread that started it keeps its event loop free
 * for signals: it posts `{ type: "stop" }`, and this thread answers `ready`, `error`, `log` and `closed`
 * messages (ExportWorkerMessage).
 */
import { parentPort, workerData } from "node:worker_threads";
import type { CacheMode, ImageOpenOptions } from "../engine/types.js";
import { openTaskImage } from "../worker/node-worker.js";
import { type DetectZeroes, type DiscardMode, inlineExport, type InlineExportSettings } from "./export.js";
import { inlineDisk } from "./inline-disk.js";
import { isMonitorRequest, serveMonitorRequest } from "./monitor-socket.js";
import { type ListenAddress, NbdServer } from "./server.js";
import type { TlsSettings } from "./tls.js";
import { warmUp } from "./warm-up.js";

/** The export a worker serves: the open options (ImageOpenOptions, cache and read-only required) and the export's. */
export interface ExportWorkerData extends Omit<ImageOpenOptions, "order"> {
  path: string;
  format?: "qcow2" | "raw";
  cache: CacheMode;
  readOnly: boolean;
  snapshotId?: string;
  name: string;
  description: string;
  discard: DiscardMode;
  detectZeroes: DetectZeroes;
  /** Whole clusters of this size are zeroed by metadata alone (NBD_CMD_FLAG_FAST_ZERO); 0: never. */
  zeroClusters: number;
  shared: number;
  persistent: boolean;
  address: ListenAddress;
  verbose: boolean;
  /** Serve a scratch image first, so that the request path is compiled before the first client (warm-up.ts). */
  warmUp: boolean;
  /** Offer qemu:allocation-depth (-A). */
  allocationDepth: boolean;
  /** Offer these bitmaps as qemu:dirty-bitmap:NAME (-B), checked to be in the image. */
  bitmaps: string[];
  /** TLS required with these credentials (--tls-creds, --tls-authz). */
  tls?: TlsSettings;
  /** --handshake-limit, in milliseconds (0: none). */
  handshakeLimitMs: number;
}

export type ExportWorkerMessage =
  | { type: "ready" }
  | { type: "error"; stage: "open" | "listen" | "close"; message: string; code?: string }
  | { type: "log"; message: string }
  | { type: "closed" };

function post(m: ExportWorkerMessage): void {
  parentPort!.postMessage(m);
}

async function main(d: ExportWorkerData): Promise<void> {
  const settings: InlineExportSettings = {
    name: d.name,
    description: d.description,
    readOnly: d.readOnly,
    cache: d.cache,
    discard: d.discard,
    detectZeroes: d.detectZeroes,
    multiConn: d.shared > 1,
    zeroClusters: d.zeroClusters,
    allocationDepth: d.allocationDepth,
    bitmaps: d.bitmaps,
  };
  if (d.warmUp) {
    try {
      await warmUp({ format: d.format ?? "qcow2", scheme: d.scheme, schemeOptions: d.schemeOptions, alloc: d.alloc, cache: d.cache, export: settings });
    } catch (e) {
      // Only a speed-up: a failure (say, no temporary directory) is reported with -v and serving goes on.
      if (d.verbose) post({ type: "log", message: `warm-up failed: ${(e as Error)?.message ?? e}` });
    }
  }
  let img;
  try {
    img = openTaskImage({ path: d.path, format: d.format, scheme: d.scheme, schemeOptions: d.schemeOptions, alloc: d.alloc, cache: d.cache, readOnly: d.readOnly, snapshotId: d.snapshotId });
  } catch (e) {
    post({ type: "error", stage: "open", message: (e as Error)?.message ?? String(e) });
    return;
  }
  const exp = inlineExport(inlineDisk(img), settings);
  const server = new NbdServer(exp, {
    shared: d.shared,
    persistent: d.persistent,
    log: d.verbose ? (message) => post({ type: "log", message }) : undefined,
    tls: d.tls,
    handshakeLimitMs: d.handshakeLimitMs,
  });
  try {
    await server.listen(d.address);
  } catch (e) {
    img.close();
    post({ type: "error", stage: "listen", message: (e as Error)?.message ?? String(e), code: (e as NodeJS.ErrnoException).code });
    return;
  }
  const onMessage = (m: { type?: string }): void => {
    if (m?.type === "stop") void server.stop();
    // refcow nbd --monitor: served here, between two NBD requests.
    else if (isMonitorRequest(m)) parentPort!.postMessage(serveMonitorRequest(img, m));
  };
  parentPort!.on("message", onMessage);
  post({ type: "ready" });
  await server.stopped;
  parentPort!.off("message", onMessage);
  try {
    img.close();
  } catch (e) {
    post({ type: "error", stage: "close", message: (e as Error)?.message ?? String(e) });
    return;
  }
  post({ type: "closed" });
}

if (parentPort) void main(workerData as ExportWorkerData);
