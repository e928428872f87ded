/**
 * `npm run web`: builds the browser page (src/web) with esbuild and serves it on 127.0.0.1 with the headers
 * that make it cross-origin isolated (SharedArrayBuffer for the request ring, 5 µs timers):
 * `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp` on every
 * response. Also serves the guest (kernel, initramfs, BIOS from .cache/guest, built with
 * guest-images/build.sh when missing) and v86's wasm.
 *
 *   node dist/cli/web-server.js [--port 8086] [--host 127.0.0.1]
 *
 * `/os.html` boots an installed OS from its own disk (os-main.ts): the demo OS (guest-images/build-os.sh,
 * built when missing and served as `/os/demo-os.qcow2`) or an uploaded image.
 *
 * Routes: `/` (index.html; the bundles are rebuilt on each load of it or of os.html), `/main.js`,
 * `/os-main.js`, `/web-worker.js` (+ .map),
 * `/guest/config.json` (kernel command line, RAM, file URLs), `/guest/{bzImage,initramfs.cpio,bios.bin,
 * vgabios.bin}`, `/v86/v86.wasm`, `/v86/libv86.mjs`. OPFS needs a secure context: http on localhost / 127.0.0.1 is one, a LAN
 * address is not.
 */
import { createReadStream, existsSync, mkdirSync, copyFileSync, renameSync, rmSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { SCHEME_NAMES } from "../schemes/index.js";
import { DEFAULT_CMDLINE } from "../guest/guest-runner.js";
import { ensureGuestImage, guestImagePaths, readGuestManifest, repoRoot, v86WasmPath } from "../guest/guest-image.js";
import { ensureOsImage, readOsManifest, writeOsImage } from "../guest/os-image.js";

export interface WebServerOptions {
  /** TCP port (default 8086; 0 = any free port). */
  port?: number;
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Where the bundles go (default .cache/web of the checkout). */
  outDir?: string;
  /** Guest RAM in MiB given to the page (default 128). */
  memoryMiB?: number;
  /** Progress lines (guest image build, bundle build). */
  onLog?: (line: string) => void;
  /** Serve the demo OS disk to os.html (default true; built when missing, as the test guest is). */
  demoOs?: boolean;
}

export interface WebServer {
  url: string;
  port: number;
  /** Range requests answered and the bytes they sent, since the start (a remote image's traffic). */
  rangeStats: { requests: number; bytes: number };
  close(): Promise<void>;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
};

/** Headers on every response: cross-origin isolation, and no caching of a dev build. */
const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "Cache-Control": "no-store",
  "X-Content-Type-Options": "nosniff",
};

