/**
 * The sources of the write benchmark, each a way to reach an image file, all driven by load.ts:
 *
 *   refcow  <scheme>        ring    the engine in a worker thread through the SharedArrayBuffer request ring
 *   refcow  <scheme>        nbd     `refcow nbd` serving the qcow2 on a Unix socket
 *   qemu    std | lazy_refcounts nbd  `qemu-nbd -f qcow2` serving a qcow2 with the same options
 *   raw     none            nbd     `qemu-nbd -f raw` serving a raw file
 *   raw     none            ring    the raw file through the ring (the ring's own floor)
 *   raw     none            direct  pwrite, and fdatasync at each flush (or each write in writethrough)
 *
 * Every file is prepared the same way before any clock runs: created, its working clusters written in full,
 * fdatasynced (so the first timed flush does not write out the preparation), and left in the page cache.
 * Between phases no server holds the file: the snapshot (or its delete) is taken by `qemu-img snapshot`
 * for QEMU's images and by refcow's own scheme for refcow's, outside every clock, and the file is synced
 * again; each phase then starts a fresh server or opens a fresh ring, so all sources start a phase with
 * cold metadata caches.
 */
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { createImagePath, openImagePath } from "../open/open-path.js";
import type { Qcow2Image } from "../open/qcow2.js";
import type { CacheMode, CostBreakdown } from "../engine/types.js";
import { NbdClient } from "../nbd/client.js";
import type { SourceSpec } from "../report/results.js";
import { openServedImage } from "../worker/index.js";
import { CLUSTER, type WriteTarget } from "./load.js";

/** A source opened on a file for one phase. */
export interface Session {
  target: WriteTarget;
  /** refcow's I/O accounting of the session so far (ring and in-process only). */
  stats?(): Promise<CostBreakdown>;
  close(): Promise<void>;
}

/** fdatasync of a whole file: what was written before the clock is on disk before it starts. */
export function syncFile(file: string): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Creates the source's file of `2 * n` clusters and writes its first n clusters in full (the working set; the
 * rest is what `after-delete` allocates — in the raw file it is written too, as a raw file has no holes to
 * allocate), then syncs it.
 */
export function prepareFile(spec: SourceSpec, file: string, n: number): void {
  fs.rmSync(file, { force: true });
  const fill = new Uint8Array(CLUSTER).fill(1);
  if (spec.source === "raw") {
    const fd = fs.openSync(file, "w");
    try {
      for (let c = 0; c < 2 * n; c++) fs.writeSync(fd, fill, 0, CLUSTER, c * CLUSTER);
    } finally {
      fs.closeSync(fd);
    }
  } else {
    createImagePath(file, { size: 2 * n * CLUSTER, lazyRefcounts: spec.scheme === "lazy_refcounts" });
    const img = openImagePath(file, { cache: "writeback" }) as Qcow2Image;
    for (let c = 0; c < n; c++) img.write(c * CLUSTER, fill);
    img.close();
  }
  syncFile(file);
}

/** The host operation between two phases ("snapshot" before post-snapshot, "delete" before after-delete), no server running. */
export function betweenPhases(spec: SourceSpec, file: string, op: "snapshot" | "delete"): void {
  if (spec.source === "raw") return;
  if (spec.source === "qemu") {
    execFileSync("qemu-img", ["snapshot", op === "snapshot" ? "-c" : "-d", "s", file], { stdio: ["ignore", "ignore", "pipe"] });
  } else {
    const img = openImagePath(file, { scheme: spec.scheme, alloc: spec.alloc }) as Qcow2Image;
    if (op === "snapshot") img.snapshotCreate("s");
    else img.snapshotDelete("s");
    img.close();
  }
  syncFile(file);
}

/** refcow's command, for its NBD server: dist/cli/bin.js next to this module's build. */
export function refcowBin(): string {
  const here = fileURLToPath(new URL("../cli/bin.js", import.meta.url));
  if (fs.existsSync(here)) return here;
  const dist = fileURLToPath(new URL("../../dist/cli/bin.js", import.meta.url));
  if (fs.existsSync(dist)) return dist;
  throw new Error(`refcow's command is not built (looked for ${here} and ${dist}): run 'npm run build'`);
}

/** The command line of an NBD server for the source on `file`, listening on `socket`. */
export function nbdServerCommand(spec: SourceSpec, file: string, socket: string, cache: CacheMode): [string, string[]] {
  const format = spec.source === "raw" ? "raw" : "qcow2";
  const common = ["-t", "-k", socket, "-f", format, `--cache=${cache}`];
  if (spec.source === "refcow") {
    const extra = ["--scheme", spec.scheme, ...(spec.alloc ? ["--alloc", spec.alloc] : [])];
    return [process.execPath, [refcowBin(), "nbd", ...common, ...extra, file]];
  }
  return ["qemu-nbd", [...common, file]];
}

/** A running NBD server (persistent, -t) on one file. */
export interface NbdServer {
  socket: string;
  /** SIGTERM, then waits for a clean exit (the server closes the image: its caches reach the file). */
  stop(): Promise<void>;
}

