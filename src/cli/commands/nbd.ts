/**
 * refcow nbd — qemu-nbd: exports an image over NBD (src/nbd/) with qemu-nbd's command line, e.g.
 * `refcow nbd -k /tmp/disk.sock -f qcow2 --cache=writeback disk.qcow2`. By default (--serve=inline) one
 * worker thread owns the sockets and the image (src/nbd/export-worker.ts) and serves each request between
 * two socket reads, as qemu-nbd does; --serve=ring keeps the sockets on this thread and the engine in a pool
 * worker behind the request ring (openServedImage), many requests in flight. Either way every client shares
 * the image's one owner. Like qemu-nbd it serves until the last client has gone (or forever with -t), and on
 * SIGINT/SIGTERM stops accepting, answers what is in flight and closes the image cleanly.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { allValues, hasFlag, lastValue, parseArgs } from "../args.js";
import type { CliIo } from "../command.js";
import { type CacheMode, type ImageOpenOptions, NodeFile, Qcow2Image } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { formatForOpen, openImage, parseAllocPolicy, parseCacheMode } from "../open.js";
import { closeAllWorkers } from "../../worker/index.js";
import { findBitmap } from "../../worker/extents.js";
import type { ExportWorkerData, ExportWorkerMessage } from "../../nbd/export-worker.js";
import type { DetectZeroes, DiscardMode, ExportSettings } from "../../nbd/export.js";
import { openExport, type ServingExport } from "../../nbd/serve-export.js";
import { DEFAULT_HANDSHAKE_LIMIT_MS, type ListenAddress } from "../../nbd/server.js";
import type { TlsSettings } from "../../nbd/tls.js";
import { tlsSettingsOf } from "../tls-objects.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import type { SyncDisk } from "../../disk/sync-disk.js";
import { ALLOC_LONG, HELP_LONG, ioOf, NO_REFLINK_LONG, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";
import { parseSnapshotParam, selectSnapshot } from "./convert.js";
import { threadMonitorTarget } from "../../nbd/monitor-socket.js";
import { startMonitor } from "../nbd-monitor.js";
import { NBD_USAGE, NBD_HELP } from "./nbd-help.js";

/** qemu-nbd options refcow does not implement, by the name a message shows. */
const UNSUPPORTED: Record<string, string> = {
  o: "-o/--offset",
  c: "-c/--connect",
  d: "-d/--disconnect",
  T: "-T/--trace",
  L: "-L/--list",
  "image-opts": "--image-opts",
  "tls-hostname": "--tls-hostname",
  "selinux-label": "--selinux-label",
};

/** Set in the background server that --fork starts; it reports readiness (or its error) over IPC. */
const FORKED_ENV = "REFCOW_NBD_FORKED";

/** `refcow nbd`: the open options (ImageOpenOptions: scheme, scheme options, alloc) and the export's. */
interface NbdOptions extends Pick<ImageOpenOptions, "scheme" | "schemeOptions" | "alloc" | "noReflink"> {
  image: string;
  format?: "qcow2" | "raw";
  address: ListenAddress;
  exportName: string;
  description: string;
  readOnly: boolean;
  persistent: boolean;
  shared: number;
  cache: CacheMode;
  discard: DiscardMode;
  detectZeroes: DetectZeroes;
  loadSnapshot?: string;
  snapshot: boolean;
  fork: boolean;
  pidFile?: string;
  serveMode: "inline" | "ring";
  warmUp: boolean;
  verbose: boolean;
  allocationDepth: boolean;
  bitmaps: string[];
  tls?: TlsSettings;
  handshakeLimitMs: number;
  monitor?: string;
}

