/**
 * Warm-up of the inline export's request path before the first client is accepted. V8 compiles JavaScript
 * as it runs: the first thousand or so requests of a fresh server run in the interpreter and baseline code,
 * and the optimising compiler's background threads compete with the server and its client for the CPU. A
 * benchmark (or a guest) that starts right after the server would measure that. So the export worker first
 * serves a few thousand requests of its own, over a Unix socket, to a scratch image in the temporary
 * directory opened with the same format, scheme, allocation policy and cache mode: the same code (socket,
 * handshake, transmission, engine, file) is then compiled when the real image is served. The served image is
 * never touched; the scratch image and its directory are removed.
 *
 * What makes the compiled code last (each point was a deoptimisation and a recompilation, 20-35 functions and
 * 50-190 ms of compiler time, on the first real client's requests: its tail, at iodepth 1, on two cores):
 * - the client runs in a thread of its own (warm-up-client.ts), so this thread's type feedback is that of a
 *   server alone, as it is when the real clients (other processes) connect;
 * - the scratch export is built by the same function as the real one (nbdExport) from the same settings,
 *   so it is an object of the same shape;
 * - several connections and several lifecycles of the scratch image (warmUp's comment);
 * - over TLS when the real export requires it: the TLS socket's read and write path (and the transmission's
 *   coalescing of replies under it) is other code than the plain socket's, and left cold it cost the first
 *   few thousand real requests about 100 µs of CPU each. With the real kind of credentials, too: Node's TLS
 *   sockets of a PSK server are objects of another shape than an X.509 server's (V8 deoptimises the stream
 *   code compiled for one when the other comes). An X.509 export's scratch server has its certificate and
 *   key but asks the client for none (the warm-up's client has no certificate the real CA signed); a PSK
 *   export's has a random key made for the warm-up.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { ImageOpenOptions } from "../engine/types.js";
import { createImagePath } from "../open/open-path.js";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { type ExportSettings, nbdExport } from "./export.js";
import { openInlineImage } from "./inline-port.js";
import { NbdServer } from "./server.js";
import type { TlsSettings } from "./tls.js";
import type { WarmUpClientData, WarmUpClientTls } from "./warm-up-client.js";

const CLUSTER = 65536;
const CLUSTERS = 256;

export interface WarmUpOptions extends Pick<ImageOpenOptions, "scheme" | "schemeOptions" | "alloc"> {
  format: "qcow2" | "raw";
  /**
   * The settings of the export that will be served: the scratch export takes them (writable, and with
   * fast zeroes iff the real export has them), so that the code compiled here meets the same objects and
   * branches when the real clients come.
   */
  export: ExportSettings;
  /** The real export's TLS: the warm-up's connections use TLS too, with credentials of the same kind. */
  tls?: TlsSettings;
}

/** The warm-up's PSK identity (the key is random, made for each lifecycle of the scratch image). */
const WARM_UP_IDENTITY = "refcow-warm-up";

/**
 * Serves the warm-up's load over NBD to a scratch image, in `cycles` lifecycles of the scratch image (create,
 * open, serve, close), each with `connections` client connections (handshake, `rounds` passes of writes,
 * reads and flushes, disconnect). One lifecycle is not enough: the first disconnect and the first close take
 * branches and store values the hot code has not seen, and V8 throws away what it compiled for the requests
 * (a deoptimisation, then a recompilation on the first real requests, on a background thread that competes
 * with the server for the CPU). Such changes happen once per process, so a later lifecycle compiles the
 * request path for good.
 */
export async function warmUp(opts: WarmUpOptions, cycles = 3, connections = 2, rounds = 4): Promise<void> {
  for (let c = 0; c < cycles; c++) await warmUpCycle(opts, connections, rounds);
}

async function warmUpCycle(opts: WarmUpOptions, connections: number, rounds: number): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-nbd-warm-"));
  try {
    const file = path.join(dir, "scratch.img");
    if (opts.format === "qcow2") createImagePath(file, { size: CLUSTERS * CLUSTER });
    else fs.writeFileSync(file, Buffer.alloc(CLUSTERS * CLUSTER));
    // The engine in the real cache mode, except writethrough: then in unsafe, the same write path without a
    // disk flush for each batch of the warm-up (the export keeps writethrough, so its group commit runs).
    const cache = opts.export.cache === "writethrough" ? "unsafe" : opts.export.cache;
    const img = openInlineImage({ path: file, format: opts.format, scheme: opts.scheme, schemeOptions: opts.schemeOptions, alloc: opts.alloc, cache });
    try {
      const settings = { ...opts.export, readOnly: false, zeroClusters: opts.export.zeroClusters && opts.format === "qcow2" ? CLUSTER : 0 };
      const tls = opts.tls ? warmUpTls(opts.tls, dir) : undefined;
      const server = new NbdServer(nbdExport(img.port, settings), { shared: 1, persistent: true, tls: tls?.server });
      const socket = path.join(dir, "warm.sock");
      await server.listen({ socket });
      try {
        const load = { socket, connections, rounds, clusters: CLUSTERS, clusterSize: CLUSTER, tls: tls?.client };
        await runClientThread(load);
      } finally {
        await server.stop();
      }
    } finally {
      await img.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The scratch server's TLS and its client's, of the kind of the real export's (see the top of this file). */
function warmUpTls(real: TlsSettings, dir: string): { server: TlsSettings; client: WarmUpClientTls } {
  if (real.creds.kind === "x509") return { server: { creds: { ...real.creds, verifyPeer: false } }, client: {} };
  const key = randomBytes(32).toString("hex");
  return {
    server: { creds: { kind: "psk", id: "warm-up", dir, keys: { [WARM_UP_IDENTITY]: key } } },
    client: { psk: { identity: WARM_UP_IDENTITY, keyHex: key } },
  };
}

/** Runs the warm-up's client in a thread of its own (warm-up-client.ts) and waits for it to finish. */
function runClientThread(load: WarmUpClientData): Promise<void> {
  const file = clientFilename();
  return new Promise((resolve, reject) => {
    const w = new Worker(file, { workerData: { warmUpClient: load } });
    let outcome: { done?: true; error?: string } | undefined;
    w.once("message", (m: { done?: true; error?: string }) => (outcome = m));
    w.once("error", (e) => (outcome ??= { error: e.message }));
    w.once("exit", (code) => {
      if (outcome?.done) resolve();
      else reject(new Error(`the warm-up client failed: ${outcome?.error ?? `status ${code}`}`));
    });
  });
}

/** The compiled warm-up client: next to this module's build, or in dist/ when running from src/ (tests). */
function clientFilename(): string {
  const here = fileURLToPath(new URL("./warm-up-client.js", import.meta.url));
  if (fs.existsSync(here)) return here;
  const dist = fileURLToPath(new URL("../../dist/nbd/warm-up-client.js", import.meta.url));
  if (fs.existsSync(dist)) return dist;
  throw new Error(`the warm-up client is not built (looked for ${here} and ${dist}): run 'npm run build'`);
}
