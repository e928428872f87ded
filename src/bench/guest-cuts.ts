/**
 * What each cut of the guest-to-engine delay brings (latency-cuts.ts): the rand4k guest workload on a fresh
 * image per run, with the cuts added one after the other (none → nocopy → nocopy,spin → all), every
 * configuration run `reps` times, interleaved (each configuration once, then again), for each scheme and
 * cache mode asked. Prints, per configuration and phase, the median over the runs of each clock's median
 * and p99 (app, device, ring, engine) and of app − engine, with the host's load average.
 *
 * `--floor`: instead, the guest's floor — the same 4 KiB O_DIRECT writes (refcow-io, 256 cluster starts) on
 * an in-memory raw disk whose requests complete at once (MemoryAsyncDisk), `reps` passes in one guest: what
 * the emulated guest kernel and v86's disk path cost with no engine, no ring and no worker at all; through
 * v86's IDE disk (`--disk ide`, the default) or refcow's virtio-blk device (`--disk virtio`), one request
 * at a time unless `--iodepth N` (virtio only: refcow-io's io_uring, as the workloads). Besides the latencies, each pass
 * gives the emulated instructions per write (v86's instruction counter over the pass, less that of the
 * same command with no offsets: the program's start and exit), a figure the host's load does not move.
 *
 *     npm run build && node dist/bench/guest-cuts.js [--reps N] [--clusters N] [--schemes a,b] [--cache a,b] [--json FILE]
 *     npm run build && node dist/bench/guest-cuts.js --floor [--disk ide|virtio] [--iodepth N] [--reps N] [--warm-up]
 *
 * `--warm-up` first runs the writes the workloads issue before their in-place phase (workloads.ts
 * warmUpWrites): pass 1 then shows whether they bring the write path to its settled cost.
 *
 * (`npm run bench:guest-cuts` runs it in both cache modes, with the other defaults.)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { spread, summarize } from "../stats/latency.js";
import type { LatencyColumn } from "../guest/decomposition.js";
import { ensureGuestImage } from "../guest/guest-image.js";
import { guestIops, parseGuestIoReports } from "../guest/guest-io-report.js";
import { EmulatorClock, type EmulatorTime } from "../v86/emulator-clock.js";
import type { GuestDiskType } from "../guest/guest-machine.js";
import { GuestRunner } from "../guest/guest-runner.js";
import { parseCuts } from "../guest/latency-cuts.js";
import { MemoryAsyncDisk } from "../v86/memory-async-disk.js";
import { runGuestWorkload, type GuestWorkloadResult } from "../guest/run-workload.js";
import { obtainWarmState } from "../guest/warm-state.js";
import { PHASE_LINE } from "../guest/serial-console.js";
import { announcePhase, guestWarmUpRequests, rand4kTargets, shuffledOffsets, warmUpWrites, writeListedOffsetsAndSync } from "../guest/workloads.js";
import { BenchUsageError, GUEST_MATRIX_OPTIONS, guestMatrixValues, integerOption, progress, runProgram } from "./entry.js";

export const CUT_STEPS = ["none", "nocopy", "nocopy,spin", "all"] as const;

export interface CutsBenchOptions {
  reps?: number;
  clusters?: number;
  schemes?: string[];
  caches?: CacheMode[];
  steps?: readonly string[];
  onProgress?: (m: string) => void;
}

export interface CutsBenchRun {
  cuts: string;
  scheme: string;
  cache: CacheMode;
  rep: number;
  load1: number;
  result: GuestWorkloadResult;
}

export async function runCutsBench(o: CutsBenchOptions = {}): Promise<CutsBenchRun[]> {
  const reps = o.reps ?? 3;
  const steps = o.steps ?? CUT_STEPS;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-cuts-bench-"));
  const runs: CutsBenchRun[] = [];
  try {
    await ensureGuestImage({ onProgress: o.onProgress });
    for (let rep = 1; rep <= reps; rep++) {
      for (const cache of o.caches ?? (["writeback"] as CacheMode[])) {
        for (const scheme of o.schemes ?? ["eager"]) {
          for (const cuts of steps) {
            const image = path.join(dir, `${scheme}-${cache}-${cuts.replace(/,/g, "+")}-${rep}.qcow2`);
            o.onProgress?.(`[cuts] run ${rep}/${reps} ${scheme} ${cache} cuts=${cuts}`);
            const result = await runGuestWorkload({ image, scheme, cache, workload: "rand4k", clusters: o.clusters ?? 256, cuts: parseCuts(cuts) });
            runs.push({ cuts, scheme, cache, rep, load1: os.loadavg()[0]!, result });
            fs.rmSync(image, { force: true });
          }
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return runs;
}

export interface FloorOptions {
  passes?: number;
  /** The guest's disk device (default ide). */
  disk?: GuestDiskType;
  /** Requests in flight (default 1; above 1 needs the virtio disk). */
  iodepth?: number;
  /** First the workloads' warm-up writes (workloads.ts warmUpWrites), as rand4k and overwrite do before their phases. */
  warmUp?: boolean;
  /** Charge the emulator thread's time in each pass to categories (EmulatorClock). */
  emulatorTime?: boolean;
  /**
   * Write as rand4k's in-place phase does (workloads.ts): this many cluster starts (64 KiB clusters over the
   * disk) in a shuffled order, then the phase's fdatasync, with the warm-up over the same offsets — so that
   * a pass and a refcow phase of as many writes cover the same program run (its start, its writes, its
   * sync). Absent: the 256 writes at 1 MiB steps of the floor's own pattern, without the sync.
   */
  writes?: number;
  onProgress?: (m: string) => void;
}

