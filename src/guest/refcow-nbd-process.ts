/**
 * A `refcow nbd` server in a child process, serving one image on a Unix socket with its control socket
 * (--monitor) beside it: the refcow backend of `refcow run --emulator qemu`, where QEMU's nbd driver is the
 * guest disk's block driver and refcow the image's.
 *
 *   const srv = await RefcowNbdProcess.start({ image, dir, cache: "writeback", scheme: "owner" });
 *   ... QEMU connects to srv.socket ...
 *   await monitorCommand(srv.monitor, "snapshot -c mid");
 *   await srv.stopped();      // it exits by itself when its one client has gone, the image closed cleanly
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { refcowBin } from "../bench/sources.js";
import type { CacheMode, SchemeOptionValues } from "../engine/types.js";

export interface RefcowNbdOptions {
  image: string;
  /** A private directory for the two sockets (short: a Unix socket path has at most 107 bytes). */
  dir: string;
  cache: CacheMode;
  scheme?: string;
  schemeOptions?: SchemeOptionValues;
  /** Time allowed for the server to be ready, ms (default 60 s). */
  readyTimeoutMs?: number;
}

export class RefcowNbdProcess {
  private stderr = "";
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly socket: string,
    readonly monitor: string,
    private readonly proc: ChildProcess,
  ) {
    proc.stderr!.on("data", (b: Buffer) => {
      if (this.stderr.length < 16384) this.stderr += b.toString("utf8");
    });
    this.exited = new Promise((resolve) => {
      proc.on("exit", (code) => {
        this.exitCode = code;
        resolve(code);
      });
      proc.on("error", () => {
        this.exitCode = null;
        resolve(null);
      });
    });
  }

  /** Starts the server and resolves once both sockets accept connections. */
  static async start(o: RefcowNbdOptions): Promise<RefcowNbdProcess> {
    const socket = path.join(o.dir, "nbd.sock");
    const monitor = path.join(o.dir, "monitor.sock");
    const args = [refcowBin(), "nbd", "-k", socket, "--monitor", monitor, "-f", "qcow2", `--cache=${o.cache}`];
    if (o.scheme) args.push("--scheme", o.scheme);
    if (o.schemeOptions && Object.keys(o.schemeOptions).length > 0) {
      args.push("--scheme-opt", Object.entries(o.schemeOptions).map(([k, v]) => `${k}=${v}`).join(","));
    }
    args.push(o.image);
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
    const srv = new RefcowNbdProcess(socket, monitor, proc);
    const deadline = performance.now() + (o.readyTimeoutMs ?? 60_000);
    // The monitor socket is created once the export listens (refcow nbd's --monitor).
    while (!fs.existsSync(monitor)) {
      if (srv.exitCode !== undefined) throw new Error(`refcow nbd exited (status ${srv.exitCode}) before it was ready: ${srv.stderr.trim() || "no message"}`);
      if (performance.now() > deadline) {
        await srv.kill();
        throw new Error(`refcow nbd was not ready within ${o.readyTimeoutMs ?? 60_000} ms: ${srv.stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return srv;
  }

  /**
   * Waits for the server to exit by itself (it does when its last client has disconnected, closing the
   * image); after `timeoutMs` asks it to stop (SIGTERM: it answers what is in flight and closes the image).
   * Throws when it did not end with status 0.
   */
  async stopped(timeoutMs = 30_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const first = await Promise.race([this.exited, new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), timeoutMs)))]);
    clearTimeout(timer);
    const code = first === "timeout" ? (this.proc.kill("SIGTERM"), await this.exited) : first;
    if (code !== 0) throw new Error(`refcow nbd ended with status ${code}: ${this.stderr.trim() || "no message"}`);
  }

  /** Ends the server at once (failures only). */
  async kill(): Promise<void> {
    if (this.exitCode === undefined) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
  }
}
