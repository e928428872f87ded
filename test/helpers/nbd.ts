/** Running `refcow nbd` (the built CLI) as its own process from tests, and the URIs clients connect to. */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const REFCOW_BIN = fileURLToPath(new URL("../../dist/cli/bin.js", import.meta.url));

export function nbdUri(socket: string, exportName = ""): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

export interface RunningNbd {
  child: ChildProcess;
  socket: string;
  uri: string;
  /** Exit status (or the signal's name) once the server has ended; its stderr too. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

const started = new Set<ChildProcess>();

/** Kills (SIGKILL) every server startNbd started that is still running: for afterAll, after a failed test. */
export function killLeftoverServers(): void {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  started.clear();
}

/**
 * Whether `socket` accepts a connection now (closed at once, before the handshake). The socket's file
 * exists from bind() on, but connections are refused until listen().
 */
export function accepts(socket: string): Promise<boolean> {
  if (!fs.existsSync(socket)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const c = net.createConnection(socket, () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/** Starts `refcow nbd -k SOCKET ...args` and resolves once the socket accepts connections. */
export async function startNbd(socket: string, args: string[]): Promise<RunningNbd> {
  fs.rmSync(socket, { force: true });
  const child = spawn(process.execPath, [REFCOW_BIN, "nbd", "-k", socket, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  started.add(child);
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal, stderr })),
  );
  let gone = false;
  void exited.then(() => (gone = true));
  for (let i = 0; i < 400; i++) {
    if (gone) throw new Error(`refcow nbd ${args.join(" ")} exited before serving: ${(await exited).stderr}`);
    if (await accepts(socket)) return { child, socket, uri: nbdUri(socket), exited };
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGKILL");
  throw new Error(`refcow nbd ${args.join(" ")} did not create ${socket}`);
}

/** Runs a program; resolves with its status and output (never rejects on a non-zero status). */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0;
      resolve({ status, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}

/** Runs the built refcow CLI. */
export function refcow(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return run(process.execPath, [REFCOW_BIN, ...args]);
}

/** Image map as (start, length, data, zero) runs, merged: what an NBD client can learn of it. */
export interface MapRun {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

export function mergeRuns(runs: MapRun[]): MapRun[] {
  const out: MapRun[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last.data === r.data && last.zero === r.zero && last.start + last.length === r.start) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

export function socketIn(dir: string, name: string): string {
  return path.join(dir, `${name}.sock`);
}
