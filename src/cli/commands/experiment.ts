/**
 * refcow experiment — the main job: the scheme comparison, from the guest down to the host I/O.
 *
 *   1. builds the guest image when it is missing (guest-images/build.sh, Debian packages);
 *   2. for every cache mode and scheme, runs a guest workload (rand4k by default) in v86 on a fresh qcow2
 *      image served by refcow, with a snapshot taken by the host in the middle (with the VM state, as
 *      QEMU's savevm), recording every disk request's latency (the guest program's own, the device's, the
 *      ring's, the engine's) and a disk trace; each cell runs `--guest-reps` times (default 3), the
 *      repetitions interleaved (every scheme once, then again) so that a change in the host's load spreads
 *      over all of them; `qemu-img check` judges every image the guest leaves;
 *   3. runs the host-side matrix (every scheme, QEMU std and lazy_refcounts, a raw file, both cache modes,
 *      plus the replay of the guest's trace on every scheme) and the snapshot-operation timings;
 *   4. writes results.json, report.md and report.html.
 *
 * Nothing that fails is dropped: a guest run that throws or leaves an image qemu-img check does not pass, and
 * any source of the host matrix that does, is a failed entry with its reason in all three files, and the run
 * goes on to write them (then exits 1).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as os from "node:os";
import * as path from "node:path";
import { qemuCheckVerdict } from "../../bench/image-check.js";
import { machine } from "../../bench/machine.js";
import { benchExitStatus, runMatrix } from "../../bench/matrix.js";
import { defaultOptions } from "../../bench/options.js";
import { failureLine, failureOf } from "../../report/failures.js";
import { fullAnswer, table, writeOutputs } from "../../report/report.js";
import type { BenchResults, FailedSource, GuestPhase, GuestResult } from "../../report/results.js";
import { cdf } from "../../stats/latency.js";
import type { CacheMode } from "../../engine/types.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import { ensureGuestImage, readGuestManifest } from "../../guest/guest-image.js";
import { runGuestWorkload, type GuestWorkloadResult } from "../../guest/run-workload.js";
import { readTrace } from "../../guest/trace.js";
import { WORKLOAD_NAMES } from "../../guest/workloads.js";
import { type CliIo, processIo } from "../command.js";
import { UsageError } from "../errors.js";
import { progressPrinter } from "../progress.js";
import { qemuGuestSources, runQemuGuestCell, sourceLabel } from "../../bench/qemu-guest.js";
import { QEMU_BACKENDS, type QemuBackend } from "../../guest/qemu-run.js";
import type { QemuAccel } from "../../guest/qemu-machine.js";
import { EXPERIMENT_SUMMARY, EXPERIMENT_USAGE, EXPERIMENT_HELP } from "./experiment-help.js";

interface ExperimentOptions {
  out: string;
  schemes: string[];
  caches: CacheMode[];
  workload: string;
  clusters: number;
  disk: "ide" | "virtio";
  iodepth: number;
  guestReps: number;
  savevm: boolean;
  guest: boolean;
  bench: boolean;
  full: boolean;
  keep?: string;
  /** Host matrix size overrides (default: the quick or full matrix's own). */
  benchClusters?: number;
  benchReps?: number;
  ops: boolean;
  /** QEMU's and the NBD sources (false: left out on purpose, the report says so, exit 0). */
  qemu: boolean;
  fio: boolean;
  emulators: Array<"v86" | "qemu">;
  qemuBackends: QemuBackend[];
  accel: QemuAccel;
}

