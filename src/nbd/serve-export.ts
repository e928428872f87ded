/**
 * An NBD export assembled in one place, whichever way it is served: the image opened (in this thread for
 * --serve=inline, inline-port.ts; behind the request ring in a pool worker for --serve=ring, ring-port.ts),
 * its port, the export built from qemu-nbd's settings (nbdExport), and the server for it. refcow nbd's export
 * thread (export-worker.ts) and its ring mode (cli/commands/nbd.ts) both start their export here; the object
 * returned lets its owner listen, take a snapshot between requests, and stop and close.
 */
import type { MonitorTarget } from "./monitor-socket.js";
import type { ServedImageSpec } from "../open/serving.js";
import type { RingClientOptions } from "../worker/ring-client.js";
import { type ExportSettings, type NbdExport, nbdExport } from "./export.js";
import { openInlineImage } from "./inline-port.js";
import type { ExportImage } from "./port.js";
import { openRingImage } from "./ring-port.js";
import { type ListenAddress, NbdServer, type NbdServerOptions } from "./server.js";

/** Where the engine runs: in the thread that serves the sockets, or in a pool worker behind the ring. */
export type ServeMode = "inline" | "ring";

export interface ExportPlan {
  image: ServedImageSpec;
  mode: ServeMode;
  settings: ExportSettings;
  server: NbdServerOptions;
  /** --serve=ring: the ring client's and serve loop's spinning. */
  ring?: { client?: RingClientOptions; serverSizedSpinCapUs?: number };
}

export interface ServingExport {
  readonly exp: NbdExport;
  readonly server: NbdServer;
  listen(address: ListenAddress): Promise<void>;
  /** Resolves when the server has stopped (stop(), a signal, or the last client of a non-persistent server). */
  readonly stopped: Promise<void>;
  /** Internal snapshots of the live image, taken between requests (refcow nbd --monitor). */
  readonly monitor: MonitorTarget;
  /** Stops the server (answering what is in flight), then flushes and closes the image. */
  close(): Promise<void>;
}

/** Opens the image and builds its export and server; throws the open's error as it is. */
export async function openExport(plan: ExportPlan): Promise<ServingExport> {
  const image: ExportImage =
    plan.mode === "inline"
      ? openInlineImage(plan.image)
      : await openRingImage(plan.image.path, {
          ...plan.image,
          client: plan.ring?.client,
          serverSizedSpinCapUs: plan.ring?.serverSizedSpinCapUs,
        });
  const exp = nbdExport(image.port, plan.settings);
  const server = new NbdServer(exp, plan.server);
  let closing: Promise<void> | undefined;
  return {
    exp,
    server,
    stopped: server.stopped,
    listen: (address) => server.listen(address),
    monitor: image.monitor,
    close: () =>
      (closing ??= (async () => {
        await server.stop();
        await image.close();
      })()),
  };
}
