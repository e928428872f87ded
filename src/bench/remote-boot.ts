/**
 * The demo OS booted from a URL through a slow server: refcow (a compressed qcow2 base by URL under a new
 * overlay, with an empty and then with a filled persistent chunk cache, and the same base as a local file)
 * against v86's own AsyncXHRBuffer on the raw image over the same server. Time to the shell prompt, the
 * requests and bytes the server sent, and the process's peak RSS; the run itself is remote-boot-run.ts.
 *
 *     npm run build && node dist/bench/remote-boot.js [--reps 3] [--delay-ms 20] [--bandwidth 50] [--json FILE]
 *     node dist/bench/remote-boot.js --browser [--reps 3] ...   the same in headless Chromium (remote-boot-browser.ts)
 *
 * (`npm run bench:remote-boot` runs it with the defaults.)
 *
 * Cases (--cases; default the first four):
 *   refcow-url-cold   os.qcow2 (`qemu-img convert -c` of the demo OS disk) by URL under a new overlay,
 *                     the chunk cache an empty folder (`refcow boot URL --overlay FILE` with a new --cache-dir)
 *   refcow-url-warm   the same right after, under another new overlay, the chunk cache as the cold boot of
 *                     the same repetition left it (a second boot)
 *   refcow-local      os.qcow2 as a local file under a new overlay (the chain the same, the base local)
 *   v86-xhr           os.img (the raw disk) by URL as v86's `hda: { url, async: true, size,
 *                     fixed_chunk_size }` (AsyncXHRBuffer; --chunk-mib, default 1)
 *   refcow-url-cold-16g, v86-xhr-16g   the same on the disk grown to 16 GiB (`qemu-img resize` of the
 *                     qcow2, a sparse copy of the raw file truncated): the same data, for the peak RSS
 *
 * v86 in Node reads `url` images with the file system; in a browser with XMLHttpRequest. The v86-xhr child
 * gives v86 an XMLHttpRequest made over Node's fetch (xhr-over-fetch.ts) and has v86 choose it, so its
 * requests go over HTTP to the same server as refcow's; the child fails if v86 made none.
 *
 * Like for like: every run is a fresh Node process; the same v86 build, firmware, RAM (--memory), IDE
 * primary master, prompt; the server (slow-http-server.ts) is the same for both, with a fixed delay before
 * each answer and one link of capped bandwidth shared by the answers in flight. The cases run interleaved:
 * each repetition runs the units [cold, then warm], [local], [v86-xhr] (and the 16 GiB cases, one unit
 * each) once, in an order rotated by one per repetition. Time to the prompt: from the start of the run (before the overlay is made and the chain
 * opened, or before v86 is built) to the prompt on the serial console.
 *
 * With --browser the PC runs in Chromium's page (os.html) and the first four cases are the page's: the
 * overlay and the chunk cache in OPFS, v86's AsyncXHRBuffer over the same server (remote-boot-browser.ts);
 * v86's instruction counts as the page reads them; no peak RSS, no CPU time (the page has neither).
 *
 * Figures that the measured code did not produce: requests and bytes are the server's counts (v86's loader
 * counts are printed beside as a cross-check); after every refcow run the overlay passes `qemu-img check`
 * (opened without its backing, so that the check fetches nothing). A run that fails is a row with its reason.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ensureGuestImage, v86WasmPath } from "../guest/guest-image.js";
import { ensureOsImage } from "../guest/os-image.js";
import { runJsonChild } from "./child-run.js";
import { BenchUsageError, integerOption, listOption, nonNegativeOption, progress, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";
import type { RemoteBootResult, RemoteBootRun, RemoteBootSource } from "./remote-boot-run.js";
import { medianCell, ratioLine, textTable } from "./rep-table.js";
import { startSlowHttpServer, type SlowHttpServer } from "./slow-http-server.js";
import { withXhrLoader } from "./xhr-over-fetch.js";
import type { BrowserRemoteCase } from "./remote-boot-browser.js";

const MiB = 2 ** 20;
const CASES = ["refcow-url-cold", "refcow-url-warm", "refcow-local", "v86-xhr", "refcow-url-cold-16g", "v86-xhr-16g"] as const;
type CaseName = (typeof CASES)[number];
const DEFAULT_CASES: readonly CaseName[] = ["refcow-url-cold", "refcow-url-warm", "refcow-local", "v86-xhr"];
/** The source of each case, and the stem of its image files in the served folder (STEM.qcow2, STEM.img). */
const CASE_SPECS: Record<CaseName, { source: RemoteBootSource; stem: string }> = {
  "refcow-url-cold": { source: "refcow-url", stem: "os" },
  "refcow-url-warm": { source: "refcow-url", stem: "os" },
  "refcow-local": { source: "refcow-local", stem: "os" },
  "v86-xhr": { source: "v86-xhr", stem: "os" },
  "refcow-url-cold-16g": { source: "refcow-url", stem: "os-16g" },
  "v86-xhr-16g": { source: "v86-xhr", stem: "os-16g" },
};
const BIG_GIB = 16;
const SOURCES: readonly RemoteBootSource[] = ["refcow-url", "refcow-local", "v86-xhr"];

