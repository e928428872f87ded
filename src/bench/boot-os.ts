/**
 * The demo OS from its own disk, refcow against v86's own disk buffers: boot to the shell prompt, then
 * guest-visible disk throughput (busybox dd of 64 MiB with O_DIRECT, written then read back), and the
 * process's peak RSS; the run itself is boot-os-run.ts.
 *
 *     npm run build && node dist/bench/boot-os.js [--reps 3] [--memory 128] [--cases a,b,...] [--json FILE]
 *     node dist/bench/boot-os.js --browser [--reps 3] ...   the same in headless Chromium (boot-os-browser.ts)
 *
 * (`npm run bench:boot-os` runs it with the defaults.)
 *
 * Cases (--cases; default all):
 *   refcow-ide       qcow2 (`refcow os-image -f qcow2`, 1 GiB + 64 MiB), served by refcow, IDE
 *   refcow-ide-uncached  the same with the IDE drive's caches off: write cache and read-ahead (what they change)
 *   refcow-virtio    the same qcow2 through refcow's virtio-blk device
 *   refcow-virtio-uncached  the same with virtio-blk's caches off
 *   v86-buffer       the same disk raw (`refcow os-image -f raw`), in an ArrayBuffer v86 serves, IDE
 *   v86-file         the same raw file as v86's async file buffer, IDE
 *   refcow-ide-tierup, refcow-virtio-tierup, v86-buffer-tierup  those cases with V8's default WebAssembly compilers
 *                    (REFCOW_WASM_TIERUP=1: TurboFan on background threads; src/v86/wasm-tiering.ts) where
 *                    every other case compiles with Liftoff only
 *   refcow-ide-4g    refcow-ide on a 4 GiB virtual image of the same contents (for the peak RSS)
 *   refcow-ide-16g   the same at 16 GiB
 *
 * With --browser the PC runs in Chromium's page (os.html), the images in OPFS: refcow-ide and refcow-virtio
 * served by refcow's Web Worker, v86-file as v86's AsyncFileBuffer over the File, v86-buffer as its
 * SyncFileBuffer (the File read into memory first); v86's instruction counts as the page reads them; no
 * peak RSS (so no -4g/-16g cases), no CPU time, no emulator-thread breakdown: the page has none of them.
 *
 * Like for like: each run is a fresh Node process (`--run`, below) on a fresh copy of its image; the same
 * v86 build, firmware, RAM and guest commands; the dd copy goes past the partitions (at 1 GiB), written
 * first (conv=fsync: one FLUSH CACHE at its end) and then read back, so both read the same written blocks.
 * The cases run interleaved: every repetition runs each case once, in an order rotated by one per repetition.
 *
 * Checks that did not produce the figures: after every refcow run the image passes `qemu-img check`, and
 * `qemu-img map` shows the 64 MiB the guest wrote allocated at 1 GiB; dd's own report (the guest's clock)
 * is printed beside the host's wall time. A run that fails is a row with its reason.
 *
 * Last, where the emulator thread's time went during each dd (src/v86/emulator-clock.ts, installed at the
 * prompt), in ms per MiB by category: guest code, device emulation, the ring hand-off, polls, completions,
 * interrupts, and halted time waiting for the disk or idle.
 */
