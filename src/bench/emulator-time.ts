/**
 * Where the emulator's time goes, per guest write: the rand4k in-place phase (4 KiB O_DIRECT writes with the
 * guest's refcow-io, after the workloads' warm-up) through
 *
 *   ide/1      v86's IDE disk, one request at a time
 *   virtio/1   refcow's virtio-blk device, one request at a time
 *   virtio/16  refcow's virtio-blk device, 16 in flight (io_uring)
 *
 * on the zero-latency floor (an in-memory disk completing at once: no engine, no ring, no worker; the same
 * guest program and warm-up, guest-cuts.ts measureFloor) and on refcow (eager, worker-served) in each cache
 * mode asked (writethrough on virtio only: its target compares depth 16 with depth 1). Each repetition runs every source and case once, interleaved, each on a fresh guest and image.
 *
 * The emulator thread's wall time over the phase is charged to exclusive categories (EmulatorClock,
 * src/v86/emulator-clock.ts: guest code, device emulation, ring submit, poll, completion, interrupt, waiting
 * for the disk while halted, halted idle, between slices) and divided by the phase's writes: µs per write,
 * the median over the repetitions. Beside them: the guest's IOPS (its own clock), v86's instructions per
 * write, and for refcow the engine's median service time and the ring's hand-off (the DiskClient's time less
 * the engine's, median). Then the issue's targets with per-repetition ratios:
 *
 *   virtio/16 writeback IOPS ≥ 0.7 × the floor's virtio/16
 *   virtio/16 writethrough IOPS ≥ 3 × virtio/1 writethrough
 *   ide/1 writeback: app median − floor's app median ≤ engine median + 50 µs
 *
 *     npm run build && node dist/bench/emulator-time.js [--reps N] [--clusters N] [--cache a,b]
 *                                                       [--cases ide/1,virtio/1,virtio/16] [--sources floor,refcow] [--json FILE]
 *                                                       [--compare-bin OTHER/dist]
 *
 * Every refcow image must pass qemu-img check after its run, or the bench stops there.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { spread } from "../stats/latency.js";
import { ensureGuestImage } from "../guest/guest-image.js";
import { runGuestWorkload } from "../guest/run-workload.js";
import { EMULATOR_TIME_CATEGORIES, type EmulatorTime } from "../v86/emulator-clock.js";
import { DISK_CONFIGS, type DiskConfig } from "./virtio.js";
import { measureFloor } from "./guest-cuts.js";
import { buildsToCompare, formatPerRepRatios, formatSpread, orderFor, type Build } from "./compare-bin.js";
import { BenchUsageError, listOption, integerOption, progress, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";
import { chooseWasmTiering, describeWasmTiering, type WasmTiering } from "../v86/wasm-tiering.js";

export interface EmulatorTimeRow {
  source: "floor" | "refcow";
  case: string;
  cache: CacheMode | "-";
  rep: number;
  writes: number;
  iops: number;
  appMedianUs: number;
  engineMedianUs?: number;
  /** The DiskClient's time less the engine's, median (µs). */
  ringMedianUs?: number;
  instructionsPerWrite: number;
  time: EmulatorTime;
  load1: number;
  /** With --compare-bin: which build ran it ("this" or "other"; the floor runs on this build only). */
  build?: string;
  /** How the process compiled WebAssembly (wasm-tiering.ts): the same for every row of a run. */
  wasm?: WasmTiering;
}

export interface EmulatorTimeOptions {
  reps?: number;
  clusters?: number;
  caches?: CacheMode[];
  cases?: string[];
  sources?: ("floor" | "refcow")[];
  /** This build and another (compare-bin.ts): every refcow row runs on each, alternating which goes first. */
  builds?: Build[];
  onProgress?: (m: string) => void;
}

/**
 * The floor's pass writes as many cluster starts as the refcow phase, shuffled, with the same warm-up and the
 * same closing sync (measureFloor's `writes`): the categories cover the same program run, its start and its
 * sync included, spread over the same number of writes. (A pass of 256 writes against a phase of 2048 charged
 * the program's start to 8× fewer writes: the floor's guest time per write looked 4× refcow's at the same
 * instruction count.)
 */