export type CaseResult = RemoteBootResult<CaseName>;

const USAGE = `usage: node dist/bench/remote-boot.js [options]

Boots the demo OS to the shell prompt from a URL through a local server with a per-request delay and a
bandwidth cap: refcow on a compressed qcow2 base under an overlay (empty chunk cache, then filled), refcow
on the same base as a local file, and v86's own AsyncXHRBuffer on the raw image; prints time to the prompt,
the server's request and byte counts, peak RSS, medians with min-max and per-repetition ratios.

  --reps N          repetitions, interleaved (default 3)
  --delay-ms MS     the server's wait before each answer (default 20)
  --bandwidth MB/s  the server's link cap, 10^6 bytes per second (default 50)
  --chunk-mib N     v86's fixed_chunk_size in MiB (default 1)
  --memory MiB      guest RAM (default 128)
  --cases a,b       ${CASES.join(", ")}
                    (default the first four; warm needs cold)
  --browser         in headless Chromium (os.html: overlay and chunk cache in OPFS; v86's AsyncXHRBuffer);
                    the first four cases only; /usr/bin/chromium is needed
  --timeout S       with --browser: give up on a boot after S seconds (default 600)
  --dir DIR         where the images, overlays and caches go (default: a temporary folder, removed at the end)
  --json FILE       every run as JSON too
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "remote-boot bench",
    usage: USAGE,
    options: {
      reps: { type: "string", default: "3" },
      "delay-ms": { type: "string", default: "20" },
      bandwidth: { type: "string", default: "50" },
      "chunk-mib": { type: "string", default: "1" },
      memory: { type: "string", default: "128" },
      cases: { type: "string" },
      dir: { type: "string" },
      json: { type: "string" },
      browser: { type: "boolean" },
      timeout: { type: "string", default: "600" },
      // One run in this process (the parent starts these); prints the run as one JSON line.
      run: { type: "string" },
      image: { type: "string" },
      overlay: { type: "string" },
      size: { type: "string" },
    },
  },
  async (values) => {
    const memoryMiB = integerOption("memory", values.memory, 16)!;
    const chunkBytes = integerOption("chunk-mib", values["chunk-mib"])! * MiB;
    if (values.run !== undefined) {
      const source = values.run as RemoteBootSource;
      if (!SOURCES.includes(source)) throw new BenchUsageError(`--run takes one of ${SOURCES.join(", ")}`);
      if (!values.image) throw new BenchUsageError("--run needs --image");
      const guest = await ensureGuestImage({ onProgress: progress });
      // v86 is evaluated by this import for the first time in the process: under the XHR loader for v86-xhr.
      const load = () => import("./remote-boot-run.js");
      const { runRemoteBoot } = source === "v86-xhr" ? await withXhrLoader(load) : await load();
      const run = await runRemoteBoot({
        source,
        image: values.image,
        overlay: values.overlay,
        size: integerOption("size", values.size),
        fixedChunkSize: chunkBytes,
        memoryMiB,
        firmware: { bios: readBuffer(guest.bios), vgaBios: readBuffer(guest.vgaBios) },
        wasmPath: v86WasmPath(),
        onProgress: progress,
      });
      process.stdout.write(JSON.stringify(run) + "\n");
      return;
    }
    const names = (listOption(values.cases) ?? [...DEFAULT_CASES]).map((n) => (CASES.includes(n as CaseName) ? (n as CaseName) : unknownCase(n)));
    if (names.includes("refcow-url-warm") && !names.includes("refcow-url-cold")) throw new BenchUsageError("refcow-url-warm boots from the cache refcow-url-cold fills: give both");
    // Imported only for --browser: it brings v86 in (boot-os-run.ts), which the v86-xhr child must load under withXhrLoader.
    const browser = values.browser ? await import("./remote-boot-browser.js") : undefined;
    const notInBrowser = names.filter((n) => browser && !browser.BROWSER_REMOTE_CASES.includes(n as BrowserRemoteCase));
    if (browser && notInBrowser.length) throw new BenchUsageError(`--browser runs ${browser.BROWSER_REMOTE_CASES.join(", ")}, not ${notInBrowser.join(", ")}`);
    const reps = integerOption("reps", values.reps)!;
    const delayMs = nonNegativeOption("delay-ms", values["delay-ms"])!;
    const bandwidthMBps = nonNegativeOption("bandwidth", values.bandwidth)!;
    const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "refcow-remote-boot-bench-"));
    const srv = path.join(dir, "srv");
    fs.mkdirSync(srv, { recursive: true });
    let server: SlowHttpServer | undefined;
    try {
      await prepareImages(srv, names.some((n) => CASE_SPECS[n].stem !== "os"));
      server = await startSlowHttpServer({ root: srv, delayMs, bytesPerSecond: bandwidthMBps * 1e6 });
      const settings = { delayMs, bandwidthMBps, chunkMiB: chunkBytes / MiB, memoryMiB, images: imageSizes(srv) };
      if (browser) {
        const checkOverlay = (file: string) => qemuCheckVerdict(withoutBacking(file));
        const results = await browser.runRemoteBootInBrowser({ cases: names as BrowserRemoteCase[], reps, dir, srv, server, memoryMiB, chunkBytes, checkOverlay, timeoutMs: integerOption("timeout", values.timeout)! * 1000 });
        if (values.json) fs.writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
        process.stdout.write(formatRemoteBootReport(names, results, reps, { ...settings, where: "Chromium" }));
        return;
      }
      const bench: Bench = { server, dir, srv, memoryMiB, chunkBytes };
      const units: CaseName[][] = [["refcow-url-cold", "refcow-url-warm"], ["refcow-local"], ["v86-xhr"], ["refcow-url-cold-16g"], ["v86-xhr-16g"]].map((u) => u.filter((n) => names.includes(n as CaseName)) as CaseName[]).filter((u) => u.length > 0);
      const results: CaseResult[] = [];
      for (let rep = 0; rep < reps; rep++) {
        const cacheDir = path.join(dir, `cache-${rep}`);
        fs.rmSync(cacheDir, { recursive: true, force: true });
        fs.mkdirSync(cacheDir);
        for (let i = 0; i < units.length; i++) {
          for (const name of units[(i + rep) % units.length]!) {
            progress(`repetition ${rep + 1}/${reps}: ${name} (load ${os.loadavg()[0]!.toFixed(2)})`);
            results.push(await runCase(bench, name, rep, path.join(cacheDir, CASE_SPECS[name].stem)));
          }
        }
        fs.rmSync(cacheDir, { recursive: true, force: true });
      }
      if (values.json) fs.writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
      process.stdout.write(formatRemoteBootReport(names, results, reps, settings));
    } finally {
      await server?.close();
      if (!values.dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

interface Bench {
  server: SlowHttpServer;
  dir: string;
  srv: string;
  memoryMiB: number;
  chunkBytes: number;
}

function unknownCase(name: string): never {
  throw new BenchUsageError(`unknown case '${name}' (cases: ${CASES.join(", ")})`);
}

/**
 * os.img (the demo OS's raw disk, linked) and os.qcow2 (QEMU's compressed qcow2 of it) in the served folder;
 * with `big`, os-16g.qcow2 and os-16g.img too: the same data on a 16 GiB disk.
 */
async function prepareImages(srv: string, big: boolean): Promise<void> {
  const osDisk = await ensureOsImage({ onProgress: progress });
  const raw = path.join(srv, "os.img");
  if (!fs.existsSync(raw)) fs.symlinkSync(path.resolve(osDisk.image), raw);
  const qcow2 = path.join(srv, "os.qcow2");
  if (!fs.existsSync(qcow2)) {
    progress(`writing ${qcow2} (qemu-img convert -c)`);
    execFileSync("qemu-img", ["convert", "-c", "-O", "qcow2", osDisk.image, qcow2 + ".tmp"]);
    fs.renameSync(qcow2 + ".tmp", qcow2);
  }
  if (!big) return;
  const bigQcow2 = path.join(srv, "os-16g.qcow2");
  if (!fs.existsSync(bigQcow2)) {
    fs.copyFileSync(qcow2, bigQcow2 + ".tmp");
    execFileSync("qemu-img", ["resize", "-q", bigQcow2 + ".tmp", `${BIG_GIB}G`]);
    fs.renameSync(bigQcow2 + ".tmp", bigQcow2);
  }
  const bigRaw = path.join(srv, "os-16g.img");
  if (!fs.existsSync(bigRaw)) {
    execFileSync("cp", ["--sparse=always", path.resolve(osDisk.image), bigRaw + ".tmp"]);
    fs.truncateSync(bigRaw + ".tmp", BIG_GIB * 2 ** 30);
    fs.renameSync(bigRaw + ".tmp", bigRaw);
  }
}

function imageSizes(srv: string): { rawBytes: number; qcow2Bytes: number } {
  return { rawBytes: fs.statSync(path.join(srv, "os.img")).size, qcow2Bytes: fs.statSync(path.join(srv, "os.qcow2")).size };
}

/** One run in a child process, the server's counts around it, then the overlay's check. */
async function runCase(b: Bench, name: CaseName, rep: number, cacheDir: string): Promise<CaseResult> {
  const { source, stem } = CASE_SPECS[name];
  const overlay = source === "v86-xhr" ? undefined : path.join(b.dir, `overlay-${name}.qcow2`);
  if (overlay) {
    fs.rmSync(overlay, { force: true });
    fs.rmSync(overlay + ".remote.json", { force: true });
  }
  const file = `${stem}.${source === "v86-xhr" ? "img" : "qcow2"}`;
  const image = source === "refcow-local" ? path.join(b.srv, file) : b.server.url(file);
  const args = ["--run", source, "--image", image, "--memory", String(b.memoryMiB), "--chunk-mib", String(b.chunkBytes / MiB)];
  if (overlay) args.push("--overlay", overlay);
  if (source === "v86-xhr") args.push("--size", String(fs.statSync(path.join(b.srv, file)).size));
  // The chunk cache: the repetition's folder for the image, for the URL cases; none for the others.
  if (source === "refcow-url") fs.mkdirSync(cacheDir, { recursive: true });
  const env = { ...process.env, REFCOW_HTTP_CACHE: source === "refcow-url" ? cacheDir : "off" };
  b.server.stats(true);
  try {
    const run = await runJsonChild<RemoteBootRun>(fileURLToPath(import.meta.url), args, env);
    const served = b.server.stats(true);
    const check = overlay ? qemuCheckVerdict(withoutBacking(overlay)) : undefined;
    return { case: name, rep, run, requests: served.requests, bytes: served.bytes, check };
  } catch (e) {
    const error = (e as Error).message.split("\n").slice(0, 3).join(" / ");
    progress(`  ${name} failed: ${error}`);
    return { case: name, rep, error };
  }
}

/** A qcow2 file opened by QEMU without its backing file (`json:` pseudo-protocol, backing null). */
function withoutBacking(file: string): string {
  return `json:${JSON.stringify({ driver: "qcow2", backing: null, file: { driver: "file", filename: path.resolve(file) } })}`;
}

function readBuffer(file: string): ArrayBuffer {
  const b = fs.readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

export interface ReportSettings {
  delayMs: number;
  bandwidthMBps: number;
  chunkMiB: number;
  memoryMiB: number;
  images: { rawBytes: number; qcow2Bytes: number };
  /** Where the PC ran (default Node). */
  where?: "Node" | "Chromium";
}

/** The table: per case, medians with min–max over its repetitions; then the per-repetition ratios and targets. */
export function formatRemoteBootReport(names: readonly CaseName[], results: readonly CaseResult[], reps: number, s: ReportSettings): string {
  const byCase = (name: CaseName) => Array.from({ length: reps }, (_, rep) => results.find((r) => r.case === name && r.rep === rep));
  const toPrompt = (r: CaseResult | undefined) => (r?.run ? r.run.prepMs + r.run.boot.ms : undefined);
  const sec = (x: number) => (x / 1000).toFixed(1);
  const mib = (x: number) => (x / MiB).toFixed(1);
  const lines: string[] = [];
  lines.push(
    `demo OS to the shell prompt in ${s.where ?? "Node"}, ${s.memoryMiB} MiB RAM, IDE; server: ${s.delayMs} ms before each answer, ${s.bandwidthMBps} MB/s shared link; ` +
      `os.img ${mib(s.images.rawBytes)} MiB raw, os.qcow2 ${mib(s.images.qcow2Bytes)} MiB compressed; v86 fixed_chunk_size ${s.chunkMiB} MiB; ` +
      `${reps} repetitions interleaved; median (min–max) over repetitions`,
  );
  lines.push(
    s.where === "Chromium"
      ? "the page's clock: to prompt: start of the page's boot (before the probe and the overlay, or before v86 is built) → prompt (prep + boot); prep: → v86 loaded; requests, MiB: the server's counts; refcow-local: os.qcow2 in OPFS, booted as it is"
      : "to prompt: start of the run → prompt (prep + boot); prep: → v86 loaded (overlay made, chain opened, emulator built); requests, MiB: the server's counts; boot CPU: the process's user + system time, all threads; peak RSS: VmHWM of the run's process",
  );
  lines.push("");
  const rows: string[][] = [["case", "to prompt s", "prep s", "boot s", "boot CPU s", "boot Ginstr", "requests", "MiB fetched", "peak RSS MiB", "overlay check"]];
  for (const name of names) {
    const rs = byCase(name);
    const ok = rs.filter((r): r is CaseResult & { run: RemoteBootRun } => r?.run !== undefined);
    const failures = rs.filter((r) => r?.error).map((r) => `rep ${r!.rep + 1}: ${r!.error}`);
    if (ok.length === 0) {
      rows.push([name, `failed: ${failures.join("; ") || "not run"}`]);
      continue;
    }
    const checks = [...new Set(ok.map((r) => r.check).filter((c): c is string => c !== undefined))];
    rows.push([
      name + (failures.length ? ` (${failures.length} failed: ${failures.join("; ")})` : ""),
      medianCell(ok.map(toPrompt), sec),
      medianCell(ok.map((r) => r.run.prepMs), sec),
      medianCell(ok.map((r) => r.run.boot.ms), sec),
      medianCell(ok.map((r) => r.run.boot.cpuMs), sec),
      medianCell(ok.map((r) => r.run.boot.instructions), (x) => (x / 1e9).toFixed(2)),
      medianCell(ok.map((r) => r.requests), (x) => x.toFixed(0)),
      medianCell(ok.map((r) => r.bytes), mib),
      medianCell(ok.map((r) => r.run.peakRssBytes), (x) => (x / MiB).toFixed(0)),
      checks.length ? checks.join("; ") : "n/a (v86 keeps writes in memory)",
    ]);
  }
  lines.push(...textTable(rows));
  const xhr = byCase("v86-xhr").filter((r) => r?.run?.xhr);
  if (xhr.length) lines.push("", `v86's XHR loader's own counts (cross-check): ${xhr.map((r) => `${r!.run!.xhr!.requests} requests, ${mib(r!.run!.xhr!.bytes)} MiB`).join("; ")}`);

  const has = (n: CaseName) => names.includes(n);
  const time = (n: CaseName) => byCase(n).map(toPrompt);
  const bytes = (n: CaseName) => byCase(n).map((r) => (r?.run ? r.bytes : undefined));
  lines.push("", "ratios (per repetition, then their median and min–max):");
  if (has("v86-xhr")) {
    lines.push(ratioLine("  time to prompt, refcow-url-cold / v86-xhr", time("refcow-url-cold"), time("v86-xhr"), { op: "<=", value: 0.7 }));
    lines.push(ratioLine("  bytes fetched, refcow-url-cold / v86-xhr", bytes("refcow-url-cold"), bytes("v86-xhr"), { op: "<=", value: 0.5 }));
    lines.push(ratioLine("  requests, refcow-url-cold / v86-xhr", byCase("refcow-url-cold").map((r) => r?.requests), byCase("v86-xhr").map((r) => r?.requests)));
  }
  if (has("refcow-local")) {
    lines.push(ratioLine("  time to prompt, refcow-url-warm / refcow-local", time("refcow-url-warm"), time("refcow-local"), { op: "<=", value: 1.2 }));
    lines.push(ratioLine("  time to prompt, refcow-url-cold / refcow-local", time("refcow-url-cold"), time("refcow-local")));
  }
  if (has("refcow-url-warm")) lines.push(ratioLine("  bytes fetched, refcow-url-warm / refcow-url-cold", bytes("refcow-url-warm"), bytes("refcow-url-cold")));
  const rss = (n: CaseName) => byCase(n).map((r) => r?.run?.peakRssBytes);
  if (has("refcow-url-cold-16g")) lines.push(ratioLine(`  peak RSS, refcow-url-cold ${BIG_GIB} GiB / 1 GiB disk`, rss("refcow-url-cold-16g"), rss("refcow-url-cold"), { op: "<=", value: 1.1 }));
  if (has("v86-xhr-16g")) lines.push(ratioLine(`  peak RSS, v86-xhr ${BIG_GIB} GiB / 1 GiB disk`, rss("v86-xhr-16g"), rss("v86-xhr")));
  return lines.join("\n") + "\n";
}
