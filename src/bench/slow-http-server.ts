/**
 * A static HTTP/1.1 server for benchmarks that models a distant server: every request waits a fixed delay
 * before its answer starts, and all answers share one link of capped bandwidth. It counts what it served,
 * so a benchmark's request and byte figures come from the server, not from the client that made them.
 *
 *     node dist/bench/slow-http-server.js --root DIR [--delay-ms 20] [--bandwidth 50] [--port 0]
 *
 * What it speaks (RFC 9110):
 *   GET|HEAD /<name>                      the file <name> under the root (no "..", no subfolders)
 *     Range: bytes=<first>-<last>         one range, inclusive; <last> may be empty (to the end)
 *   200  whole file           (no Range header)
 *   206  Content-Range: bytes <first>-<last>/<size>
 *   416  the first byte is past the end (Content-Range "bytes *" + "/<size>")
 *   404  no such file;  400  a Range header it does not take (several ranges, suffix ranges)
 *   every 200/206 carries Accept-Ranges: bytes, Content-Length, ETag "<size>-<mtime ms>", Last-Modified
 *
 * Pacing: the delay runs from the request's arrival to its status line, for each request on its own (several
 * in flight wait side by side, as round trips do). The body goes out in 64 KiB slices; each slice books the
 * link's next free time at `bandwidth`, so answers in flight together share the cap instead of each having
 * it. Idle keep-alive connections stay open until the client closes them.
 *
 * Counters: requests (every request that named a file, HEAD included), body bytes sent, and per request
 * its method, path and range; `stats(reset)` reads them and optionally zeroes them.
 */
import { open, stat } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { BenchUsageError, integerOption, nonNegativeOption, progress, runProgram } from "./entry.js";

export interface SlowServerOptions {
  /** The folder whose files are served. */
  root: string;
  /** Wait before each answer, ms. */
  delayMs: number;
  /** Link cap shared by all answers, bytes per second; 0: uncapped. */
  bytesPerSecond: number;
  port?: number;
}

export interface ServedRequest {
  method: string;
  path: string;
  /** Inclusive byte range sent, when it was a range. */
  range?: [number, number];
  bytes: number;
}

export interface ServerCounters {
  requests: number;
  bytes: number;
  log: ServedRequest[];
}

export interface SlowHttpServer {
  port: number;
  /** http://127.0.0.1:PORT/<name> */
  url(name: string): string;
  stats(reset?: boolean): ServerCounters;
  close(): Promise<void>;
}

const SLICE = 64 * 1024;

/** One link of capped bandwidth: `transmit(n)` resolves when n more bytes may go out. */
class Link {
  private freeAt = 0;

  constructor(private readonly bytesPerSecond: number) {}

  async transmit(bytes: number): Promise<void> {
    if (this.bytesPerSecond <= 0) return;
    const now = performance.now();
    this.freeAt = Math.max(this.freeAt, now) + (bytes * 1000) / this.bytesPerSecond;
    const wait = this.freeAt - now;
    // Below a millisecond a timer costs more than it paces; the debt is carried into the next slice.
    if (wait >= 1) await sleep(wait);
  }
}

/** Resolves when `res` can take more, or is gone. */
function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done).off("close", done);
      resolve();
    };
    res.on("drain", done).on("close", done);
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The single range of a Range header value against a file of `size` bytes: undefined when it is not one we take. */
export function parseByteRange(header: string, size: number): { first: number; last: number } | "unsatisfiable" | undefined {
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = m[2] === "" ? Infinity : Number(m[2]);
  if (last < first) return undefined;
  if (first >= size) return "unsatisfiable";
  return { first, last: Math.min(last, size - 1) };
}