function parseNbdOptions(argv: string[]): NbdOptions | "help" | "version" {
  const parsed = parseArgs(argv, {
    short: "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L",
    long: [
      HELP_LONG,
      SCHEME_LONG,
      SCHEME_OPT_LONG,
      ALLOC_LONG,
      NO_REFLINK_LONG,
      { name: "version", arg: false, key: "V" },
      { name: "bind", arg: true, key: "b" },
      { name: "port", arg: true, key: "p" },
      { name: "socket", arg: true, key: "k" },
      { name: "read-only", arg: false, key: "r" },
      { name: "snapshot", arg: false, key: "s" },
      { name: "load-snapshot", arg: true, key: "l" },
      { name: "nocache", arg: false, key: "n" },
      { name: "cache", arg: true },
      { name: "aio", arg: true },
      { name: "discard", arg: true },
      { name: "detect-zeroes", arg: true },
      { name: "shared", arg: true, key: "e" },
      { name: "format", arg: true, key: "f" },
      { name: "persistent", arg: false, key: "t" },
      { name: "export-name", arg: true, key: "x" },
      { name: "description", arg: true, key: "D" },
      { name: "fork", arg: false },
      { name: "pid-file", arg: true },
      { name: "verbose", arg: false, key: "v" },
      { name: "serve", arg: true },
      { name: "monitor", arg: true },
      { name: "no-warm-up", arg: false },
      { name: "offset", arg: true, key: "o" },
      { name: "connect", arg: true, key: "c" },
      { name: "disconnect", arg: false, key: "d" },
      { name: "trace", arg: true, key: "T" },
      { name: "allocation-depth", arg: false, key: "A" },
      { name: "bitmap", arg: true, key: "B" },
      { name: "list", arg: false, key: "L" },
      { name: "image-opts", arg: false },
      { name: "object", arg: true },
      { name: "tls-creds", arg: true },
      { name: "tls-hostname", arg: true },
      { name: "tls-authz", arg: true },
      { name: "handshake-limit", arg: true },
      { name: "selinux-label", arg: true },
    ],
  });
  if (hasFlag(parsed, "h")) return "help";
  if (hasFlag(parsed, "V")) return "version";
  for (const o of parsed.options) {
    const name = UNSUPPORTED[o.key];
    if (name) throw new CliError(`qemu-nbd option ${name} is not supported by refcow nbd`);
  }
  if (parsed.operands.length !== 1) {
    throw new UsageError(parsed.operands.length === 0 ? "Not enough arguments" : `Invalid number of arguments (one image, got ${parsed.operands.length})`);
  }
  const image = parsed.operands[0]!;

  const socket = lastValue(parsed, "k");
  const portText = lastValue(parsed, "p");
  const bind = lastValue(parsed, "b");
  if (socket !== undefined && (portText !== undefined || bind !== undefined)) {
    throw new CliError("-k (--socket) cannot be used with -p (--port) or -b (--bind)");
  }
  let address: ListenAddress;
  if (socket !== undefined) {
    if (socket === "") throw new CliError("-k needs a socket path");
    address = { socket };
  } else {
    const port = portText === undefined ? 10809 : Number(portText);
    if (!/^\d+$/.test(portText ?? "0") || !Number.isInteger(port) || port < 0 || port > 65535) {
      throw new CliError(`Invalid port number '${portText}'`);
    }
    address = { host: bind ?? "0.0.0.0", port };
  }

  const sharedText = lastValue(parsed, "e");
  let shared = 1;
  if (sharedText !== undefined) {
    if (!/^\d+$/.test(sharedText)) throw new CliError(`Invalid shared device number '${sharedText}'`);
    shared = Number(sharedText) === 0 ? Infinity : Number(sharedText);
  }

  let cache: CacheMode = "writeback"; // qemu-nbd's default
  for (const o of parsed.options) {
    if (o.key === "n") cache = parseCacheMode("none");
    if (o.key === "cache") cache = parseCacheMode(o.value!);
  }
  const aio = lastValue(parsed, "aio");
  if (aio !== undefined && !["threads", "native", "io_uring"].includes(aio)) throw new CliError(`invalid aio mode '${aio}'`);

  const discardText = lastValue(parsed, "discard") ?? "ignore";
  let discard: DiscardMode;
  if (discardText === "ignore" || discardText === "off") discard = "ignore";
  else if (discardText === "unmap" || discardText === "on") discard = "unmap";
  else throw new CliError(`Invalid discard mode \`${discardText}'`);

  const dzText = lastValue(parsed, "detect-zeroes") ?? "off";
  if (dzText !== "off" && dzText !== "on" && dzText !== "unmap") {
    throw new CliError(`parameter 'detect-zeroes' does not accept value '${dzText}' (expecting off, on or unmap)`);
  }
  const detectZeroes = dzText as DetectZeroes;
  if (detectZeroes === "unmap" && discard !== "unmap") throw new CliError("--detect-zeroes=unmap can only be used if --discard=unmap");

  const loadSnapshot = lastValue(parsed, "l");
  const snapshot = hasFlag(parsed, "s");
  if (loadSnapshot !== undefined && snapshot) throw new CliError("-l (--load-snapshot) and -s (--snapshot) cannot be used together");
  // The engine's view of a snapshot has no bitmaps (they record the active layer's writes).
  if (loadSnapshot !== undefined && hasFlag(parsed, "B")) throw new CliError("-B (--bitmap) cannot be used with -l (--load-snapshot) by refcow nbd");
  const serveMode = lastValue(parsed, "serve") ?? "inline";
  if (serveMode !== "inline" && serveMode !== "ring") throw new CliError(`invalid --serve mode '${serveMode}' (expecting inline or ring)`);
  const format = lastValue(parsed, "f");
  const scheme = lastValue(parsed, "scheme");
  if (scheme !== undefined && !SCHEME_NAMES.includes(scheme)) {
    throw new CliError(`unknown refcount scheme '${scheme}' (expecting one of ${SCHEME_NAMES.join(", ")})`);
  }
  const { schemeOptions } = schemeChoice(parsed);
  const tls = tlsSettingsOf(allValues(parsed, "object"), lastValue(parsed, "tls-creds"), lastValue(parsed, "tls-authz"));
  const limitText = lastValue(parsed, "handshake-limit");
  if (limitText !== undefined && !/^\d+$/.test(limitText)) throw new CliError(`Invalid handshake limit '${limitText}'`);
  const handshakeLimitMs = limitText === undefined ? DEFAULT_HANDSHAKE_LIMIT_MS : Number(limitText) * 1000;
  return {
    image,
    format: formatForOpen(format, image),
    address,
    exportName: lastValue(parsed, "x") ?? "",
    description: lastValue(parsed, "D") ?? "",
    // -l exports a snapshot, which is read-only (qemu-nbd drops the write flag as well).
    readOnly: hasFlag(parsed, "r") || loadSnapshot !== undefined,
    persistent: hasFlag(parsed, "t"),
    shared,
    cache,
    discard,
    detectZeroes,
    loadSnapshot,
    snapshot,
    fork: hasFlag(parsed, "fork"),
    pidFile: lastValue(parsed, "pid-file"),
    scheme,
    schemeOptions,
    alloc: parseAllocPolicy(lastValue(parsed, "alloc")),
    noReflink: hasFlag(parsed, "no-reflink") || undefined,
    serveMode,
    warmUp: !hasFlag(parsed, "no-warm-up"),
    verbose: hasFlag(parsed, "v"),
    allocationDepth: hasFlag(parsed, "A"),
    // qemu-nbd offers the bitmaps (and numbers their contexts) last given first.
    bitmaps: [...new Set(allValues(parsed, "B").reverse())],
    tls,
    handshakeLimitMs,
    monitor: lastValue(parsed, "monitor"),
  };
}