export interface FloorPass {
  pass: number;
  writes: number;
  appMedianUs: number;
  appP99Us: number;
  deviceMedianUs: number;
  deviceP99Us: number;
  /**
   * Emulated instructions per write: the pass's count less that of the same command with no offsets, ÷ writes;
   * with `writes`, the count from the pass's announcement to its end ÷ writes (as a refcow phase's).
   */
  instructionsPerWrite: number;
  /** The guest program's requests per second (its own clock, first submission to last completion). */
  iops?: number;
  /** With `emulatorTime`: the pass's emulator time by category. */
  emulatorTime?: EmulatorTime;
  load1: number;
}

/** The floor (see the module comment): per pass, the median and p99 of app and device (µs), the instructions per write and the load. */
export async function measureFloor(o: FloorOptions = {}): Promise<FloorPass[]> {
  const disk = o.disk ?? "ide";
  const iodepth = o.iodepth ?? 1;
  if (!Number.isInteger(iodepth) || iodepth < 1 || iodepth > 64) throw new Error("--iodepth needs an integer from 1 to 64");
  if (iodepth > 1 && disk !== "virtio") throw new Error("--iodepth above 1 needs --disk virtio (IDE has one command at a time)");
  const passes = o.passes ?? 3;
  await ensureGuestImage({ onProgress: o.onProgress });
  const size = 256 << 20;
  const warm = await obtainWarmState({ diskSize: size, diskType: disk, onProgress: o.onProgress });
  // With `writes`, each pass announces itself as a workload's phase does, and its clock and instruction
  // count start at the announcement: the same span of the program's run as the refcow phase it is set
  // against (run-workload.ts), not the typing of the command line on the serial console before it.
  let announced: { instructions: number } | undefined;
  let onAnnounce: () => void = () => undefined;
  const g = await GuestRunner.boot({
    disk: new MemoryAsyncDisk(size),
    diskType: disk,
    initialState: warm.state,
    onProgress: o.onProgress,
    onConsoleLine: (line) => {
      if (PHASE_LINE.test(line)) onAnnounce();
    },
  });
  onAnnounce = () => {
    clock?.take();
    announced = { instructions: g.v86.get_instruction_counter() };
    g.sendToConsole("\n");
  };
  const out: FloorPass[] = [];
  let clock: EmulatorClock | undefined;
  const depth = iodepth > 1 ? ` depth=${iodepth} uring` : ""; // as the workloads queue requests (workloads.ts)
  // v86's counter is a u32 that wraps; a pass is far below 2^32 instructions.
  const counted = async (command: string): Promise<{ output: string; instructions: number }> => {
    const c0 = g.v86.get_instruction_counter();
    const output = await g.check(command);
    return { output, instructions: (g.v86.get_instruction_counter() - c0) >>> 0 };
  };
  try {
    const listed = o.writes ?? 256;
    const order = o.writes === undefined ? "awk 'BEGIN{for(i=0;i<256;i++)print i*1048576}' > /tmp/order" : shuffledOffsets(listed, rand4kTargets({ diskSize: size, clusterSize: 65536, clusters: listed })[1]!, 2);
    await g.check(`yes floor | head -c 4096 > /tmp/blk; ${order}`);
    if (o.warmUp) {
      g.adapter.takeRecords();
      await g.check(warmUpWrites(listed, iodepth), { timeoutMs: 600_000 });
      const writes = g.adapter.takeRecords().filter((r) => r.op === "write").length;
      if (writes < guestWarmUpRequests(iodepth)) throw new Error(`the warm-up reached the disk with ${writes} writes, not ${guestWarmUpRequests(iodepth)}`);
      o.onProgress?.(`warm-up: ${writes} writes`);
    }
    if (o.emulatorTime) clock = new EmulatorClock(g.v86, g.adapter.device);
    for (let pass = 1; pass <= passes; pass++) {
      let output: string;
      let instructions: number;
      let emulatorTime: EmulatorTime | undefined;
      if (o.writes === undefined) {
        const empty = await counted(`refcow-io write $DISK /tmp/blk${depth} </dev/null`);
        g.adapter.takeRecords();
        clock?.take();
        const run = await counted(`refcow-io write $DISK /tmp/blk${depth} </tmp/order`);
        emulatorTime = clock?.take();
        output = run.output;
        instructions = run.instructions - empty.instructions;
      } else {
        g.adapter.takeRecords();
        announced = undefined;
        output = await g.check(`${announcePhase("floor")}; ${writeListedOffsetsAndSync(iodepth)}`, { timeoutMs: 600_000 });
        emulatorTime = clock?.take();
        if (!announced) throw new Error("the floor's pass never announced itself (REFCOW-PHASE floor)");
        instructions = (g.v86.get_instruction_counter() - (announced as { instructions: number }).instructions) >>> 0;
      }
      const report = parseGuestIoReports(output).find((r) => r.op === "write")!;
      const app = report.latenciesNs.map((n) => n / 1000);
      const device = g.adapter.takeRecords().filter((r) => r.op === "write").map((r) => r.latencyMs * 1000);
      const a = summarize(app);
      const d = summarize(device);
      out.push({
        pass,
        writes: app.length,
        appMedianUs: a.median,
        appP99Us: a.p99,
        deviceMedianUs: d.median,
        deviceP99Us: d.p99,
        instructionsPerWrite: instructions / app.length,
        iops: guestIops(report),
        ...(emulatorTime ? { emulatorTime } : {}),
        load1: os.loadavg()[0]!,
      });
    }
  } finally {
    clock?.uninstall();
    await g.destroy();
  }
  return out;
}