export async function startSlowHttpServer(o: SlowServerOptions): Promise<SlowHttpServer> {
  const root = path.resolve(o.root);
  const link = new Link(o.bytesPerSecond);
  let counters: ServerCounters = { requests: 0, bytes: 0, log: [] };

  const answer = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const name = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname.slice(1));
    if (req.method !== "GET" && req.method !== "HEAD") return void res.writeHead(405, { allow: "GET, HEAD" }).end();
    const file = path.join(root, name);
    if (name === "" || name.includes("/") || name.includes("\\") || path.dirname(file) !== root) return void res.writeHead(404).end();
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) return void res.writeHead(404).end();
    const entry: ServedRequest = { method: req.method, path: name, bytes: 0 };
    counters.requests++;
    counters.log.push(entry);
    const started = performance.now();
    const headers: http.OutgoingHttpHeaders = {
      "accept-ranges": "bytes",
      "content-type": "application/octet-stream",
      etag: `"${st.size}-${Math.floor(st.mtimeMs)}"`,
      "last-modified": st.mtime.toUTCString(),
    };
    let first = 0;
    let last = st.size - 1;
    let status = 200;
    if (req.headers.range !== undefined) {
      const r = parseByteRange(req.headers.range, st.size);
      if (r === undefined) return void res.writeHead(400).end("one byte range (bytes=FIRST-LAST) per request");
      if (r === "unsatisfiable") return void res.writeHead(416, { "content-range": `bytes */${st.size}` }).end();
      ({ first, last } = r);
      status = 206;
      headers["content-range"] = `bytes ${first}-${last}/${st.size}`;
      entry.range = [first, last];
    }
    const length = last - first + 1;
    headers["content-length"] = length;
    const rest = o.delayMs - (performance.now() - started);
    if (rest > 0) await sleep(rest);
    res.writeHead(status, headers);
    if (req.method === "HEAD" || length === 0) return void res.end();
    const fh = await open(file, "r");
    try {
      for (let at = first; at <= last; at += SLICE) {
        const n = Math.min(SLICE, last + 1 - at);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await fh.read(buf, 0, n, at);
        if (bytesRead !== n) throw new Error(`${file}: short read at ${at}`);
        await link.transmit(n);
        if (res.destroyed) return;
        entry.bytes += n;
        counters.bytes += n;
        if (!res.write(buf)) await drained(res);
      }
      res.end();
    } finally {
      await fh.close();
    }
  };

  const server = http.createServer((req, res) => {
    answer(req, res).catch((e: unknown) => {
      progress(`slow-http-server: ${req.method} ${req.url}: ${(e as Error).message}`);
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    stats(reset = false) {
      const seen = counters;
      if (reset) counters = { requests: 0, bytes: 0, log: [] };
      return seen;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const USAGE = `usage: node dist/bench/slow-http-server.js --root DIR [options]

Serves the files of DIR over HTTP on 127.0.0.1 with Range support, each answer delayed and all of them
sharing one capped link; prints "listening PORT", and on SIGINT/SIGTERM the requests and bytes it served.

  --root DIR        the folder served (its files only, no subfolders)
  --delay-ms MS     wait before each answer (default 20)
  --bandwidth MB/s  link cap in MB/s (10^6 bytes; default 50; 0: uncapped)
  --port N          (default: any free port)
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  { name: "slow-http-server", usage: USAGE, options: { root: { type: "string" }, "delay-ms": { type: "string", default: "20" }, bandwidth: { type: "string", default: "50" }, port: { type: "string" } } },
  async (values) => {
    if (!values.root) throw new BenchUsageError("--root DIR is needed");
    const server = await startSlowHttpServer({
      root: values.root,
      delayMs: nonNegativeOption("delay-ms", values["delay-ms"])!,
      bytesPerSecond: nonNegativeOption("bandwidth", values.bandwidth)! * 1e6,
      port: integerOption("port", values.port, 0),
    });
    process.stdout.write(`listening ${server.port}\n`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    const s = server.stats();
    process.stdout.write(`served ${s.requests} requests, ${s.bytes} bytes\n`);
    await server.close();
  },
);
