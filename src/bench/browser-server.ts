/**
 * What the boot benchmarks' browser cases run on (boot-os-browser.ts, remote-boot-browser.ts): one origin on
 * 127.0.0.1 for the page, in front of three servers, and Debian's Chromium, headless, driven by
 * playwright-core on a profile folder of the run's own (its OPFS on disk).
 *
 *   /bench/NAME    the bench's image files, unpaced (a slow-http-server with no delay and no cap): how a run
 *                  puts its image into OPFS before the clock starts
 *   /remote/NAME   the paced server the remote benchmark measures (its own counters are the figures)
 *   anything else  the page's server (src/cli/web-server.ts: os.html, its bundles, firmware, v86's wasm),
 *                  built into a folder of the run's own
 *
 * One origin, so that the page reaches the images without CORS (the page is cross-origin isolated:
 * COOP/COEP), and every answer carries `Cache-Control: no-store`, so that Chromium's HTTP cache holds none
 * of an image: a second boot finds only what the page itself kept (OPFS).
 */
import * as http from "node:http";
import { existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { startWebServer } from "../cli/web-server.js";
import { startSlowHttpServer, type SlowHttpServer } from "./slow-http-server.js";

export const CHROMIUM = "/usr/bin/chromium";

export interface BrowserFront {
  /** http://127.0.0.1:PORT/ */
  url: string;
  close(): Promise<void>;
}

export interface BrowserFrontOptions {
  /** Folder of the files served unpaced under /bench/. */
  benchDir: string;
  /** Folder for the page's bundles. */
  webDir: string;
  /** The paced server mounted at /remote/. */
  remote?: SlowHttpServer;
  memoryMiB: number;
  onLog?: (line: string) => void;
}

const FRONT_HEADERS = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};

export async function startBrowserFront(o: BrowserFrontOptions): Promise<BrowserFront> {
  const web = await startWebServer({ port: 0, outDir: o.webDir, memoryMiB: o.memoryMiB, demoOs: false, onLog: o.onLog });
  const loader = await startSlowHttpServer({ root: o.benchDir, delayMs: 0, bytesPerSecond: 0 });
  const agent = new http.Agent({ keepAlive: true });
  const upstream = (p: string): { port: number; path: string } => {
    if (p.startsWith("/bench/")) return { port: loader.port, path: p.slice("/bench".length) };
    if (p.startsWith("/remote/")) {
      if (!o.remote) throw new Error("no paced server behind /remote/");
      return { port: o.remote.port, path: p.slice("/remote".length) };
    }
    return { port: web.port, path: p };
  };
  const server = http.createServer((req, res) => {
    let to: { port: number; path: string };
    try {
      to = upstream(req.url ?? "/");
    } catch (e) {
      return void res.writeHead(404, FRONT_HEADERS).end(`${(e as Error).message}\n`);
    }
    const up = http.request({ host: "127.0.0.1", port: to.port, method: req.method, path: to.path, headers: { ...req.headers, host: `127.0.0.1:${to.port}` }, agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, { ...answer.headers, ...FRONT_HEADERS });
      answer.pipe(res);
    });
    up.on("error", (e) => {
      if (!res.headersSent) res.writeHead(502, FRONT_HEADERS).end(`${e.message}\n`);
      else res.destroy();
    });
    // A client that goes away mid-answer ends the upstream request too (the paced server stops sending).
    res.on("close", () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agent.destroy();
      await loader.close();
      await web.close();
    },
  };
}

/** Headless Chromium on the profile folder `profile` (made when missing; OPFS lives in it). */
export async function launchBenchChromium(profile: string): Promise<{ context: BrowserContext; page: Page }> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Chromium (bash test/setup/ensure-chromium.sh as root)`);
  const context = await chromium.launchPersistentContext(path.resolve(profile), {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  return { context, page: context.pages()[0] ?? (await context.newPage()) };
}
