/**
 * The NBD export served from one worker thread that owns both the sockets and the image (refcow nbd's
 * default, --serve=inline): it opens the image and starts the export (serve-export.ts: each request read,
 * served and answered in this thread, as qemu-nbd does), and closes the image when the server stops. The
 * thread that started it keeps its event loop free for signals: it posts `{ type: "stop" }`, and this thread
 * answers `ready`, `error`, `log` and `closed` messages (ExportWorkerMessage).
 */
import { parentPort, workerData } from "node:worker_threads";
import type { ServedImageSpec } from "../open/serving.js";
import type { ExportSettings } from "./export.js";
import { openExport, type ServingExport } from "./serve-export.js";
import type { ListenAddress } from "./server.js";
import { isMonitorRequest, serveMonitorRequest } from "./monitor-socket.js";
import type { TlsSettings } from "./tls.js";
import { warmUp } from "./warm-up.js";

/** The export a worker serves: the image, the export's settings, the server's. */
export interface ExportWorkerData {
  image: ServedImageSpec & { format: "qcow2" | "raw" };
  settings: ExportSettings;
  shared: number;
  persistent: boolean;
  address: ListenAddress;
  verbose: boolean;
  /** Serve a scratch image first, so that the request path is compiled before the first client (warm-up.ts). */
  warmUp: boolean;
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
  const { image, settings } = d;
  if (d.warmUp) {
    try {
      await warmUp({ format: image.format, scheme: image.scheme, schemeOptions: image.schemeOptions, alloc: image.alloc, export: settings, tls: d.tls });
    } catch (e) {
      // Only a speed-up: a failure (say, no temporary directory) is reported with -v and serving goes on.
      if (d.verbose) post({ type: "log", message: `warm-up failed: ${(e as Error)?.message ?? e}` });
    }
  }
  let served: ServingExport;
  try {
    served = await openExport({
      image,
      mode: "inline",
      settings,
      server: {
        shared: d.shared,
        persistent: d.persistent,
        log: d.verbose ? (message) => post({ type: "log", message }) : undefined,
        tls: d.tls,
        handshakeLimitMs: d.handshakeLimitMs,
      },
    });
  } catch (e) {
    post({ type: "error", stage: "open", message: (e as Error)?.message ?? String(e) });
    return;
  }
  try {
    await served.listen(d.address);
  } catch (e) {
    await served.close().catch(() => {});
    post({ type: "error", stage: "listen", message: (e as Error)?.message ?? String(e), code: (e as NodeJS.ErrnoException).code });
    return;
  }
  const onMessage = (m: { type?: string }): void => {
    if (m?.type === "stop") void served.server.stop();
    // refcow nbd --monitor: served here, between two NBD requests.
    else if (isMonitorRequest(m)) void serveMonitorRequest(served.monitor, m).then((r) => parentPort!.postMessage(r));
  };
  parentPort!.on("message", onMessage);
  post({ type: "ready" });
  await served.stopped;
  parentPort!.off("message", onMessage);
  try {
    await served.close();
  } catch (e) {
    post({ type: "error", stage: "close", message: (e as Error)?.message ?? String(e) });
    return;
  }
  post({ type: "closed" });
}

if (parentPort) void main(workerData as ExportWorkerData);