import { execFileSync } from "node:child_process";
import { describeWasmTiering } from "../v86/wasm-tiering.js";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ratioByRounds, spread } from "../stats/latency.js";
import { ensureGuestImage, v86WasmPath } from "../guest/guest-image.js";
import { ensureOsImage, writeOsImage } from "../guest/os-image.js";
import { BenchUsageError, integerOption, listOption, progress, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";
import { runJsonChild } from "./child-run.js";
import { medianCell, ratioLine, textTable } from "./rep-table.js";
import { OS_BENCH_SOURCES, runOsBench, type OsBenchRun, type OsBenchSource } from "./boot-os-run.js";
import { runOsBenchInBrowser } from "./boot-os-browser.js";
import { EMULATOR_TIME_CATEGORIES, type EmulatorTime } from "../v86/emulator-clock.js";

const MiB = 2 ** 20;
const DD_OFFSET_MIB = 1024;
const DD_MIB = 64;

interface BenchCase {
  name: string;
  source: OsBenchSource;
  format: "qcow2" | "raw";
  sizeMiB: number;
  /** The run's process keeps V8's default WebAssembly compilers (wasm-tiering.ts). */
  tierUp?: boolean;
}

export const OS_BENCH_CASES: readonly BenchCase[] = [
  { name: "refcow-ide", source: "refcow-ide", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "refcow-ide-uncached", source: "refcow-ide-uncached", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "refcow-virtio", source: "refcow-virtio", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "refcow-virtio-uncached", source: "refcow-virtio-uncached", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "v86-buffer", source: "v86-buffer", format: "raw", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "v86-file", source: "v86-file", format: "raw", sizeMiB: DD_OFFSET_MIB + DD_MIB },
  { name: "refcow-ide-tierup", source: "refcow-ide", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB, tierUp: true },
  { name: "refcow-virtio-tierup", source: "refcow-virtio", format: "qcow2", sizeMiB: DD_OFFSET_MIB + DD_MIB, tierUp: true },
  { name: "v86-buffer-tierup", source: "v86-buffer", format: "raw", sizeMiB: DD_OFFSET_MIB + DD_MIB, tierUp: true },
  { name: "refcow-ide-4g", source: "refcow-ide", format: "qcow2", sizeMiB: 4096 },
  { name: "refcow-ide-16g", source: "refcow-ide", format: "qcow2", sizeMiB: 16384 },
];

/** The cases --browser runs (the RSS cases have no meaning there). */
const BROWSER_CASES = ["refcow-ide", "refcow-virtio", "v86-file", "v86-buffer"];

type CaseResult = { case: string; rep: number; run?: OsBenchRun; check?: string; error?: string };

const USAGE = `usage: node dist/bench/boot-os.js [options]

Boots the demo OS (refcow os-image) from its disk to the shell prompt and copies 64 MiB with O_DIRECT
(busybox dd, written then read back), served by refcow (IDE, virtio-blk) and by v86's own buffers (IDE);
prints medians with min-max, per-repetition ratios, instruction counts and the peak RSS.

  --reps N          repetitions, interleaved (default 3)
  --memory MiB      guest RAM (default 128)
  --cases a,b       ${OS_BENCH_CASES.map((c) => c.name).join(", ")} (default all)
  --browser         in headless Chromium (os.html, images in OPFS): cases ${BROWSER_CASES.join(", ")}
                    (default all four); /usr/bin/chromium is needed
  --timeout S       with --browser: give up on a boot or a copy after S seconds (default 600)
  --dir DIR         where the images go (default: a temporary folder, removed at the end)
  --json FILE       every run as JSON too
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "boot-os bench",
    usage: USAGE,
    options: {
      reps: { type: "string", default: "3" },
      memory: { type: "string", default: "128" },
      cases: { type: "string" },
      dir: { type: "string" },
      json: { type: "string" },
      browser: { type: "boolean" },
      timeout: { type: "string", default: "600" },
      // One run in this process (the parent starts these): SOURCE:IMAGE; prints the run as one JSON line.
      run: { type: "string" },
    },
  },
  async (values) => {
    const memoryMiB = integerOption("memory", values.memory, 16)!;
    const guest = await ensureGuestImage({ onProgress: progress });
    const firmware = { bios: readBuffer(guest.bios), vgaBios: readBuffer(guest.vgaBios) };
    if (values.run !== undefined) {
      const colon = values.run.indexOf(":");
      const source = values.run.slice(0, colon) as OsBenchSource;
      if (!OS_BENCH_SOURCES.includes(source)) throw new BenchUsageError(`--run takes SOURCE:IMAGE with a source among ${OS_BENCH_SOURCES.join(", ")}`);
      const run = await runOsBench({ source, image: values.run.slice(colon + 1), memoryMiB, firmware, wasmPath: v86WasmPath(), ddOffsetMiB: DD_OFFSET_MIB, ddMiB: DD_MIB, onProgress: progress });
      process.stdout.write(JSON.stringify(run) + "\n");
      return;
    }
    const names = listOption(values.cases) ?? (values.browser ? BROWSER_CASES : OS_BENCH_CASES.map((c) => c.name));
    const cases = names.map((n) => OS_BENCH_CASES.find((c) => c.name === n) ?? unknownCase(n));
    const notInBrowser = names.filter((n) => !BROWSER_CASES.includes(n));
    if (values.browser && notInBrowser.length) throw new BenchUsageError(`--browser runs ${BROWSER_CASES.join(", ")}, not ${notInBrowser.join(", ")}`);
    const reps = integerOption("reps", values.reps)!;
    const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "refcow-boot-os-bench-"));
    fs.mkdirSync(dir, { recursive: true });
    try {
      const templates = await prepareTemplates(dir, cases);
      if (values.browser) {
        const results = await runOsBenchInBrowser({
          cases: cases.map((c) => ({ name: c.name, source: c.source, template: templates.get(templateKey(c))! })),
          reps,
          dir,
          memoryMiB,
          ddOffsetMiB: DD_OFFSET_MIB,
          ddMiB: DD_MIB,
          checkImage: imageVerdict,
          timeoutMs: integerOption("timeout", values.timeout)! * 1000,
        });
        if (values.json) fs.writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
        process.stdout.write(formatReport(names, results, reps, memoryMiB, "Chromium"));
        return;
      }
      const results: CaseResult[] = [];
      for (let rep = 0; rep < reps; rep++) {
        for (let i = 0; i < cases.length; i++) {
          const c = cases[(i + rep) % cases.length]!;
          progress(`repetition ${rep + 1}/${reps}: ${c.name} (load ${os.loadavg()[0]!.toFixed(2)})`);
          results.push(await runCase(c, rep, templates.get(templateKey(c))!, dir, memoryMiB));
        }
      }
      if (values.json) fs.writeFileSync(values.json, JSON.stringify(results, null, 2) + "\n");
      process.stdout.write(formatReport(cases.map((c) => c.name), results, reps, memoryMiB));
    } finally {
      if (!values.dir) fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

function unknownCase(name: string): never {
  throw new BenchUsageError(`unknown case '${name}' (cases: ${OS_BENCH_CASES.map((c) => c.name).join(", ")})`);
}

const templateKey = (c: BenchCase) => `${c.format}-${c.sizeMiB}`;

/** One image per format and size, written from the demo OS disk by `refcow os-image`'s code. */
async function prepareTemplates(dir: string, cases: readonly BenchCase[]): Promise<Map<string, string>> {
  const osDisk = await ensureOsImage({ onProgress: progress });
  const out = new Map<string, string>();
  for (const c of cases) {
    const key = templateKey(c);
    if (out.has(key)) continue;
    const file = path.join(dir, `template-${key}.${c.format === "qcow2" ? "qcow2" : "img"}`);
    if (!fs.existsSync(file)) {
      progress(`writing ${file}`);
      writeOsImage(osDisk.image, file, { format: c.format, size: c.sizeMiB * MiB });
    }
    out.set(key, file);
  }
  return out;
}

/** One run in a child process on a fresh copy of the image, then the checks. */
async function runCase(c: BenchCase, rep: number, template: string, dir: string, memoryMiB: number): Promise<CaseResult> {
  // v86's sources never write to the file (their writes stay in memory): they read the template itself.
  const image = c.format === "qcow2" ? path.join(dir, `run-${c.name}.qcow2`) : template;
  if (image !== template) fs.copyFileSync(template, image);
  try {
    const env = { ...process.env, REFCOW_WASM_TIERUP: c.tierUp ? "1" : "" };
    const run = await runJsonChild<OsBenchRun>(fileURLToPath(import.meta.url), ["--run", `${c.source}:${image}`, "--memory", String(memoryMiB)], env);
    const check = c.format === "qcow2" ? imageVerdict(image) : undefined;
    return { case: c.name, rep, run, check };
  } catch (e) {
    const error = (e as Error).message.split("\n").slice(0, 3).join(" / ");
    progress(`  ${c.name} failed: ${error}`);
    return { case: c.name, rep, error };
  } finally {
    if (image !== template) fs.rmSync(image, { force: true });
  }
}

/** qemu-img check's verdict on a qcow2 image after a run, and whether the guest's copy is allocated (qemu-img map). */
function imageVerdict(image: string): string {
  const check = qemuCheckVerdict(image);
  const written = allocatedBytes(image, DD_OFFSET_MIB * MiB, DD_MIB * MiB);
  return written === DD_MIB * MiB ? check : `${check}; qemu-img map: ${written} of the ${DD_MIB * MiB} bytes the guest wrote are allocated`;
}

/** Bytes of [offset, offset+length) that qemu-img map reports as data. */
function allocatedBytes(image: string, offset: number, length: number): number {
  const map = JSON.parse(execFileSync("qemu-img", ["map", "--output=json", image]).toString()) as Array<{ start: number; length: number; data: boolean }>;
  let sum = 0;
  for (const e of map) {
    if (!e.data) continue;
    const lo = Math.max(e.start, offset);
    const hi = Math.min(e.start + e.length, offset + length);
    if (hi > lo) sum += hi - lo;
  }
  return sum;
}

function readBuffer(file: string): ArrayBuffer {
  const b = fs.readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** The table: per case, medians with min–max over its repetitions; then the per-repetition ratios. */
export function formatReport(names: readonly string[], results: readonly CaseResult[], reps: number, memoryMiB: number, where: "Node" | "Chromium" = "Node"): string {
  const byCase = (name: string) => Array.from({ length: reps }, (_, rep) => results.find((r) => r.case === name && r.rep === rep));
  const runsOf = (name: string) => byCase(name).map((r) => r?.run);
  const mibps = (step: { ms: number }) => DD_MIB / (step.ms / 1000);
  const guestMibps = (step: { guestSeconds?: number; bytes?: number }) => (step.guestSeconds && step.bytes ? step.bytes / MiB / step.guestSeconds : undefined);
  const med = medianCell;
  const sec = (x: number) => (x / 1000).toFixed(1);
  const rate = (x: number) => x.toFixed(1);
  const ginstr = (x: number) => (x / 1e9).toFixed(2);
  const lines: string[] = [];
  lines.push(`demo OS in ${where}, ${memoryMiB} MiB RAM, dd ${DD_MIB} MiB bs=1M O_DIRECT at ${DD_OFFSET_MIB} MiB; ${reps} repetitions interleaved; median (min–max) over repetitions`);
  lines.push(
    where === "Node"
      ? "prep: start → v86 loaded (image opened or read into memory, emulator built); boot: v86 loaded → shell prompt; MiB/s: host wall time, (dd): the guest's uptime; CPU: the process's user + system time, all threads"
      : "the page's clock: prep: Boot → v86 loaded (image opened in the worker, or the File read into memory; emulator built); boot: v86 loaded → shell prompt; MiB/s: keys typed → dd's end marker, (dd): the guest's uptime",
  );
  for (const w of new Set(results.flatMap((r) => (r.run?.wasm ? [r.run.wasm] : [])))) lines.push(describeWasmTiering(w));
  lines.push("");
  const header = ["case", "prep s", "boot s", "boot CPU s", "boot Ginstr", "write MiB/s", "write MiB/s (dd)", "write CPU ms", "write Ginstr", "read MiB/s", "read MiB/s (dd)", "read CPU ms", "read Ginstr", "peak RSS MiB", "image check"];
  const rows: string[][] = [header];
  for (const name of names) {
    const rs = byCase(name);
    const runs = rs.map((r) => r?.run).filter((r): r is OsBenchRun => r !== undefined);
    const failures = rs.filter((r) => r?.error).map((r) => `rep ${r!.rep + 1}: ${r!.error}`);
    if (runs.length === 0) {
      rows.push([name, `failed: ${failures.join("; ") || "not run"}`]);
      continue;
    }
    const checks = [...new Set(rs.map((r) => r?.check).filter((c): c is string => c !== undefined))];
    rows.push([
      name + (failures.length ? ` (${failures.length} failed: ${failures.join("; ")})` : ""),
      med(runs.map((r) => r.prepMs), sec),
      med(runs.map((r) => r.boot.ms), sec),
      med(runs.map((r) => r.boot.cpuMs), sec),
      med(runs.map((r) => r.boot.instructions), ginstr),
      med(runs.map((r) => mibps(r.write)), rate),
      med(runs.map((r) => guestMibps(r.write)), rate),
      med(runs.map((r) => r.write.cpuMs), (x) => x.toFixed(0)),
      med(runs.map((r) => r.write.instructions), ginstr),
      med(runs.map((r) => mibps(r.read)), rate),
      med(runs.map((r) => guestMibps(r.read)), rate),
      med(runs.map((r) => r.read.cpuMs), (x) => x.toFixed(0)),
      med(runs.map((r) => r.read.instructions), ginstr),
      med(runs.map((r) => r.peakRssBytes), (x) => (x / MiB).toFixed(0)),
      checks.length ? checks.join("; ") : "n/a (raw in memory)",
    ]);
  }
  lines.push(...textTable(rows));

  // Per-repetition ratios, each against the same repetition's figure.
  const has = (n: string) => names.includes(n);
  const bootMs = (n: string) => runsOf(n).map((r) => r?.boot.ms);
  const totalMs = (n: string) => runsOf(n).map((r) => (r ? r.prepMs + r.boot.ms : undefined));
  const wRate = (n: string) => runsOf(n).map((r) => (r ? mibps(r.write) : undefined));
  const rRate = (n: string) => runsOf(n).map((r) => (r ? mibps(r.read) : undefined));
  lines.push("", "ratios (per repetition, then their median and min–max):");
  // The issue's baseline: v86's ArrayBuffer in Node, its async file buffer in the browser.
  const targetBase = where === "Node" ? "v86-buffer" : "v86-file";
  for (const base of ["v86-buffer", "v86-file"].filter(has)) {
    if (has("refcow-ide")) {
      lines.push(ratioLine(`  boot time, refcow-ide / ${base}`, bootMs("refcow-ide"), bootMs(base), base === targetBase ? { op: "<=", value: 1.1 } : undefined));
      lines.push(ratioLine(`  prep + boot time, refcow-ide / ${base}`, totalMs("refcow-ide"), totalMs(base)));
      lines.push(ratioLine(`  write throughput, refcow-ide / ${base}`, wRate("refcow-ide"), wRate(base), base === targetBase ? { op: ">=", value: 0.9 } : undefined));
      lines.push(ratioLine(`  read throughput, refcow-ide / ${base}`, rRate("refcow-ide"), rRate(base), base === targetBase ? { op: ">=", value: 0.9 } : undefined));
    }
    if (has("refcow-virtio")) lines.push(ratioLine(`  boot time, refcow-virtio / ${base}`, bootMs("refcow-virtio"), bootMs(base)));
  }
  if (has("refcow-ide") && has("refcow-ide-uncached")) {
    lines.push(ratioLine("  write throughput, refcow-ide / refcow-ide-uncached (the devices' caches)", wRate("refcow-ide"), wRate("refcow-ide-uncached")));
    lines.push(ratioLine("  read throughput, refcow-ide / refcow-ide-uncached (the devices' caches)", rRate("refcow-ide"), rRate("refcow-ide-uncached")));
  }
  if (has("refcow-virtio") && has("refcow-virtio-uncached")) {
    lines.push(ratioLine("  write throughput, refcow-virtio / refcow-virtio-uncached (the devices' caches)", wRate("refcow-virtio"), wRate("refcow-virtio-uncached")));
    lines.push(ratioLine("  read throughput, refcow-virtio / refcow-virtio-uncached (the devices' caches)", rRate("refcow-virtio"), rRate("refcow-virtio-uncached")));
  }
  if (has("refcow-virtio") && has("refcow-ide")) {
    lines.push(ratioLine("  write throughput, refcow-virtio / refcow-ide", wRate("refcow-virtio"), wRate("refcow-ide"), { op: ">=", value: 1 }));
    lines.push(ratioLine("  read throughput, refcow-virtio / refcow-ide", rRate("refcow-virtio"), rRate("refcow-ide"), { op: ">=", value: 1 }));
  }
  // The WebAssembly compiler choice (wasm-tiering.ts): Liftoff only (every other case) against V8's default.
  for (const base of ["refcow-ide", "refcow-virtio", "v86-buffer"].filter((n) => has(n) && has(`${n}-tierup`))) {
    const t = `${base}-tierup`;
    lines.push(ratioLine(`  boot time, ${base} / ${t} (ours / V8's default)`, bootMs(base), bootMs(t)));
    lines.push(ratioLine(`  write throughput, ${base} / ${t}`, wRate(base), wRate(t)));
    lines.push(ratioLine(`  read throughput, ${base} / ${t}`, rRate(base), rRate(t)));
  }
  if (has("refcow-ide-tierup") && has("v86-buffer-tierup")) {
    lines.push(ratioLine("  boot time, refcow-ide-tierup / v86-buffer-tierup (both V8's default)", bootMs("refcow-ide-tierup"), bootMs("v86-buffer-tierup")));
    lines.push(ratioLine("  write throughput, refcow-ide-tierup / v86-buffer-tierup", wRate("refcow-ide-tierup"), wRate("v86-buffer-tierup")));
    lines.push(ratioLine("  read throughput, refcow-ide-tierup / v86-buffer-tierup", rRate("refcow-ide-tierup"), rRate("v86-buffer-tierup")));
  }
  if (has("refcow-ide-4g") && has("refcow-ide-16g")) {
    const rss = (n: string) => runsOf(n).map((r) => r?.peakRssBytes);
    const s = ratioByRounds(rss("refcow-ide-16g"), rss("refcow-ide-4g"));
    const line = ratioLine("  peak RSS, 16 GiB / 4 GiB virtual", rss("refcow-ide-16g"), rss("refcow-ide-4g"));
    lines.push(line + (s.runs ? (s.max <= 1.1 && s.min >= 1 / 1.1 ? "  target within 10%: met" : "  target within 10%: MISSED") : ""));
  }
  lines.push("", ...breakdownLines(names, runsOf));
  return lines.join("\n") + "\n";
}