export async function nbdCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const opts = parseNbdOptions(argv);
  if (opts === "help") {
    io.out(`usage: refcow ${NBD_USAGE}\n${NBD_HELP}`);
    return 0;
  }
  if (opts === "version") {
    io.out("refcow nbd (qemu-nbd compatible command line of QEMU 7.2)\n");
    return 0;
  }
  if (opts.fork && process.env[FORKED_ENV] !== "1") return forkServer(argv);
  const forked = process.env[FORKED_ENV] === "1" && typeof process.send === "function";
  try {
    return await serve(opts, io, () => {
      if (forked) {
        process.send!({ ready: true });
        process.disconnect();
      }
    });
  } catch (e) {
    if (forked && process.connected) {
      process.send!({ error: e instanceof CliError ? e.message : messageOf(e) });
      process.disconnect();
    }
    throw e;
  }
}

/** What the image is, learned by a read-only open in this thread before the worker serves it. */
interface Probe {
  format: "qcow2" | "raw";
  size: number;
  version: number;
  clusterSize: number;
  snapshotId?: string;
}

function probe(opts: NbdOptions): Probe {
  let opened;
  try {
    opened = openImage({ path: opts.image, format: opts.format, readOnly: true });
  } catch (e) {
    throw new CliError(`Failed to blk_new_open '${opts.image}': ${messageOf(e)}`);
  }
  const disk = opened.disk;
  try {
    checkBitmaps(disk, opts.bitmaps);
    if (!(disk instanceof Qcow2Image)) {
      if (opts.loadSnapshot !== undefined) throw new CliError("Failed to load snapshot: the image is raw and has no snapshots");
      return { format: "raw", size: disk.size, version: 0, clusterSize: 0 };
    }
    const info = disk.info();
    let snapshotId: string | undefined;
    if (opts.loadSnapshot !== undefined) {
      const sn = selectSnapshot(disk.snapshotList(), parseSnapshotParam(opts.loadSnapshot));
      if (!sn) throw new CliError("Failed to load snapshot: Can't find snapshot");
      snapshotId = sn.id;
    }
    return { format: "qcow2", size: disk.size, version: info.version, clusterSize: info.clusterSize, snapshotId };
  } finally {
    disk.close();
  }
}

/**
 * -B: each bitmap must be in the image or its backing chain, and consistent (not left in use by a program
 * that did not close the image), as qemu-nbd requires, in its words.
 */