async function floorRow(c: DiskConfig, rep: number, writes: number, onProgress?: (m: string) => void): Promise<EmulatorTimeRow> {
  const [p] = await measureFloor({ passes: 1, disk: c.disk, iodepth: c.iodepth, warmUp: true, emulatorTime: true, writes, onProgress });
  if (!p || !p.emulatorTime || p.iops === undefined) throw new Error(`floor ${c.name}: no pass measured`);
  return { source: "floor", case: c.name, cache: "-", rep, writes: p.writes, iops: p.iops, appMedianUs: p.appMedianUs, instructionsPerWrite: p.instructionsPerWrite, time: p.emulatorTime, load1: p.load1 };
}

async function refcowRow(c: DiskConfig, cache: CacheMode, rep: number, dir: string, clusters: number, build: Build | undefined, onProgress?: (m: string) => void): Promise<EmulatorTimeRow> {
  const image = path.join(dir, `${c.name.replace("/", "-")}-${cache}-${rep}${build ? `-${build.label}` : ""}.qcow2`);
  const run = build ? (await build.load<{ runGuestWorkload: typeof runGuestWorkload }>("guest/run-workload.js")).runGuestWorkload : runGuestWorkload;
  const r = await run({ image, scheme: "eager", cache, workload: "rand4k", clusters, disk: c.disk, iodepth: c.iodepth, snapshotAt: "none", emulatorTime: true, onProgress });
  const verdict = qemuCheckVerdict(image);
  fs.rmSync(image, { force: true });
  if (verdict !== "clean") throw new Error(`${c.name} ${cache} rep ${rep}: qemu-img check: ${verdict}`);
  const p = r.phases["in-place"];
  if (!p?.emulator_time || p.guest_iops === undefined || !p.app_us) throw new Error(`${c.name} ${cache} rep ${rep}: the in-place phase has no emulator time or guest figures`);
  const engine = p.engine_us?.median;
  return {
    source: "refcow",
    case: c.name,
    cache,
    rep,
    writes: p.writes.count,
    iops: p.guest_iops,
    appMedianUs: p.app_us.median,
    ...(engine !== undefined ? { engineMedianUs: engine } : {}),
    ...(p.ring_us && engine !== undefined ? { ringMedianUs: p.ring_us.median - engine } : {}),
    instructionsPerWrite: (p.guest_instructions ?? 0) / Math.max(1, p.writes.count),
    time: p.emulator_time,
    load1: os.loadavg()[0]!,
    ...(build ? { build: build.label } : {}),
  };
}

