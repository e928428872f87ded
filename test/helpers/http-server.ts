/** A local HTTP server with fault injection (http-fault-server.mjs, in a child process) for the HTTP file's tests. */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export interface Fault {
  path?: string;
  /** Only ranges starting at or after this offset. */
  from?: number;
  times?: number;
  status?: number;
  delayMs?: number;
  /** Send this many bytes of the body, then drop the connection. */
  truncate?: number;
  reset?: boolean;
  noRange?: boolean;
  wrongRange?: boolean;
}

export interface ServerConfig {
  faults?: Fault[];
  etags?: Record<string, string>;
  noValidators?: boolean;
  delayMs?: number;
  bytesPerSec?: number;
}

export interface ServerStats {
  requests: number;
  bytes: number;
  ranges: [string, number, number][];
}

export interface TestHttpServer {
  port: number;
  /** http://127.0.0.1:PORT/<name> */
  url(name: string): string;
  configure(config: ServerConfig): Promise<void>;
  /** The counters since the last reset; `reset` zeroes them after reading. */
  stats(reset?: boolean): Promise<ServerStats>;
  close(): Promise<void>;
}

export async function startHttpServer(root: string): Promise<TestHttpServer> {
  const script = fileURLToPath(new URL("./http-fault-server.mjs", import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [script, "--root", root], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the test HTTP server exited (${code})`)));
    child.stdout!.on("data", (d: Buffer) => {
      const m = /listening (\d+)/.exec(d.toString());
      if (m) resolve(Number(m[1]));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    port,
    url: (name) => `${base}/${name.replace(/^\//, "")}`,
    async configure(config) {
      await fetch(`${base}/_control`, { method: "POST", body: JSON.stringify(config) });
    },
    async stats(reset = false) {
      return (await (await fetch(`${base}/_stats`, { method: reset ? "POST" : "GET" })).json()) as ServerStats;
    },
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill();
      }),
  };
}