function checkBitmaps(disk: SyncDisk, names: readonly string[]): void {
  for (const name of names) {
    const found = findBitmap(disk, name);
    if (!found) throw new CliError(`Bitmap '${name}' is not found`);
    if (found.bitmap.inUse) throw new CliError(`Bitmap '${name}' is inconsistent and cannot be used`);
  }
}

/** -s: a qcow2 overlay in the temporary directory, backed by the image (absolute name), as qemu-nbd makes. */
function createOverlay(image: string, p: Probe): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-nbd-"));
  const overlay = path.join(dir, "overlay.qcow2");
  const file = NodeFile.open(overlay, { create: true });
  try {
    Qcow2Image.create(file, { size: p.size, backingFile: path.resolve(image), backingFormat: p.format });
  } finally {
    file.close();
  }
  return overlay;
}

async function serve(opts: NbdOptions, io: CliIo, ready: () => void): Promise<number> {
  const p = probe(opts);
  const overlay = opts.snapshot ? createOverlay(opts.image, p) : undefined;
  const removeOverlay = (): void => {
    if (overlay) fs.rmSync(path.dirname(overlay), { recursive: true, force: true });
  };
  // Whole clusters of a qcow2 v3 image (the -s overlay is one) are zeroed by their L2 entries alone.
  const zeroClusters = overlay ? 65536 : p.format === "qcow2" && p.version >= 3 ? p.clusterSize : 0;
  const image = { path: overlay ?? opts.image, format: overlay ? ("qcow2" as const) : p.format, snapshotId: p.snapshotId };
  const settings = exportSettingsOf(opts, zeroClusters);
  if (opts.serveMode === "inline") {
    try {
      return await serveInline(opts, io, ready, image, settings);
    } finally {
      removeOverlay();
    }
  }
  let served: ServingExport;
  try {
    served = await openExport({
      image: { ...image, scheme: opts.scheme, schemeOptions: opts.schemeOptions, alloc: opts.alloc, noReflink: opts.noReflink, cache: opts.cache, readOnly: opts.readOnly },
      mode: "ring",
      settings,
      server: {
        shared: opts.shared,
        persistent: opts.persistent,
        log: opts.verbose ? (m) => io.err(`refcow nbd: ${m}\n`) : undefined,
        tls: opts.tls,
        handshakeLimitMs: opts.handshakeLimitMs,
      },
      // A lone request is waited for by spinning (sized from the service times seen, at most 300 µs), and
      // the worker spins for the next request (sized from the gaps seen, at most 200 µs): at iodepth 1 a
      // completion then costs no thread wake on either side. With several requests in flight the socket's
      // thread goes back to its event loop at once to read the next ones (spinMaxInFlight 1).
      ring: { client: { sizedSpinCapUs: 300, spinMaxInFlight: 1 }, serverSizedSpinCapUs: 200 },
    });
  } catch (e) {
    removeOverlay();
    await closeAllWorkers();
    throw new CliError(`Failed to blk_new_open '${opts.image}': ${messageOf(e)}`);
  }
  let pidWritten = false;
  let monitor: Awaited<ReturnType<typeof startMonitor>>;
  const onSignal = (): void => void served.server.stop();
  try {
    try {
      await served.listen(opts.address);
    } catch (e) {
      throw listenFailure((e as NodeJS.ErrnoException).code, messageOf(e));
    }
    if (opts.pidFile) {
      fs.writeFileSync(opts.pidFile, `${process.pid}\n`);
      pidWritten = true;
    }
    monitor = await startMonitor(opts.monitor, () => served.monitor);
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    ready();
    await served.stopped;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await monitor?.close();
    try {
      await served.close();
    } finally {
      await closeAllWorkers();
      removeOverlay();
      if (pidWritten) fs.rmSync(opts.pidFile!, { force: true });
    }
  }
  return 0;
}

/** The export's settings from qemu-nbd's options (both serve modes build the export from these). */
function exportSettingsOf(opts: NbdOptions, zeroClusters: number): ExportSettings {
  return {
    name: opts.exportName,
    description: opts.description,
    readOnly: opts.readOnly,
    cache: opts.cache,
    discard: opts.discard,
    detectZeroes: opts.detectZeroes,
    multiConn: opts.shared > 1,
    zeroClusters,
    allocationDepth: opts.allocationDepth,
    bitmaps: opts.bitmaps,
  };
}

