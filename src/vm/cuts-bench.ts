/**
 * What each cut of the guest-to-engine delay brings (latency-cuts.ts): the rand4k guest workload on a fresh
 * image per run, with the cuts added one after the other (none → nocopy → nocopy,spin → all), every
 * configuration run `reps` times, interleaved (each configuration once, then again), for each scheme and
 * cache mode asked. Prints, per configuration and phase, the median over the runs of each clock's median
 * and p99 (app, device, ring, engine) and of app − engine, with the host's load average.
 *
 * `--floor`: instead, the guest's floor — the same 4 KiB O_DIRECT writes (refcow-io, 256 cluster starts) on
 * an in-memory raw disk whose requests complete at once (MemoryAsyncDisk), `reps` passes in one guest: what
 * the emulated guest kernel and v86's IDE path cost with no engine, no ring and no worker at all.
 *
 *     npm run build && node dist/vm/cuts-bench.js [--reps N] [--clusters N] [--schemes a,b] [--cache a,b] [--json FILE] [--floor]
 *
 * (bench/guest-cuts.ts is the typed entry; `npm run bench:guest-cuts` runs it with the defaults.)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import type { CacheMode } from "../engine/types.js";
import { spread, summarize } from "../stats/latency.js";
import type { LatencyColumn } from "./decomposition.js";
import { ensureGuestImage } from "./guest-image.js";
import { parseGuestIoReports } from "./guest-io-report.js";
import { GuestRunner } from "./guest-runner.js";
import { MemoryAsyncDisk } from "./memory-async-disk.js";
import { obtainWarmState } from "./warm-state.js";
import { parseCuts } from "./latency-cuts.js";
import { runGuestWorkload, type GuestWorkloadResult } from "./run-workload.js";

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

/** The floor (see the module comment): per pass, the median and p99 of app and device, µs, and the load. */
export async function runFloor(passes = 3, onProgress?: (m: string) => void): Promise<string> {
  await ensureGuestImage({ onProgress });
  const size = 256 << 20;
  const warm = await obtainWarmState({ diskSize: size, onProgress });
  const g = await GuestRunner.boot({ disk: new MemoryAsyncDisk(size), initialState: warm.state, onProgress });
  const lines: string[] = [];
  try {
    await g.check("yes floor | head -c 4096 > /tmp/blk; awk 'BEGIN{for(i=0;i<256;i++)print i*1048576}' > /tmp/order");
    for (let pass = 1; pass <= passes; pass++) {
      g.adapter.takeRecords();
      const reports = parseGuestIoReports(await g.check("refcow-io write $DISK /tmp/blk </tmp/order"));
      const app = reports.find((r) => r.op === "write")!.latenciesNs.map((n) => n / 1000);
      const device = g.adapter.takeRecords().filter((r) => r.op === "write").map((r) => r.latencyMs * 1000);
      const a = summarize(app);
      const d = summarize(device);
      lines.push(`pass ${pass}: app median ${a.median.toFixed(0)} p99 ${a.p99.toFixed(0)} µs; device median ${d.median.toFixed(0)} p99 ${d.p99.toFixed(0)} µs; ${app.length} writes; load ${os.loadavg()[0]!.toFixed(2)}`);
    }
  } finally {
    await g.destroy();
  }
  return `guest floor: 4 KiB O_DIRECT writes on an in-memory disk completing at once (no engine, no ring)\n${lines.join("\n")}\n`;
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

export async function cutsBenchMain(argv: string[]): Promise<number> {
  const o: CutsBenchOptions = { onProgress: (m) => process.stderr.write(m + "\n") };
  let json: string | undefined;
  if (argv.includes("--floor")) {
    const i = argv.indexOf("--reps");
    process.stdout.write(await runFloor(i >= 0 ? Number(argv[i + 1]) : 3, o.onProgress));
    return 0;
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[++i];
    if (v === undefined) throw new Error(`${a} needs a value`);
    if (a === "--reps") o.reps = Number(v);
    else if (a === "--clusters") o.clusters = Number(v);
    else if (a === "--schemes") o.schemes = v.split(",");
    else if (a === "--cache") o.caches = v.split(",") as CacheMode[];
    else if (a === "--steps") o.steps = v.split(";");
    else if (a === "--json") json = v;
    else throw new Error(`unknown option ${a}`);
  }
  if (o.reps !== undefined && !(Number.isInteger(o.reps) && o.reps > 0)) throw new Error("--reps needs a positive integer");
  if (o.clusters !== undefined && !(Number.isInteger(o.clusters) && o.clusters > 0)) throw new Error("--clusters needs a positive integer");
  const runs = await runCutsBench(o);
  if (json) fs.writeFileSync(json, JSON.stringify(runs.map((r) => ({ ...r, result: { phases: r.result.phases, loadAverage: r.result.loadAverage, cuts: r.result.cuts } })), null, 2));
  process.stdout.write(formatCutsBench(runs));
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  cutsBenchMain(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`cuts bench: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