export async function runEmulatorTimeBench(o: EmulatorTimeOptions = {}): Promise<EmulatorTimeRow[]> {
  const reps = o.reps ?? 3;
  // The floor and refcow share this process, so one choice covers both; made before v86 compiles anything.
  const wasm = chooseWasmTiering();
  const caches = o.caches ?? ["writeback", "writethrough"];
  const sources = o.sources ?? ["floor", "refcow"];
  const cases = DISK_CONFIGS.filter((c) => !o.cases || o.cases.includes(c.name));
  if (o.cases) for (const n of o.cases) if (!DISK_CONFIGS.some((c) => c.name === n)) throw new BenchUsageError(`--cases takes ${DISK_CONFIGS.map((c) => c.name).join(", ")}, not '${n}'`);
  await ensureGuestImage({ onProgress: o.onProgress });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-emulator-time-"));
  const rows: EmulatorTimeRow[] = [];
  try {
    for (let rep = 1; rep <= reps; rep++) {
      for (const c of cases) {
        if (sources.includes("floor")) {
          o.onProgress?.(`[emulator-time] rep ${rep}/${reps} floor ${c.name}`);
          rows.push({ ...(await floorRow(c, rep, o.clusters ?? 2048, o.onProgress)), wasm });
        }
        if (sources.includes("refcow")) {
          // Writethrough only where a target needs it (virtio/16 against virtio/1).
          for (const cache of caches.filter((m) => m === "writeback" || c.disk === "virtio")) {
            for (const build of o.builds ? orderFor(o.builds, rep) : [undefined]) {
              o.onProgress?.(`[emulator-time] rep ${rep}/${reps} refcow ${c.name} ${cache}${build ? ` (${build.label} build)` : ""}`);
              rows.push({ ...(await refcowRow(c, cache, rep, dir, o.clusters ?? 2048, build, o.onProgress)), wasm });
            }
          }
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

const key = (r: Pick<EmulatorTimeRow, "source" | "case" | "cache" | "build">) => `${r.source} ${r.case} ${r.cache}${r.build ? ` ${r.build}` : ""}`;

function groups(rows: readonly EmulatorTimeRow[]): Map<string, EmulatorTimeRow[]> {
  const g = new Map<string, EmulatorTimeRow[]>();
  for (const r of rows) g.set(key(r), [...(g.get(key(r)) ?? []), r]);
  return g;
}

/** The per-write breakdown: µs per write by category, median over the repetitions. */
export function formatBreakdown(rows: readonly EmulatorTimeRow[]): string {
  const med = (v: number[]) => (v.length ? spread(v).median : NaN);
  const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const head = ["source case cache", "reps", "IOPS", "1/IOPS", "wall", ...EMULATOR_TIME_CATEGORIES, "engine", "ring", "instr/write", "halts/w", "irqs/w", "load"];
  let out = `| ${head.join(" | ")} |\n|${head.map(() => "---").join("|")}|\n`;
  for (const [k, g] of groups(rows)) {
    const per = (pick: (t: EmulatorTime) => number) => med(g.map((r) => (pick(r.time) * 1000) / r.writes));
    const cells = [
      k,
      String(g.length),
      med(g.map((r) => r.iops)).toFixed(0),
      f(med(g.map((r) => 1e6 / r.iops))),
      f(per((t) => t.wallMs)),
      ...EMULATOR_TIME_CATEGORIES.map((c) => f(per((t) => t.ms[c]))),
      f(med(g.flatMap((r) => (r.engineMedianUs === undefined ? [] : [r.engineMedianUs])))),
      f(med(g.flatMap((r) => (r.ringMedianUs === undefined ? [] : [r.ringMedianUs])))),
      med(g.map((r) => r.instructionsPerWrite)).toFixed(0),
      med(g.map((r) => r.time.halts / r.writes)).toFixed(2),
      med(g.map((r) => r.time.irqs / r.writes)).toFixed(2),
      `${Math.min(...g.map((r) => r.load1)).toFixed(1)}–${Math.max(...g.map((r) => r.load1)).toFixed(1)}`,
    ];
    out += `| ${cells.join(" | ")} |\n`;
  }
  return (
    out +
    "\nµs per write (the phase's emulator-thread wall time by category ÷ its writes; median over the repetitions). " +
    "1/IOPS: µs per write inside the guest program's write loop (its own clock); wall less it is the program's start and closing sync per write. " +
    "engine: the engine's median service time; ring: the DiskClient's median less the engine's (both µs, refcow only). " +
    `load: 1-minute load average after each run, min–max; ${os.cpus().length} CPUs.\n` +
    [...new Set(rows.flatMap((r) => (r.wasm ? [describeWasmTiering(r.wasm)] : [])))].map((l) => `${l}.\n`).join("")
  );
}

function perRep(rows: readonly EmulatorTimeRow[], k: string): Map<number, EmulatorTimeRow> {
  return new Map(rows.filter((r) => key(r) === k).map((r) => [r.rep, r]));
}

/** The issue's three targets, per repetition (per build with --compare-bin; the floor rows serve both). */
export function formatTargets(rows: readonly EmulatorTimeRow[]): string {
  const builds = [...new Set(rows.map((r) => r.build))].filter((b): b is string => b !== undefined);
  if (builds.length === 0) return targetsOf(rows);
  return builds.map((b) => `${b} build:\n${targetsOf(rows.filter((r) => r.build === b || r.source === "floor").map((r) => ({ ...r, build: undefined })))}`).join("\n");
}

function targetsOf(rows: readonly EmulatorTimeRow[]): string {
  const reps = [...new Set(rows.map((r) => r.rep))].sort((a, b) => a - b);
  const pair = (a: string, b: string, pick: (r: EmulatorTimeRow) => number) => {
    const ra = perRep(rows, a);
    const rb = perRep(rows, b);
    const both = reps.filter((n) => ra.has(n) && rb.has(n));
    return { num: both.map((n) => pick(ra.get(n)!)), den: both.map((n) => pick(rb.get(n)!)), reps: both };
  };
  let out = "| target | per-rep ratio (median min–max, each) | met |\n|---|---|---|\n";
  const ratio = (label: string, a: string, b: string, bar: number) => {
    const p = pair(a, b, (r) => r.iops);
    if (p.reps.length === 0) return void (out += `| ${label} | not run | - |\n`);
    const each = p.num.map((x, i) => x / p.den[i]!);
    const median = spread(each).median;
    out += `| ${label} | ${formatPerRepRatios(p.num, p.den)} | ${median >= bar ? "yes" : "**no**"} |\n`;
  };
  ratio("virtio/16 writeback IOPS / floor virtio/16 ≥ 0.7", "refcow virtio/16 writeback", "floor virtio/16 -", 0.7);
  ratio("virtio/16 writethrough IOPS / virtio/1 writethrough ≥ 3", "refcow virtio/16 writethrough", "refcow virtio/1 writethrough", 3);
  const ide = pair("refcow ide/1 writeback", "floor ide/1 -", (r) => r.appMedianUs);
  const ra = perRep(rows, "refcow ide/1 writeback");
  if (ide.reps.length === 0) out += "| ide/1 writeback: app − floor ≤ engine + 50 µs | not run | - |\n";
  else {
    const excess = ide.reps.map((n, i) => ide.num[i]! - ide.den[i]! - (ra.get(n)!.engineMedianUs ?? 0));
    const median = spread(excess).median;
    out += `| ide/1 writeback: (app − floor) − engine ≤ 50 µs | ${formatSpread(excess, 0)} µs; each ${excess.map((x) => x.toFixed(0)).join(" ")} | ${median <= 50 ? "yes" : "**no**"} |\n`;
  }
  return out;
}

const USAGE = `usage: node dist/bench/emulator-time.js [options]

Where the emulator's time goes per guest write (rand4k in place, after the warm-up), on the zero-latency
floor and on refcow (eager), for ide/1, virtio/1 and virtio/16; then the issue's targets per repetition.

  --reps N          repetitions (default 3), every source and case once each, interleaved
  --clusters N      writes in the refcow phase and in the floor's pass (default 2048)
  --cache a,b       refcow's cache modes (default writeback,writethrough)
  --cases a,b       of ${DISK_CONFIGS.map((c) => c.name).join(", ")} (default all)
  --sources a,b     floor, refcow (default both)
  --compare-bin DIR also run every refcow row on another build (its dist/), alternating which goes first
  --json FILE       also write every row as JSON
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "emulator time",
    usage: USAGE,
    options: { reps: { type: "string" }, clusters: { type: "string" }, cache: { type: "string" }, cases: { type: "string" }, sources: { type: "string" }, json: { type: "string" }, "compare-bin": { type: "string" } },
  },
  async (v) => {
    const sources = listOption(v.sources);
    for (const s of sources ?? []) if (s !== "floor" && s !== "refcow") throw new BenchUsageError(`--sources takes floor, refcow, not '${s}'`);
    const caches = listOption(v.cache);
    for (const c of caches ?? []) if (c !== "writeback" && c !== "writethrough") throw new BenchUsageError(`--cache takes writeback, writethrough, not '${c}'`);
    const rows = await runEmulatorTimeBench({
      reps: integerOption("reps", v.reps),
      clusters: integerOption("clusters", v.clusters),
      caches: caches as CacheMode[] | undefined,
      cases: listOption(v.cases),
      sources: sources as ("floor" | "refcow")[] | undefined,
      ...(v["compare-bin"] !== undefined ? { builds: buildsToCompare(v["compare-bin"]) } : {}),
      onProgress: progress,
    });
    if (v.json) fs.writeFileSync(v.json, JSON.stringify(rows, null, 2));
    process.stdout.write(formatBreakdown(rows) + "\n" + formatTargets(rows));
  },
);
