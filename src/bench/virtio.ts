/**
 * IDE against virtio-blk in the guest: the rand4k workload (4 KiB random O_DIRECT writes, one per cluster
 * start, refcow-io) on a fresh image per run, in place and after a snapshot, for
 *
 *   ide/1      v86's IDE disk, one request at a time (pwrite64)
 *   virtio/1   refcow's virtio-blk device, one request at a time (pwrite64)
 *   virtio/16  refcow's virtio-blk device, 16 requests in flight (io_uring)
 *
 * for every scheme and cache mode asked; every configuration is run `reps` times, interleaved (each
 * configuration once, then again). Per configuration and phase it prints the median over the runs of:
 * the guest program's per-request latency (its own CLOCK_MONOTONIC from io_uring_enter/pwrite64 to completion:
 * the median and the p99 of each run), its IOPS (requests over first submission → last completion, guest
 * clock), the most requests the device had in flight, virtio-blk's interrupts and queue notifications, and
 * the guest instructions per write.
 *
 *     npm run build && node dist/bench/virtio.js [--reps N] [--clusters N] [--schemes a,b] [--cache a,b] [--json FILE]
 *                                                [--compare-bin OTHER/dist]
 *
 * (`npm run bench:virtio` runs it with the defaults: 3 reps, 2048 clusters, every scheme, both cache modes.)
 *
 * Every run's image must pass qemu-img check once the run has closed it, or the bench stops there.
 *
 * Reading the figures: every run first makes the workloads' warm-up writes (workloads.ts guestWarmUpRequests:
 * 16384 at depth 1, 32768 at depth 16), so that each configuration meets v86's JIT settled: code the guest
 * runs once per batch heats `iodepth` times slower, and with the 2048 writes once used, depth 16 was still
 * largely interpreted (about a fifth of its time in compiled code against two fifths for IDE) and ran at
 * 16-60 million guest instructions a second where IDE ran at 43-114. Behind the engine, in place, the guest's
 * emulated CPU is then the bottleneck (an in-place write is one data write, whatever the scheme), so the ratio
 * to IDE still follows the CPU the host leaves to v86's thread: a phase of 2048 writes at depth 16 lasts about
 * 0.1 s, and one stall of the host moves it. The guest instructions per write (v86's instruction counter over
 * the phase) are the guest's CPU cost per request, which the host's load does not move: the figure to compare
 * guest-side changes by on a busy machine. Compare runs of one invocation, on a quiet machine.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { formatRatio } from "../report/ratios.js";
import { SCHEME_NAMES } from "../schemes/index.js";
import { spread } from "../stats/latency.js";
import { ensureGuestImage } from "../guest/guest-image.js";
import type { GuestDiskType } from "../guest/guest-machine.js";
import { runGuestWorkload } from "../guest/run-workload.js";
import { buildsToCompare, formatPerRepRatios, formatSpread, orderFor, type Build } from "./compare-bin.js";
import { countVirtioWritePathCopies, timeVirtioWritePath, type VirtioWritePathTime } from "./virtio-copies.js";
import { BenchUsageError, GUEST_MATRIX_OPTIONS, guestMatrixValues, listOption, progress, runProgram } from "./entry.js";
import { qemuCheckVerdict } from "./image-check.js";

export interface DiskConfig {
  name: string;
  disk: GuestDiskType;
  iodepth: number;
}

export const DISK_CONFIGS: readonly DiskConfig[] = [
  { name: "ide/1", disk: "ide", iodepth: 1 },
  { name: "virtio/1", disk: "virtio", iodepth: 1 },
  { name: "virtio/16", disk: "virtio", iodepth: 16 },
];

export interface VirtioBenchRow {
  config: string;
  scheme: string;
  cache: CacheMode;
  phase: string;
  rep: number;
  medianUs: number;
  p99Us: number;
  iops: number;
  maxInFlight: number;
  /** virtio-blk: guest interrupts the device raised in the phase (all its requests, the fsync included). */
  interrupts?: number;
  /** virtio-blk: the driver's queue notifications (kicks) in the phase. */
  notifies?: number;
  /** Emulated instructions in the phase (its writes, its fsync and the program's report) ÷ its writes. */
  instructionsPerWrite?: number;
  load1: number;
  /** With --compare-bin: which build ran it ("this" or "other"). */
  build?: string;
}