/** The options, or "help" for -h/--help. */
function parse(argv: string[]): ExperimentOptions | "help" {
  const o: ExperimentOptions = { out: "report", schemes: [...SCHEME_NAMES], caches: ["writethrough", "writeback"], workload: "rand4k", clusters: 256, disk: "ide", iodepth: 1, guestReps: 3, savevm: true, guest: true, bench: true, full: false, ops: true, qemu: true, fio: true, emulators: ["v86"], qemuBackends: [...QEMU_BACKENDS], accel: "auto" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new UsageError(`${a} needs a value`);
      return x;
    };
    if (a === "--help" || a === "-h") return "help";
    else if (a === "--out") o.out = v();
    else if (a === "--schemes") o.schemes = v().split(",");
    else if (a === "--cache") o.caches = v().split(",") as CacheMode[];
    else if (a === "--workload") o.workload = v();
    else if (a === "--clusters") o.clusters = Number(v());
    else if (a === "--disk") {
      const d = v();
      if (d !== "ide" && d !== "virtio") throw new UsageError(`--disk must be ide or virtio, got '${d}'`);
      o.disk = d;
    } else if (a === "--iodepth") o.iodepth = Number(v());
    else if (a === "--guest-reps") o.guestReps = Number(v());
    else if (a === "--no-savevm") o.savevm = false;
    else if (a === "--no-guest") o.guest = false;
    else if (a === "--no-bench") o.bench = false;
    else if (a === "--full") o.full = true;
    else if (a === "--keep") o.keep = v();
    else if (a === "--bench-clusters") o.benchClusters = Number(v());
    else if (a === "--bench-reps") o.benchReps = Number(v());
    else if (a === "--no-ops") o.ops = false;
    else if (a === "--no-qemu") o.qemu = false;
    else if (a === "--no-fio") o.fio = false;
    else if (a === "--emulators") o.emulators = v().split(",") as ExperimentOptions["emulators"];
    else if (a === "--qemu-backends") o.qemuBackends = v().split(",") as QemuBackend[];
    else if (a === "--accel") o.accel = v() as QemuAccel;
    else throw new UsageError(`unknown option '${a}'`);
  }
  for (const s of o.schemes) if (!(SCHEME_NAMES as readonly string[]).includes(s)) throw new UsageError(`unknown scheme '${s}' (${SCHEME_NAMES.join(", ")})`);
  for (const c of o.caches) if (!["writethrough", "writeback", "unsafe"].includes(c)) throw new UsageError(`unknown cache mode '${c}' (writethrough, writeback, unsafe)`);
  if (!(WORKLOAD_NAMES as readonly string[]).includes(o.workload)) throw new UsageError(`unknown workload '${o.workload}' (${WORKLOAD_NAMES.join(", ")})`);
  if (!Number.isInteger(o.clusters) || o.clusters < 1) throw new UsageError("--clusters needs a positive integer");
  if (!Number.isInteger(o.iodepth) || o.iodepth < 1 || o.iodepth > 64) throw new UsageError("--iodepth needs an integer from 1 to 64");
  if (!Number.isInteger(o.guestReps) || o.guestReps < 1) throw new UsageError("--guest-reps needs a positive integer");
  for (const [flag, n] of [["--bench-clusters", o.benchClusters], ["--bench-reps", o.benchReps]] as const) {
    if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new UsageError(`${flag} needs a positive integer`);
  }
  if (!o.guest && !o.bench) throw new UsageError("--no-guest and --no-bench leave nothing to run");
  for (const e of o.emulators) if (e !== "v86" && e !== "qemu") throw new UsageError(`unknown emulator '${e}' (v86, qemu)`);
  for (const b of o.qemuBackends) if (!(QEMU_BACKENDS as readonly string[]).includes(b)) throw new UsageError(`unknown QEMU backend '${b}' (${QEMU_BACKENDS.join(", ")})`);
  if (!["auto", "kvm", "tcg"].includes(o.accel)) throw new UsageError(`--accel must be auto, kvm or tcg, got '${o.accel}'`);
  return o;
}