/** Where the emulator thread's time went in each dd (EmulatorClock's categories), ms per MiB, median over the repetitions. */
function breakdownLines(names: readonly string[], runsOf: (name: string) => Array<OsBenchRun | undefined>): string[] {
  const rows: string[][] = [["case", "step", "wall", ...EMULATOR_TIME_CATEGORIES, "halts/MiB", "irqs/MiB"]];
  for (const name of names) {
    const runs = runsOf(name).filter((r): r is OsBenchRun => r !== undefined);
    for (const step of ["write", "read"] as const) {
      const times = runs.map((r) => r[step].emulatorTime).filter((t): t is EmulatorTime => t !== undefined);
      if (times.length === 0) continue;
      const per = (pick: (t: EmulatorTime) => number) => (spread(times.map(pick)).median / DD_MIB).toFixed(2);
      rows.push([name, step, per((t) => t.wallMs), ...EMULATOR_TIME_CATEGORIES.map((c) => per((t) => t.ms[c])), per((t) => t.halts), per((t) => t.irqs)]);
    }
  }
  if (rows.length === 1) return [];
  return ["emulator thread during each dd, ms per MiB by category (src/v86/emulator-clock.ts; median over the repetitions; halts and irqs: counts per MiB):", ...textTable(rows)];
}