export interface VirtioBenchOptions {
  reps?: number;
  clusters?: number;
  schemes?: string[];
  caches?: CacheMode[];
  configs?: readonly DiskConfig[];
  onProgress?: (m: string) => void;
  /** Run every configuration on each of these builds in every repetition, alternating first (--compare-bin). */
  builds?: Build[];
}

const PHASES = ["in-place", "post-snapshot"];

export async function runVirtioBench(o: VirtioBenchOptions = {}): Promise<VirtioBenchRow[]> {
  const reps = o.reps ?? 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-virtio-bench-"));
  const rows: VirtioBenchRow[] = [];
  try {
    await ensureGuestImage({ onProgress: o.onProgress });
    for (let rep = 1; rep <= reps; rep++) {
      for (const cache of o.caches ?? (["writeback", "writethrough"] as CacheMode[])) {
        for (const scheme of o.schemes ?? [...SCHEME_NAMES]) {
          for (const c of o.configs ?? DISK_CONFIGS) for (const build of o.builds ? orderFor(o.builds, rep) : [undefined]) {
            const image = path.join(dir, `${scheme}-${cache}-${c.name.replace("/", "-")}-${rep}${build ? `-${build.label}` : ""}.qcow2`);
            const run = build ? (await build.load<{ runGuestWorkload: typeof runGuestWorkload }>("guest/run-workload.js")).runGuestWorkload : runGuestWorkload;
            const r = await run({
              image,
              scheme,
              cache,
              workload: "rand4k",
              clusters: o.clusters ?? 2048,
              disk: c.disk,
              iodepth: c.iodepth,
              engineStats: false,
            });
            // The figures count only from an image qemu-img finds clean after the run has closed it.
            const verdict = qemuCheckVerdict(image);
            if (verdict !== "clean") throw new Error(`qemu-img check of ${scheme}/${cache}/${c.name} rep ${rep}: ${verdict}`);
            fs.rmSync(image, { force: true });
            const load1 = os.loadavg()[0]!;
            for (const phase of PHASES) {
              const p = r.phases[phase]!;
              rows.push({
                config: c.name,
                scheme,
                cache,
                phase,
                rep,
                medianUs: p.app_us?.median ?? NaN,
                p99Us: p.app_us?.p99 ?? NaN,
                iops: p.guest_iops ?? NaN,
                maxInFlight: p.max_in_flight ?? 0,
                ...(p.interrupts !== undefined ? { interrupts: p.interrupts } : {}),
                ...(p.notifies !== undefined ? { notifies: p.notifies } : {}),
                ...(p.guest_instructions !== undefined && p.writes.count > 0 ? { instructionsPerWrite: p.guest_instructions / p.writes.count } : {}),
                load1,
                ...(build ? { build: build.label } : {}),
              });
            }
            const ip = rows.at(-2)!;
            const ps = rows.at(-1)!;
            o.onProgress?.(
              `[virtio-bench] rep ${rep}/${reps} ${cache} ${scheme} ${c.name}${build ? ` (${build.label} build)` : ""}: in-place ${ip.iops.toFixed(0)} IOPS (median ${ip.medianUs.toFixed(0)} µs), post-snapshot ${ps.iops.toFixed(0)} IOPS (median ${ps.medianUs.toFixed(0)} µs), load ${load1.toFixed(2)}`,
            );
          }
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** The median of the finite values (the statistics module's), NaN when there are none. */
function median(xs: number[]): number {
  const finite = xs.filter((x) => Number.isFinite(x));
  return finite.length ? spread(finite).median : NaN;
}

/** The rows by table line: "cache|scheme|phase|config". */
function rowsByCell(rows: VirtioBenchRow[]): Map<string, VirtioBenchRow[]> {
  const cells = new Map<string, VirtioBenchRow[]>();
  for (const r of rows) {
    const k = `${r.cache}|${r.scheme}|${r.phase}|${r.config}`;
    let l = cells.get(k);
    if (!l) cells.set(k, (l = []));
    l.push(r);
  }
  return cells;
}

/** Markdown table: one line per cache, scheme, phase and configuration (medians over the runs). */
export function formatVirtioBench(rows: VirtioBenchRow[]): string {
  const keys = rowsByCell(rows);
  let out =
    "| cache | scheme | phase | disk/depth | runs | latency median µs | latency p99 µs | IOPS | × ide/1 IOPS | max in flight | interrupts | notifies | guest instructions / write |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const [k, l] of keys) {
    const [cache, scheme, phase, config] = k.split("|");
    const ide = keys.get(`${cache}|${scheme}|${phase}|ide/1`);
    const iops = median(l.map((r) => r.iops));
    // Per repetition: run k of this configuration against run k of ide/1 (interleaved, so the same machine).
    const perRep = ide ? l.flatMap((r) => ide.filter((x) => x.rep === r.rep && x.iops > 0).map((x) => r.iops / x.iops)).filter((x) => Number.isFinite(x)) : [];
    const irqs = l.filter((r) => r.interrupts !== undefined).map((r) => r.interrupts!);
    const kicks = l.filter((r) => r.notifies !== undefined).map((r) => r.notifies!);
    const ipw = l.filter((r) => r.instructionsPerWrite !== undefined).map((r) => r.instructionsPerWrite!);
    out += `| ${cache} | ${scheme} | ${phase} | ${config} | ${l.length} | ${median(l.map((r) => r.medianUs)).toFixed(0)} | ${median(l.map((r) => r.p99Us)).toFixed(0)} | ${iops.toFixed(0)} | ${perRep.length ? formatRatio(spread(perRep)) : "-"} | ${Math.max(...l.map((r) => r.maxInFlight))} | ${irqs.length ? median(irqs).toFixed(0) : "-"} | ${kicks.length ? median(kicks).toFixed(0) : "-"} | ${ipw.length ? median(ipw).toFixed(0) : "-"} |\n`;
  }
  const loads = rows.map((r) => r.load1);
  out += `\nlatency: the guest program's own timing of each 4 KiB O_DIRECT write (CLOCK_MONOTONIC, submission to completion), median and p99 of each run, then the median over the runs; IOPS: writes / (first submission → last completion), guest clock, median over the runs; × ide/1 IOPS: the ratio of each run to the ide/1 run of the same repetition, median (min–max) over the repetitions; interrupts: virtio-blk interrupts raised in the phase (its writes and its fsync), median over the runs; notifies: the guest driver's queue notifications in the phase, median over the runs; guest instructions / write: v86's count of emulated instructions over the phase (its writes, its fsync, the program's report) ÷ its writes, median over the runs — the guest's CPU cost, which the host's load does not move. Every run's image passed qemu-img check. Host load average (1 min) during the runs: ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}.\n`;
  return out;
}

/**
 * Markdown table of a --compare-bin run: per cache, scheme, phase and configuration, each build's IOPS and
 * latency median (median, min–max over the repetitions) and this/other per repetition; then, per build, the
 * device's write path without a guest (virtio-copies.ts): bytes JavaScript copies per write request and the
 * amortized time per write.
 */
/** One build's write path without a guest: each repetition's timing and copy count. */
export interface WritePathRuns {
  times: VirtioWritePathTime[];
  copies: number[];
}

export function formatVirtioCompare(rows: VirtioBenchRow[], paths: Map<string, WritePathRuns>): string {
  const groups = rowsByCell(rows);
  let out =
    rows.length === 0
      ? ""
      : "| cache | scheme | phase | disk/depth | IOPS this | IOPS other | IOPS this/other | per repetition | latency median µs this | other | latency this/other | per repetition |\n" +
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const [k, l] of groups) {
    const byRep = (build: string, f: (r: VirtioBenchRow) => number) => l.filter((r) => r.build === build).sort((a, b) => a.rep - b.rep).map(f);
    const [a, b] = [byRep("this", (r) => r.iops), byRep("other", (r) => r.iops)];
    const [la, lb] = [byRep("this", (r) => r.medianUs), byRep("other", (r) => r.medianUs)];
    out += `| ${k.split("|").join(" | ")} | ${formatSpread(a, 0)} | ${formatSpread(b, 0)} | ${formatPerRepRatios(a, b)} | ${formatSpread(la, 0)} | ${formatSpread(lb, 0)} | ${formatPerRepRatios(la, lb)} |\n`;
  }
  const us = (b: string) => paths.get(b)?.times.map((x) => x.usPerWrite) ?? [];
  const cpu = (b: string) => paths.get(b)?.times.map((x) => x.cpuUsPerWrite) ?? [];
  out += "\nThe device's write path without a guest (virtio-copies.ts: a minimal driver, 4 KiB writes at depth 16, every Uint8Array set/slice on this thread counted):\n\n";
  out +=
    "| build | bytes copied in JavaScript per write, each repetition | amortized µs per write, median (min–max) | this/other | per repetition | CPU µs per write | this/other | per repetition |\n" +
    "|---|---|---|---|---|---|---|---|\n";
  for (const [build, v] of paths) {
    const ratios = build === "this" ? `${formatPerRepRatios(us("this"), us("other"))} | ${formatSpread(cpu(build))} | ${formatPerRepRatios(cpu("this"), cpu("other"))}` : `- | - | ${formatSpread(cpu(build))} | - | -`;
    out += `| ${build} | ${v.copies.map((x) => x.toFixed(1)).join(", ")} | ${formatSpread(us(build))} | ${ratios} |\n`;
  }
  if (rows.length === 0) return out + `\nWrite path: the driver's 4 KiB writes after a warm-up, every build's timings first, then the copy counts in passes of their own; per repetition: this/other of the same repetition, builds alternating first. Host load average (1 min): ${os.loadavg()[0]!.toFixed(2)}.\n`;
  const loads = rows.map((r) => r.load1);
  out += `\nIOPS: the guest's writes / (first submission → last completion), guest clock; latency: the guest program's median per-request time of each run; per repetition: this/other of the same repetition, builds alternating first. Every run's image passed qemu-img check. Host load average (1 min): ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)}.\n`;
  return out;
}

const USAGE = `usage: node dist/bench/virtio.js [options]

IDE at depth 1 against virtio-blk at depths 1 and 16: rand4k (4 KiB random O_DIRECT writes) in the guest,
in place and after a snapshot, a fresh image per run, configurations interleaved.

  --reps N          runs per configuration (default 3)
  --clusters N      writes per phase (default 2048)
  --schemes a,b     refcount schemes (default: all)
  --cache a,b       writeback, writethrough (default: both)
  --configs a,b     ${DISK_CONFIGS.map((c) => c.name).join(", ")} (default: all)
  --json FILE       also write every run's row as JSON
  --compare-bin DIR another build (its dist/) in the same repetitions, alternating first: this/other per
                    repetition; and each build's write path without a guest (bytes copied, time per write)
  --write-path-only with --compare-bin: only the write path without a guest (no guest runs)
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "virtio bench",
    usage: USAGE,
    options: { ...GUEST_MATRIX_OPTIONS, configs: { type: "string" }, "compare-bin": { type: "string" }, "write-path-only": { type: "boolean" } },
  },
  async (v) => {
    const configs = listOption(v.configs)?.map((n) => {
      const c = DISK_CONFIGS.find((x) => x.name === n);
      if (!c) throw new BenchUsageError(`unknown configuration '${n}' (${DISK_CONFIGS.map((x) => x.name).join(", ")})`);
      return c;
    });
    if (v["compare-bin"] !== undefined) {
      const builds = buildsToCompare(v["compare-bin"]);
      const matrix = guestMatrixValues(v);
      const reps = matrix.reps ?? 3;
      const paths = new Map<string, WritePathRuns>(builds.map((b) => [b.label, { times: [], copies: [] }]));
      // Every timing first: the copy count replaces Uint8Array methods, which may slow what runs after it.
      for (let rep = 0; rep < reps; rep++) for (const b of orderFor(builds, rep)) paths.get(b.label)!.times.push(await timeVirtioWritePath(b));
      for (let rep = 0; rep < reps; rep++) for (const b of orderFor(builds, rep)) paths.get(b.label)!.copies.push(await countVirtioWritePathCopies(b));
      const rows = v["write-path-only"] ? [] : await runVirtioBench({ configs, ...matrix, builds, onProgress: progress });
      if (v.json) fs.writeFileSync(v.json, JSON.stringify({ rows, writePath: Object.fromEntries(paths) }, null, 2) + "\n");
      process.stdout.write(formatVirtioCompare(rows, paths));
      return;
    }
    const rows = await runVirtioBench({ configs, ...guestMatrixValues(v), onProgress: progress });
    if (v.json) fs.writeFileSync(v.json, JSON.stringify(rows, null, 2) + "\n");
    process.stdout.write(formatVirtioBench(rows));
  },
);