/** The compiled export worker: next to this module's build, or in dist/ when running from src/ (tests). */
function exportWorkerFilename(): string {
  const here = fileURLToPath(new URL("../../nbd/export-worker.js", import.meta.url));
  if (fs.existsSync(here)) return here;
  const dist = fileURLToPath(new URL("../../../dist/nbd/export-worker.js", import.meta.url));
  if (fs.existsSync(dist)) return dist;
  throw new Error(`the NBD export worker is not built (looked for ${here} and ${dist}): run 'npm run build'`);
}

function listenFailure(code: string | undefined, message: string): CliError {
  const reason = code === "EADDRINUSE" ? "Address already in use" : code === "EACCES" ? "Permission denied" : message;
  return new CliError(`Failed to bind socket: ${reason}`);
}

/**
 * --serve=inline: the export worker (src/nbd/export-worker.ts) opens the image, listens and serves; this
 * thread waits for it, handles the signals (a stop message: the worker stops accepting, answers, closes the
 * image) and writes the pid file.
 */
async function serveInline(
  opts: NbdOptions,
  io: CliIo,
  ready: () => void,
  image: { path: string; format: "qcow2" | "raw"; snapshotId?: string },
  settings: ExportSettings,
): Promise<number> {
  const data: ExportWorkerData = {
    image: { ...image, scheme: opts.scheme, schemeOptions: opts.schemeOptions, alloc: opts.alloc, noReflink: opts.noReflink, cache: opts.cache, readOnly: opts.readOnly },
    settings,
    shared: opts.shared,
    persistent: opts.persistent,
    address: opts.address,
    verbose: opts.verbose,
    warmUp: opts.warmUp,
    tls: opts.tls,
    handshakeLimitMs: opts.handshakeLimitMs,
  };
  const worker = new Worker(exportWorkerFilename(), { workerData: data });
  let pidWritten = false;
  const onSignal = (): void => worker.postMessage({ type: "stop" });
  let readyResolve!: () => void;
  const isReady = new Promise<void>((r) => (readyResolve = r));
  const finished = new Promise<void>((resolve, reject) => {
    let closed = false;
    let failure: Error | undefined;
    worker.on("message", (m: ExportWorkerMessage) => {
      switch (m.type) {
        case "ready":
          readyResolve();
          break;
        case "log":
          io.err(`refcow nbd: ${m.message}\n`);
          break;
        case "error":
          failure =
            m.stage === "open"
              ? new CliError(`Failed to blk_new_open '${opts.image}': ${m.message}`)
              : m.stage === "listen"
                ? listenFailure(m.code, m.message)
                : new CliError(`closing '${opts.image}' failed: ${m.message}`);
          break;
        case "closed":
          closed = true;
          break;
      }
    });
    worker.on("error", (e) => (failure ??= new CliError(`the NBD server thread failed: ${messageOf(e)}`)));
    worker.on("exit", (code) => {
      if (failure) reject(failure);
      else if (!closed) reject(new CliError(`the NBD server thread ended (status ${code}) without closing the image`));
      else resolve();
    });
  });
  const monitorTarget = threadMonitorTarget(worker);
  worker.on("exit", () => monitorTarget.detach("the export has stopped"));
  let monitor: Awaited<ReturnType<typeof startMonitor>>;
  try {
    await Promise.race([isReady, finished]);
    monitor = await startMonitor(opts.monitor, () => monitorTarget).catch(async (e: unknown) => {
      worker.postMessage({ type: "stop" });
      await finished.catch(() => undefined);
      throw e;
    });
    if (opts.pidFile) {
      fs.writeFileSync(opts.pidFile, `${process.pid}\n`);
      pidWritten = true;
    }
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    ready();
    await finished;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await monitor?.close();
    if (pidWritten) fs.rmSync(opts.pidFile!, { force: true });
  }
  return 0;
}

/** --fork: starts the same command in the background and returns when it is serving (or has failed). */
function forkServer(argv: string[]): Promise<number> {
  const bin = fileURLToPath(new URL("../bin.js", import.meta.url));
  const child = spawn(process.execPath, [bin, "nbd", ...argv], {
    detached: true,
    stdio: ["ignore", "ignore", "ignore", "ipc"],
    env: { ...process.env, [FORKED_ENV]: "1" },
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    child.on("message", (m: { ready?: boolean; error?: string }) => {
      if (settled) return;
      settled = true;
      if (m.ready) {
        child.unref();
        child.disconnect?.();
        resolve(0);
      } else reject(new CliError(m.error ?? "the background server failed"));
    });
    child.on("exit", (code) => {
      if (settled) return;
      settled = true;
      reject(new CliError(`the background server exited (status ${code}) before it was ready`));
    });
    child.on("error", (e) => {
      if (settled) return;
      settled = true;
      reject(new CliError(`could not start the background server: ${e.message}`));
    });
  });
}