function hasQemu(): boolean {
  try {
    execFileSync("qemu-img", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** The report's record of one guest run; write CDFs come from the run's trace. */
function guestResult(r: GuestWorkloadResult, savevm: boolean, check: string, traceFile: string | undefined, rep: number): GuestResult {
  const latencies = new Map<string, number[]>();
  if (traceFile) {
    for (const e of readTrace(traceFile).events) {
      if (e.op !== "w" || e.latency === undefined) continue;
      let l = latencies.get(e.phase);
      if (!l) latencies.set(e.phase, (l = []));
      l.push(e.latency);
    }
  }
  const phases: GuestPhase[] = r.phaseOrder.map((name) => {
    const p = r.phases[name]!;
    return {
      name,
      reads: p.reads.count,
      writes: p.writes.count,
      flushes: p.flushes.count,
      write_median_us: p.writes.medianUs,
      write_p99_us: p.writes.p99Us,
      engine_write_median_us: p.writes.serviceMedianUs,
      read_median_us: p.reads.count ? p.reads.medianUs : undefined,
      flush_median_us: p.flushes.count ? p.flushes.medianUs : undefined,
      write_cdf_us: latencies.get(name)?.length ? cdf(latencies.get(name)!) : undefined,
      app_us: p.app_us,
      device_us: p.device_us,
      ring_us: p.ring_us,
      engine_us: p.engine_us,
      emulator_us: p.emulator_us,
      clock_drift_ppm: p.clock?.driftPpm,
      duration_ms: p.durationMs,
    };
  });
  const s = r.snapshot;
  return {
    scheme: r.scheme,
    cache: r.cache,
    workload: r.workload,
    disk: r.disk,
    iodepth: r.iodepth,
    savevm,
    bootMs: r.bootMs,
    warm: r.warm,
    phases,
    snapshot: s && {
      drainMs: s.drainMs,
      flushMs: s.flushMs,
      diskSnapshotMs: s.diskSnapshotMs,
      vmStateBytes: s.vmStateBytes,
      vmStateSerializeMs: s.vmStateSerializeMs,
      vmStateWriteMs: s.vmStateWriteMs,
    },
    check,
    loadAverage: r.loadAverage,
    rep,
    transferMode: r.transfer.mode,
    cuts: r.cuts,
  };
}

function v86Version(): string {
  try {
    const require = createRequire(import.meta.url);
    return (require("v86/package.json") as { version: string }).version;
  } catch {
    return "unknown";
  }
}

export async function experimentCommand(argv: string[], io: CliIo = processIo): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    io.out(`usage: refcow ${EXPERIMENT_USAGE}\n${EXPERIMENT_HELP}`);
    return 0;
  }
  const o = parse(argv);
  if (o === "help") {
    io.out(`usage: refcow ${EXPERIMENT_USAGE}\n${EXPERIMENT_SUMMARY}\n${EXPERIMENT_HELP}`);
    return 0;
  }
  const progress = progressPrinter(io);
  const t0 = Date.now();
  const clock = () => {
    const s = Math.round((Date.now() - t0) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  };
  const qemu = hasQemu();
  if (!qemu) progress("refcow: qemu-img not found: QEMU's rows and the qemu-img check of the guest images are left out (install qemu-utils)");
  const work = o.keep ?? fs.mkdtempSync(path.join(os.tmpdir(), "refcow-experiment-"));
  fs.mkdirSync(work, { recursive: true });
  const guest: GuestResult[] = [];
  const guestFailed: FailedSource[] = [];
  let traceForBench: string | undefined;
  let benchStatus = 0;
  let guestReady = o.guest;
  try {
    if (o.guest) {
      progress(`[${clock()}] guest image`);
      try {
        await ensureGuestImage({ onProgress: (m) => progress(`[${clock()}] ${m}`, true) });
      } catch (e) {
        guestReady = false;
        guestFailed.push(failureOf(e, { part: "guest", name: "the guest image" }));
        progress(`[${clock()}] guest image: FAILED: ${(e as Error).message}`);
      }
    }
    if (guestReady) {
      const v86Schemes = o.emulators.includes("v86") ? o.schemes : [];
      const qemuSources = o.emulators.includes("qemu") ? qemuGuestSources(o.qemuBackends, o.schemes) : [];
      const total = o.guestReps * o.caches.length * (v86Schemes.length + qemuSources.length);
      let step = 0;
      for (let rep = 1; rep <= o.guestReps; rep++) {
        for (const cache of o.caches) {
          // Every source once per repetition, QEMU's then v86's, so that a change in the host's load spreads over all.
          for (const source of qemuSources) {
            step++;
            const tag = `[${clock()}] guest ${step}/${total} ${sourceLabel(source)} ${cache}${o.guestReps > 1 ? ` run ${rep}/${o.guestReps}` : ""}`;
            progress(`${tag}: ${o.workload}, ${o.clusters} clusters, ${o.disk} disk, depth ${o.iodepth}, disk snapshot in the middle`);
            const cell = await runQemuGuestCell({ source, cache, rep, workload: o.workload, clusters: o.clusters, disk: o.disk, iodepth: o.iodepth, accel: o.accel, dir: work, onProgress: (m) => progress(`${tag}: ${m}`, true) });
            if ("failed" in cell) {
              guestFailed.push(cell.failed);
              progress(`${tag}: FAILED: ${cell.failed.reason}`);
              continue;
            }
            guest.push(cell.result);
            const ph = (n: string) => cell.result.phases.find((p) => p.name === n)?.app_us?.median;
            const [inPlace, post] = [ph("in-place"), ph("post-snapshot")];
            progress(`${tag}: done; ${inPlace !== undefined && post !== undefined ? `app median in-place ${inPlace.toFixed(0)} µs, post-snapshot ${post.toFixed(0)} µs, ` : ""}qemu-img check: ${cell.result.check}`);
          }
          for (const scheme of v86Schemes) {
            step++;
            const tag = `[${clock()}] guest ${step}/${total} ${scheme} ${cache}${o.guestReps > 1 ? ` run ${rep}/${o.guestReps}` : ""}`;
            progress(`${tag}: ${o.workload}, ${o.clusters} clusters, ${o.disk} disk, depth ${o.iodepth}, snapshot${o.savevm ? " with VM state" : ""} in the middle`);
            const image = path.join(work, `guest-${scheme}-${cache}-${rep}.qcow2`);
            const trace = path.join(work, `guest-${scheme}-${cache}-${rep}.trace`);
            fs.rmSync(image, { force: true });
            try {
              const r = await runGuestWorkload({
                image,
                scheme,
                cache,
                workload: o.workload,
                clusters: o.clusters,
                disk: o.disk,
                iodepth: o.iodepth,
                snapshotAt: "middle",
                savevm: o.savevm,
                trace,
                onProgress: (m) => progress(`${tag}: ${m}`, true),
              });
              const check = qemu ? qemuCheckVerdict(image) : "not checked (no qemu-img)";
              const where = { part: "guest" as const, name: `${scheme} (guest)`, source: "refcow" as const, scheme, cache, workload: `guest-${o.workload}`, round: rep };
              if (qemu && check !== "clean") {
                // Its figures are not used: the image it left is not sound.
                guestFailed.push({ ...where, reason: `the image it left fails qemu-img check: ${check}`, check });
                progress(`${tag}: FAILED: qemu-img check: ${check}`);
                continue;
              }
              const g = guestResult(r, o.savevm, check, trace, rep);
              guest.push(g);
              const post = g.phases.find((p) => p.name === "post-snapshot") ?? g.phases[g.phases.length - 1];
              const seen = post?.app_us?.median ?? post?.write_median_us;
              progress(`${tag}: done; ${post && seen !== undefined ? `${post.name} write median ${seen.toFixed(0)} µs in the guest, ` : ""}qemu-img check: ${check}`);
              if (!traceForBench && cache === "writeback") traceForBench = trace;
              traceForBench ??= trace;
            } catch (e) {
              guestFailed.push(failureOf(e, { part: "guest", name: `${scheme} (guest)`, source: "refcow", scheme, cache, workload: `guest-${o.workload}`, round: rep }));
              progress(`${tag}: FAILED: ${(e as Error).message}`);
            }
          }
        }
      }
    }
    let bench: BenchResults = { rows: [], fio: [], missing: [], failed: [] };
    const opts = defaultOptions(!o.full);
    opts.schemes = o.schemes;
    opts.caches = o.caches;
    opts.qemu = o.qemu;
    if (!o.fio) {
      opts.fio = false;
      opts.fioDepths = [];
    }
    opts.dir = path.join(work, "bench");
    if (o.benchClusters) opts.clusters = o.benchClusters;
    if (o.benchReps) opts.reps = o.benchReps;
    if (!o.ops) opts.opSizes = [];
    if (traceForBench) {
      opts.traceFile = traceForBench;
      opts.workloads = [...opts.workloads, "trace"];
    }
    if (o.bench) {
      progress(`[${clock()}] host matrix (${o.full ? "full" : "quick"}): ${opts.workloads.join(", ")}; ${opts.schemes.length} schemes, ${opts.caches.join(" and ")}, ${opts.reps} rounds of ${opts.clusters} clusters${o.qemu ? "; QEMU, refcow and the raw file through NBD; fio" : ""}; the raw file through the ring and pwrite`);
      opts.progress = (m) => progress(`[${clock()}] ${m}`);
      try {
        bench = await runMatrix(opts);
      } catch (e) {
        // The guest runs already taken still go into the report, with the reason the matrix stopped.
        bench.failed.push(failureOf(e, { part: "host matrix", name: "host matrix" }));
      }
      benchStatus = benchExitStatus(bench, (m) => io.err(m));
    }
    bench.failed.unshift(...guestFailed);
    const info = machine(work);
    info.v86 = v86Version();
    if (o.guest && o.emulators.includes("qemu")) {
      try {
        info["qemu-system"] = execFileSync("qemu-system-i386", ["--version"], { encoding: "utf8" }).split("\n")[0]!;
      } catch {
        info["qemu-system"] = "not found";
      }
    }
    if (o.guest) {
      try {
        info.guest = `Linux ${readGuestManifest().kernelRelease} (Debian i386), busybox`;
      } catch {
        /* no manifest: the guest never ran */
      }
    }
    const options = { ...o, bench: o.bench ? { ...opts, progress: undefined, onPhaseBoundary: undefined } : false };
    await writeOutputs(o.out, bench, info, options, guest);
    progress.done();
    io.out(table(bench.rows, bench.fio, bench.missing, bench.failed));
    io.out(`\n${fullAnswer({ ...bench, guest, options })}\n\n`);
    io.out(`${path.join(o.out, "report.html")}\n${path.join(o.out, "report.md")}\n${path.join(o.out, "results.json")}\n`);
  } finally {
    progress.done();
    if (!o.keep) fs.rmSync(work, { recursive: true, force: true });
  }
  const failures = guestFailed.map(failureLine);
  if (benchStatus) failures.push("host matrix: missing or failed sources (see above)");
  if (failures.length) {
    io.err(`refcow: experiment finished with ${failures.length} failure(s) (named in the report with their reasons):\n${failures.map((f) => `  ${f}\n`).join("")}`);
    return 1;
  }
  io.err(`[${clock()}] done\n`);
  return 0;
}