export function formatFloor(passes: FloorPass[], disk: GuestDiskType = "ide", iodepth = 1, warmUp = false): string {
  const lines = passes.map(
    (p) =>
      `pass ${p.pass}: app median ${p.appMedianUs.toFixed(0)} p99 ${p.appP99Us.toFixed(0)} µs; device median ${p.deviceMedianUs.toFixed(0)} p99 ${p.deviceP99Us.toFixed(0)} µs; ${p.instructionsPerWrite.toFixed(0)} instructions/write; ${p.writes} writes; load ${p.load1.toFixed(2)}`,
  );
  return `guest floor (${disk}, depth ${iodepth}${warmUp ? `, after ${guestWarmUpRequests(iodepth)} warm-up writes` : ""}): 4 KiB O_DIRECT writes on an in-memory disk completing at once (no engine, no ring)\n${lines.join("\n")}\n`;
}

/** The floor as text (see measureFloor). */
export async function runFloor(passes = 3, onProgress?: (m: string) => void, disk: GuestDiskType = "ide", iodepth = 1, warmUp = false): Promise<string> {
  return formatFloor(await measureFloor({ passes, onProgress, disk, iodepth, warmUp }), disk, iodepth, warmUp);
}

export function formatCutsBench(runs: CutsBenchRun[]): string {
  const rows: string[][] = [["scheme", "cache", "cuts", "phase", "runs", "app med", "app p99", "device med", "device p99", "ring med", "ring p99", "engine med", "engine p99", "app−engine", "load"]];
  const groups = new Map<string, CutsBenchRun[]>();
  for (const r of runs) {
    const k = `${r.scheme}\u0000${r.cache}\u0000${r.cuts}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  for (const g of groups.values()) {
    for (const phase of ["in-place", "post-snapshot"]) {
      const col = (pick: (r: CutsBenchRun) => LatencyColumn | undefined, stat: "median" | "p99") => {
        const v = g.map(pick).filter((c): c is LatencyColumn => c !== undefined && c.count > 0).map((c) => c[stat]);
        return v.length ? spread(v).median : undefined;
      };
      const p = (r: CutsBenchRun) => r.result.phases[phase];
      const share = g.map((r) => p(r)?.emulator_us).filter((x): x is number => x !== undefined);
      const loads = g.map((r) => r.load1);
      rows.push([
        g[0]!.scheme,
        g[0]!.cache,
        g[0]!.cuts,
        phase,
        String(g.length),
        f(col((r) => p(r)?.app_us, "median")),
        f(col((r) => p(r)?.app_us, "p99")),
        f(col((r) => p(r)?.device_us, "median")),
        f(col((r) => p(r)?.device_us, "p99")),
        f(col((r) => p(r)?.ring_us, "median")),
        f(col((r) => p(r)?.ring_us, "p99")),
        f(col((r) => p(r)?.engine_us, "median")),
        f(col((r) => p(r)?.engine_us, "p99")),
        f(share.length ? spread(share).median : undefined),
        `${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`,
      ]);
    }
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const text = rows.map((r) => r.map((v, c) => (c < 4 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  ")).join("\n");
  return `${text}\n(µs; median over the runs of each run's median / p99; load: 1-minute load average after each run, min–max; ${os.cpus().length} CPUs)\n`;
}

const USAGE = `usage: node dist/bench/guest-cuts.js [options]
       node dist/bench/guest-cuts.js --floor [--disk ide|virtio] [--iodepth N] [--reps N] [--warm-up]

The rand4k guest workload with the cuts of the guest-to-engine delay added one after the other
(${CUT_STEPS.join(" → ")}), each clock's median and p99 per configuration, runs interleaved.

  --reps N          runs per configuration (default 3); with --floor, passes (default 3)
  --clusters N      writes per phase (default 256)
  --schemes a,b     refcount schemes (default eager)
  --cache a,b       writeback, writethrough (default writeback)
  --steps a;b       the cut sets to run, separated by ';' (default ${CUT_STEPS.join(";")})
  --json FILE       also write every run as JSON
  --floor           instead, the guest's floor: 4 KiB O_DIRECT writes on an in-memory disk completing at once
  --disk ide|virtio with --floor: the guest's disk device (default ide)
  --iodepth N       with --floor: requests in flight (default 1; above 1 needs --disk virtio)
  --warm-up         with --floor: first the writes the workloads make before their in-place phase
  -h, --help        this text
`;

const FLOOR_ONLY = ["disk", "iodepth", "warm-up"] as const;
const WORKLOAD_ONLY = ["clusters", "schemes", "cache", "steps", "json"] as const;

runProgram(
  import.meta.url,
  {
    name: "cuts bench",
    usage: USAGE,
    options: {
      ...GUEST_MATRIX_OPTIONS,
      steps: { type: "string" },
      floor: { type: "boolean" },
      disk: { type: "string" },
      iodepth: { type: "string" },
      "warm-up": { type: "boolean" },
    },
  },
  async (v) => {
    if (v.floor) {
      const reps = integerOption("reps", v.reps);
      for (const k of WORKLOAD_ONLY) if (v[k] !== undefined) throw new BenchUsageError(`--${k} does not go with --floor (--reps, --disk, --iodepth, --warm-up)`);
      const disk = v.disk ?? "ide";
      if (disk !== "ide" && disk !== "virtio") throw new BenchUsageError(`--disk takes ide or virtio, not '${disk}'`);
      process.stdout.write(await runFloor(reps ?? 3, progress, disk, integerOption("iodepth", v.iodepth) ?? 1, v["warm-up"] ?? false));
      return;
    }
    for (const k of FLOOR_ONLY) if (v[k] !== undefined) throw new BenchUsageError(`--${k} goes with --floor only`);
    const runs = await runCutsBench({
      ...guestMatrixValues(v),
      steps: v.steps?.split(";"),
      onProgress: progress,
    });
    if (v.json) fs.writeFileSync(v.json, JSON.stringify(runs.map((r) => ({ ...r, result: { phases: r.result.phases, loadAverage: r.result.loadAverage, cuts: r.result.cuts } })), null, 2));
    process.stdout.write(formatCutsBench(runs));
  },
);