interface Bundler {
  rebuild(): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * Builds the page bundle (src/web/main.ts → main.js) and the engine worker bundle
 * (src/worker/web-worker.ts → web-worker.js) into `outDir`, and copies index.html. The worker bundle gets
 * the browser stand-ins of the few Node built-ins the engine uses (src/web/shims); the page bundle
 * contains v86, whose Node-only branches import built-ins that are left external (never reached in a page).
 */
export async function createBundler(outDir: string): Promise<Bundler> {
  const esbuild = await import("esbuild");
  const root = repoRoot();
  const web = path.join(root, "src", "web");
  mkdirSync(outDir, { recursive: true });
  const common = {
    bundle: true,
    format: "esm" as const,
    platform: "browser" as const,
    target: "chrome110",
    sourcemap: true,
    logLevel: "silent" as const,
    outdir: outDir,
  };
  const shims = {
    name: "node-builtins-for-the-browser",
    setup(build: { onResolve(o: { filter: RegExp }, cb: (a: { path: string }) => { path: string }): void }) {
      const map: Record<string, string> = {
        "node:zlib": path.join(web, "shims", "node-zlib.ts"),
        "node:perf_hooks": path.join(web, "shims", "node-perf-hooks.ts"),
      };
      build.onResolve({ filter: /^node:(zlib|perf_hooks)$/ }, (a) => ({ path: map[a.path]! }));
    },
  };
  const page = await esbuild.context({
    ...common,
    // main: the page; refcow-v86: the `refcow/v86` entry (openV86DiskOpfs, ...) as one ES module, for a v86
    // embedder's own page on this server (`await import("/refcow-v86.js")`).
    entryPoints: { main: path.join(web, "main.ts"), "os-main": path.join(web, "os-main.ts"), "refcow-v86": path.join(root, "src", "v86.ts") },
    external: ["node:*", "crypto", "fs", "perf_hooks"],
    // The page lists the schemes of the registry without bundling the engine.
    define: { REFCOW_SCHEME_NAMES: JSON.stringify(SCHEME_NAMES) },
  });
  const worker = await esbuild.context({
    ...common,
    entryPoints: { "web-worker": path.join(root, "src", "worker", "web-worker.ts") },
    plugins: [shims],
    inject: [path.join(web, "shims", "node-process.ts")],
  });
  const rebuild = async () => {
    try {
      await Promise.all([page.rebuild(), worker.rebuild()]);
    } catch (e) {
      const errors = (e as { errors?: Array<{ text: string; location?: { file: string; line: number } }> }).errors;
      if (errors?.length) {
        throw new Error(`bundle build failed:\n${errors.map((x) => `${x.location ? `${x.location.file}:${x.location.line}: ` : ""}${x.text}`).join("\n")}`);
      }
      throw e;
    }
    for (const html of ["index.html", "os.html"]) copyFileSync(path.join(web, html), path.join(outDir, html));
  };
  await rebuild();
  return {
    rebuild,
    dispose: async () => {
      await Promise.all([page.dispose(), worker.dispose()]);
    },
  };
}

/** Builds the page and serves it; resolves once listening. */
export async function startWebServer(opts: WebServerOptions = {}): Promise<WebServer> {
  const log = opts.onLog ?? (() => undefined);
  const guest = await ensureGuestImage({ onProgress: log });
  const outDir = opts.outDir ?? path.join(repoRoot(), ".cache", "web");
  const t0 = performance.now();
  const bundler = await createBundler(outDir);
  log(`[web] page built into ${outDir} in ${(performance.now() - t0).toFixed(0)} ms`);
  const manifest = readGuestManifest(guestImagePaths(guest.dir));
  const demoOs = opts.demoOs === false ? undefined : await prepareDemoOs(outDir, log);
  const config = JSON.stringify({
    cmdline: DEFAULT_CMDLINE,
    memoryMiB: opts.memoryMiB ?? 128,
    kernelRelease: manifest.kernelRelease,
    files: { bios: "guest/bios.bin", vgaBios: "guest/vgabios.bin", bzImage: "guest/bzImage", initrd: "guest/initramfs.cpio", wasm: "v86/v86.wasm" },
    os: demoOs && { url: "os/demo-os.qcow2", name: "demo-os.qcow2", fileSize: statSync(demoOs.file).size, virtualSize: demoOs.virtualSize, kernelRelease: demoOs.kernelRelease },
  });
  const wasmDir = path.dirname(v86WasmPath());
  const files: Record<string, string> = {
    "/index.html": path.join(outDir, "index.html"),
    "/os.html": path.join(outDir, "os.html"),
    "/os-main.js": path.join(outDir, "os-main.js"),
    "/os-main.js.map": path.join(outDir, "os-main.js.map"),
    "/main.js": path.join(outDir, "main.js"),
    "/main.js.map": path.join(outDir, "main.js.map"),
    "/refcow-v86.js": path.join(outDir, "refcow-v86.js"),
    "/refcow-v86.js.map": path.join(outDir, "refcow-v86.js.map"),
    "/web-worker.js": path.join(outDir, "web-worker.js"),
    "/web-worker.js.map": path.join(outDir, "web-worker.js.map"),
    "/guest/bzImage": guest.bzImage,
    "/guest/initramfs.cpio": guest.initrd,
    "/guest/bios.bin": guest.bios,
    "/guest/vgabios.bin": guest.vgaBios,
    ...(demoOs ? { "/os/demo-os.qcow2": demoOs.file } : {}),
    "/v86/v86.wasm": path.join(wasmDir, "v86.wasm"),
    "/v86/v86-fallback.wasm": path.join(wasmDir, "v86-fallback.wasm"),
    // v86 itself as an ES module, for a page of this origin that embeds it (README's example).
    "/v86/libv86.mjs": path.join(wasmDir, "libv86.mjs"),
  };

  const send = (res: ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { ...ISOLATION_HEADERS, "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  };
  const rangeStats = { requests: 0, bytes: 0 };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "text/plain", "method not allowed\n");
    const url = new URL(req.url ?? "/", "http://localhost");
    let route = url.pathname;
    if (route === "/" || route === "/index.html" || route === "/os.html") {
      try {
        await bundler.rebuild();
      } catch (e) {
        log(`[web] ${(e as Error).message}`);
        return send(res, 500, "text/plain; charset=utf-8", `${(e as Error).message}\n`);
      }
      if (route === "/") route = "/index.html";
    }
    if (route === "/guest/config.json") return send(res, 200, CONTENT_TYPES[".json"]!, config);
    const file = files[route];
    if (!file || !existsSync(file)) return send(res, 404, "text/plain", "not found\n");
    const st = statSync(file);
    const size = st.size;
    const ext = path.extname(file);
    // Range requests (one range), with validators: os.html?image=URL reads a disk image this way.
    const headers = { ...ISOLATION_HEADERS, "Content-Type": CONTENT_TYPES[ext] ?? "application/octet-stream", "Accept-Ranges": "bytes", ETag: `"${size}-${Math.floor(st.mtimeMs)}"`, "Last-Modified": st.mtime.toUTCString() };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    if (range) {
      const first = Number(range[1]);
      const last = range[2] === "" ? size - 1 : Math.min(size - 1, Number(range[2]));
      if (first >= size || last < first) {
        res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}` });
        return res.end();
      }
      res.writeHead(206, { ...headers, "Content-Range": `bytes ${first}-${last}/${size}`, "Content-Length": last - first + 1 });
      rangeStats.requests++;
      rangeStats.bytes += req.method === "HEAD" ? 0 : last - first + 1;
      if (req.method === "HEAD") return res.end();
      createReadStream(file, { start: first, end: last }).pipe(res);
      return;
    }
    res.writeHead(200, { ...headers, "Content-Length": size });
    if (req.method === "HEAD") return res.end();
    createReadStream(file).pipe(res);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) send(res, 500, "text/plain", `${(e as Error).message}\n`);
      else res.destroy();
    });
  });
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 8086, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}/`,
    port,
    rangeStats,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await bundler.dispose();
    },
  };
}

/**
 * The demo OS disk (guest-images/build-os.sh, built when missing) as a qcow2 for os.html to copy into OPFS:
 * written through the engine into `outDir` (tens of MiB: only the clusters that hold data), again when the
 * raw disk is newer. Without it (the build failed) os.html offers uploads only.
 */
async function prepareDemoOs(outDir: string, log: (line: string) => void): Promise<{ file: string; virtualSize: number; kernelRelease: string } | undefined> {
  try {
    const paths = await ensureOsImage({ onProgress: log });
    const manifest = readOsManifest(paths);
    const file = path.join(outDir, "demo-os.qcow2");
    if (!existsSync(file) || statSync(file).mtimeMs < statSync(paths.image).mtimeMs) {
      const tmp = `${file}.tmp`;
      rmSync(tmp, { force: true });
      writeOsImage(paths.image, tmp, { format: "qcow2" });
      renameSync(tmp, file);
      log(`[web] demo OS disk written to ${file}`);
    }
    return { file, virtualSize: manifest.size, kernelRelease: manifest.kernelRelease };
  } catch (e) {
    log(`[web] no demo OS disk (os.html offers uploads only): ${(e as Error).message.split("\n")[0]}`);
    return undefined;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: "string", default: "8086" },
      host: { type: "string", default: "127.0.0.1" },
      mem: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write("usage: npm run web [-- --port N] [--host ADDR] [--mem MiB]\n");
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port '${values.port}'`);
  const server = await startWebServer({
    port,
    host: values.host,
    memoryMiB: values.mem ? Number(values.mem) : undefined,
    onLog: (l) => process.stderr.write(l + "\n"),
  });
  process.stdout.write(`refcow page: ${server.url}\nboot an OS from its disk: ${server.url}os.html\n`);
  if (values.host !== "127.0.0.1" && values.host !== "localhost" && values.host !== "::1") {
    process.stdout.write("(OPFS and SharedArrayBuffer need a secure context: open it as http://localhost or http://127.0.0.1, or over https)\n");
  }
  const stop = () => {
    void server.close().finally(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`refcow web: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