/** Starts an NBD server on `file` (refcow's or qemu-nbd) and waits until it accepts a connection. */
export async function startNbdServer(spec: SourceSpec, file: string, cache: CacheMode, socket: string, timeoutMs = 30000): Promise<NbdServer> {
  fs.rmSync(socket, { force: true });
  const [cmd, args] = nbdServerCommand(spec, file, socket, cache);
  const server = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  server.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  server.on("error", (e) => (err += e.message));
  const exited = new Promise<void>((r) => server.once("exit", () => r()));
  const gone = () => server.exitCode !== null || server.signalCode !== null;
  const t0 = Date.now();
  for (;;) {
    if (gone()) throw new Error(`${path.basename(cmd)} exited before accepting a connection: ${err.trim() || `status ${server.exitCode ?? server.signalCode}`}`);
    if (fs.existsSync(socket)) {
      try {
        await (await NbdClient.connect(socket)).close();
        break;
      } catch {
        /* not listening yet */
      }
    }
    if (Date.now() - t0 > timeoutMs) {
      server.kill("SIGKILL");
      throw new Error(`${path.basename(cmd)} did not accept a connection on ${socket} within ${timeoutMs / 1000} s: ${err.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socket,
    stop: async () => {
      if (!gone()) server.kill("SIGTERM");
      await exited;
      if (server.exitCode !== 0 && server.signalCode !== "SIGTERM") throw new Error(`${path.basename(cmd)} ended with ${server.exitCode ?? server.signalCode}: ${err.trim()}`);
    },
  };
}

/** A fresh NBD server on `file` with the load generator's client connected. */
export async function openNbdSession(spec: SourceSpec, file: string, cache: CacheMode, socket: string): Promise<Session> {
  const server = await startNbdServer(spec, file, cache, socket);
  let client: NbdClient;
  try {
    client = await NbdClient.connect(socket);
  } catch (e) {
    await server.stop().catch(() => {});
    throw e;
  }
  return {
    target: client,
    close: async () => {
      await client.close();
      await server.stop();
    },
  };
}

export async function openSession(spec: SourceSpec, file: string, cache: CacheMode, socket: string): Promise<Session> {
  switch (spec.transport) {
    case "nbd":
      return openNbdSession(spec, file, cache, socket);
    case "ring": {
      const c = await openServedImage(file, { scheme: spec.source === "raw" ? undefined : spec.scheme, alloc: spec.alloc, order: spec.order, cache, format: spec.source === "raw" ? "raw" : "qcow2" });
      return { target: c, stats: async () => ((await c.stats()) ?? {}) as CostBreakdown, close: () => c.close() };
    }
    case "in-process": {
      const img = openImagePath(file, { scheme: spec.source === "raw" ? undefined : spec.scheme, alloc: spec.alloc, order: spec.order, cache, format: spec.source === "raw" ? "raw" : "qcow2" });
      return { target: img, stats: async () => ("stats" in img ? img.stats() : {}) as CostBreakdown, close: async () => img.close() };
    }
    case "direct": {
      if (spec.source !== "raw") throw new Error("only the raw file is written directly");
      const fd = fs.openSync(file, "r+");
      return {
        target: {
          write: (offset, data) => {
            fs.writeSync(fd, data, 0, data.length, offset);
            if (cache === "writethrough") fs.fdatasyncSync(fd);
          },
          flush: () => {
            if (cache !== "unsafe") fs.fdatasyncSync(fd);
          },
        },
        close: async () => fs.closeSync(fd),
      };
    }
  }
}

/** Why a source cannot run on this machine, or undefined when it can. */
export function sourceUnavailable(spec: SourceSpec, tools: Tools): string | undefined {
  if (spec.source === "qemu" && !tools.qemuImg) return "qemu-img not found (install qemu-utils)";
  if (spec.transport === "nbd" && !tools.qemuNbd && spec.source !== "refcow") return "qemu-nbd not found (install qemu-utils)";
  if (spec.transport === "nbd" && spec.source === "refcow" && tools.refcowNbd !== true) return tools.refcowNbd || "refcow nbd is not available";
  return undefined;
}

export interface Tools {
  qemuImg: boolean;
  qemuNbd: boolean;
  fio: boolean;
  /** true, or why refcow's NBD server cannot be used. */
  refcowNbd: true | string;
}

function runs(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: "ignore", timeout: 30000 });
    return true;
  } catch {
    return false;
  }
}

/** Which external tools (and refcow's own NBD server) this machine has. */
export function detectTools(): Tools {
  let refcowNbd: true | string;
  try {
    refcowNbd = runs(process.execPath, [refcowBin(), "nbd", "--help"]) ? true : "this build of refcow has no `refcow nbd` command";
  } catch (e) {
    refcowNbd = (e as Error).message;
  }
  const fio = runs("fio", ["--version"]) && /\bnbd\b/.test(safeOutput("fio", ["--enghelp"]));
  return { qemuImg: runs("qemu-img", ["--version"]), qemuNbd: runs("qemu-nbd", ["--version"]), fio, refcowNbd };
}

function safeOutput(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "ignore"] }).toString();
  } catch {
    return "";
  }
}
