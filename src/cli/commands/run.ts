/**
 * refcow run — boots the real Linux guest in v86 on a qcow2 image served by refcow from a worker thread,
 * runs a disk workload in it (optionally with a host-driven snapshot in the middle), and prints the
 * per-phase latency of the guest's disk requests and the snapshot's timings. See src/guest/run-workload.ts.
 */
import { writeFileSync } from "node:fs";
import { hasFlag, lastValue, parseArgs } from "../args.js";
import { type CliIo, processIo } from "../command.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { parseCacheMode } from "../open.js";
import { parseSize } from "../sizes.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import { applyNoReflink, NO_REFLINK_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";
import type { CostBreakdown } from "../../engine/types.js";
import type { LatencyColumn } from "../../guest/decomposition.js";
import { ensureGuestImage } from "../../guest/guest-image.js";
import { parseCuts, type LatencyCuts } from "../../guest/latency-cuts.js";
import { DEFAULT_CMDLINE } from "../../guest/guest-runner.js";
import type { PhaseStats } from "../../guest/latency-stats.js";
import { runGuestWorkload, type GuestWorkloadResult } from "../../guest/run-workload.js";
import { WORKLOAD_NAMES } from "../../guest/workloads.js";
import { QEMU_BACKENDS, runQemuGuestWorkload, type QemuBackend, type QemuGuestResult } from "../../guest/qemu-run.js";
import type { QemuAccel } from "../../guest/qemu-machine.js";
import { formatQemuRunResult } from "../qemu-run-output.js";
import { RUN_USAGE, RUN_HELP } from "./run-help.js";

const LONG = [
  { name: "help", arg: false, key: "h" },
  { name: "scheme", arg: true },
  SCHEME_OPT_LONG,
  NO_REFLINK_LONG,
  { name: "workload", arg: true },
  { name: "disk", arg: true },
  { name: "iodepth", arg: true },
  { name: "clusters", arg: true },
  { name: "seed", arg: true },
  { name: "snapshot-at", arg: true },
  { name: "snapshot-name", arg: true },
  { name: "savevm", arg: false },
  { name: "size", arg: true },
  { name: "trace", arg: true },
  { name: "cold", arg: false },
  { name: "memory", arg: true },
  { name: "output", arg: true },
  { name: "json-out", arg: true },
  { name: "cuts", arg: true },
  { name: "kernel-args", arg: true },
  { name: "emulator", arg: true },
  { name: "backend", arg: true },
  { name: "accel", arg: true },
];

function positiveInt(name: string, s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got '${s}'`);
  return n;
}

export async function runCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = io0 ?? processIo;
  const parsed = parseArgs(argv, { short: "ht:", long: LONG });
  if (hasFlag(parsed, "h")) {
    io.out(`usage: refcow ${RUN_USAGE}\n${RUN_HELP}`);
    return 0;
  }
  if (parsed.operands.length !== 1) throw new UsageError("Expecting one image file name");
  const image = parsed.operands[0]!;
  const scheme = lastValue(parsed, "scheme") ?? "eager";
  if (!SCHEME_NAMES.includes(scheme)) throw new UsageError(`unknown refcount scheme '${scheme}' (available: ${SCHEME_NAMES.join(", ")})`);
  const { schemeOptions } = schemeChoice(parsed);
  const cacheArg = lastValue(parsed, "t");
  const cache = cacheArg === undefined ? "writeback" : parseCacheMode(cacheArg);
  const workload = lastValue(parsed, "workload") ?? "smoke";
  if (!(WORKLOAD_NAMES as readonly string[]).includes(workload)) throw new UsageError(`unknown workload '${workload}' (available: ${WORKLOAD_NAMES.join(", ")})`);
  let size: number | undefined;
  const sizeArg = lastValue(parsed, "size");
  if (sizeArg !== undefined) {
    const p = parseSize(sizeArg);
    if (!p.ok || p.value <= 0n || p.value > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`invalid --size '${sizeArg}'`);
    size = Number(p.value);
    if (size % 512 !== 0) throw new UsageError(`--size must be a multiple of 512 bytes (the IDE disk's sector), got ${size}`);
  }
  const disk = lastValue(parsed, "disk") ?? "ide";
  if (disk !== "ide" && disk !== "virtio") throw new UsageError(`--disk must be ide or virtio, got '${disk}'`);
  const iodepth = positiveInt("--iodepth", lastValue(parsed, "iodepth"));
  if (iodepth !== undefined && iodepth > 64) throw new UsageError(`--iodepth must be 1 to 64, got ${iodepth}`);
  const output = lastValue(parsed, "output") ?? "human";
  if (output !== "human" && output !== "json") throw new CliError("--output must be used with human or json as argument.");
  const jsonOut = lastValue(parsed, "json-out");
  const kernelArgs = lastValue(parsed, "kernel-args");
  if (kernelArgs !== undefined && (kernelArgs.trim() === "" || /[\n\r]/.test(kernelArgs))) throw new UsageError("--kernel-args needs one line of kernel arguments");
  let cuts: LatencyCuts;
  try {
    cuts = parseCuts(lastValue(parsed, "cuts") ?? "all");
  } catch (e) {
    throw new UsageError(messageOf(e));
  }

  const emulator = lastValue(parsed, "emulator") ?? "v86";
  if (emulator !== "v86" && emulator !== "qemu") throw new UsageError(`--emulator must be v86 or qemu, got '${emulator}'`);
  const backendArg = lastValue(parsed, "backend");
  const accelArg = lastValue(parsed, "accel");
  if (emulator === "v86") {
    if (backendArg !== undefined || accelArg !== undefined) throw new UsageError("--backend and --accel go with --emulator qemu");
  } else {
    if (backendArg !== undefined && !(QEMU_BACKENDS as readonly string[]).includes(backendArg)) throw new UsageError(`--backend must be one of ${QEMU_BACKENDS.join(", ")}, got '${backendArg}'`);
    if (accelArg !== undefined && !["auto", "kvm", "tcg"].includes(accelArg)) throw new UsageError(`--accel must be auto, kvm or tcg, got '${accelArg}'`);
    for (const v86Only of ["trace", "cuts", "savevm", "cold"]) if (parsed.options.some((o) => o.key === v86Only)) throw new UsageError(`--${v86Only} is not available with --emulator qemu`);
    if ((backendArg ?? "refcow") !== "refcow" && (lastValue(parsed, "scheme") !== undefined || schemeOptions !== undefined)) {
      throw new UsageError(`--scheme is refcow's: --backend ${backendArg} is QEMU's own qcow2 driver`);
    }
    if ((backendArg ?? "refcow") !== "refcow" && hasFlag(parsed, "no-reflink")) throw new UsageError(`--no-reflink is refcow's: --backend ${backendArg} is QEMU's own qcow2 driver`);
  }
  // The image is opened in a worker thread (v86) or by a `refcow nbd` child (QEMU): both inherit it.
  applyNoReflink(hasFlag(parsed, "no-reflink"));

  const tty = Boolean(process.stderr.isTTY) && io === processIo;
  let transientShown = false;
  const onProgress = (message: string, transient?: boolean) => {
    if (tty) {
      if (transient) {
        io.err(`\r\x1b[K${message}`);
        transientShown = true;
        return;
      }
      if (transientShown) io.err("\r\x1b[K");
      transientShown = false;
      io.err(message + "\n");
    } else if (!transient) {
      io.err(message + "\n");
    }
  };

  // Ctrl-C: stop the guest and close the image cleanly rather than leave it open mid-run.
  const interrupt = new AbortController();
  const onSigint = () => {
    if (transientShown) io.err("\r\x1b[K");
    transientShown = false;
    io.err("refcow: interrupted: closing the image...\n");
    interrupt.abort();
  };
  process.once("SIGINT", onSigint);
  let result: GuestWorkloadResult | QemuGuestResult;
  try {
    await ensureGuestImage({ onProgress: (m) => onProgress(`[guest image] ${m}`) }).catch((e: unknown) => {
      throw new Error(`the guest image could not be built (run 'bash guest-images/build.sh' to see why): ${messageOf(e).split("\n")[0]}`);
    });
    // What both emulators take alike.
    const common = {
      signal: interrupt.signal,
      image,
      size,
      schemeOptions,
      cache,
      workload,
      clusters: positiveInt("--clusters", lastValue(parsed, "clusters")),
      seed: positiveInt("--seed", lastValue(parsed, "seed")),
      disk,
      iodepth,
      snapshotAt: lastValue(parsed, "snapshot-at"),
      snapshotName: lastValue(parsed, "snapshot-name"),
      memoryMiB: positiveInt("--memory", lastValue(parsed, "memory")),
      cmdline: kernelArgs === undefined ? undefined : `${DEFAULT_CMDLINE} ${kernelArgs}`,
      onProgress,
    } as const;
    if (emulator === "qemu") {
      const backend = (backendArg ?? "refcow") as QemuBackend;
      result = await runQemuGuestWorkload({ ...common, backend, scheme: backend === "refcow" ? scheme : undefined, accel: accelArg as QemuAccel | undefined });
    } else {
      result = await runGuestWorkload({
        ...common,
        scheme,
        savevm: hasFlag(parsed, "savevm"),
        trace: lastValue(parsed, "trace"),
        warmStart: !hasFlag(parsed, "cold"),
        cuts,
      });
    }
  } catch (e) {
    if (transientShown) io.err("\r\x1b[K");
    if (interrupt.signal.aborted) throw new CliError("run: interrupted; the image was closed", 130);
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw new CliError(`run: ${messageOf(e)}`);
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
  if (transientShown) io.err("\r\x1b[K");
  const json = JSON.stringify(result, null, 2) + "\n";
  if (jsonOut) writeFileSync(jsonOut, json);
  io.out(output === "json" ? json : "emulator" in result ? formatQemuRunResult(result) : formatRunResult(result));
  return 0;
}

const us = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mib = (b: number) => `${(b / 2 ** 20).toFixed(b % 2 ** 20 === 0 ? 0 : 1)} MiB`;

function cells(c: LatencyColumn | undefined): string[] {
  if (!c || c.count === 0) return ["-", "-"];
  return [us(c.median), us(c.p99)];
}

/** The phase's four clocks: median and p99 of app, device, ring and engine, and the emulator's share. */
function decompositionCells(p: PhaseStats): string[] {
  const share = p.emulator_us !== undefined ? us(p.emulator_us) : "-";
  return [...cells(p.app_us), ...cells(p.device_us), ...cells(p.ring_us), ...cells(p.engine_us), share];
}

function table(rows: string[][], rightFrom = 1): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((v, c) => (c < rightFrom ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  ").trimEnd()).join("\n") + "\n";
}

/** Breakdown of the engine's I/O per purpose during a phase: "l2 3w, refcount 1w+1f, ...". */
function costLine(c: CostBreakdown): string {
  const parts: string[] = [];
  for (const [purpose, v] of Object.entries(c)) {
    if (!v || (v.reads === 0 && v.writes === 0 && v.flushes === 0)) continue;
    const ops = [v.reads ? `${v.reads}r` : "", v.writes ? `${v.writes}w` : "", v.flushes ? `${v.flushes}f` : ""].filter(Boolean).join("+");
    parts.push(`${purpose} ${ops} ${(v.timeNs / 1e6).toFixed(1)} ms`);
  }
  return parts.join(", ") || "no I/O";
}

/** The human-readable report of one run. */
export function formatRunResult(r: GuestWorkloadResult): string {
  let out = `${r.workload} on ${r.image}: scheme ${r.scheme}, cache ${r.cache}, ${mib(r.size)}, ${r.clusterSize / 1024} KiB clusters${r.created ? " (created)" : ""}; disk ${r.disk}, iodepth ${r.iodepth}\n`;
  out += `${r.warm ? "warm start" : "cold boot"} to the prompt: ${(r.bootMs / 1000).toFixed(2)} s`;
  if (r.warmStatePreparedMs !== undefined) out += ` (the warm-start state was prepared first: cold boot ${(r.warmStatePreparedMs / 1000).toFixed(1)} s)`;
  if (r.workload === "rand4k" || r.workload === "overwrite") out += `; writes issued by ${r.ioTool === "dd" ? "one busybox dd each" : "refcow-io, back to back"}`;
  out += `; workload ${(r.workloadMs / 1000).toFixed(1)} s; host load ${r.loadAverage.map((x) => x.toFixed(2)).join(" ")}\n\n`;
  const rows: string[][] = [
    ["", "", "", "app µs", "", "device µs", "", "ring µs", "", "engine µs", "", "app−engine", "fdatasync µs", ""],
    ["phase", "op", "count", "median", "p99", "median", "p99", "median", "p99", "median", "p99", "median µs", "app", "engine", "time s", "in flight"],
  ];
  for (const name of r.phaseOrder) {
    const p = r.phases[name]!;
    const count = p.op === "read" ? p.reads.count : p.writes.count;
    const f = p.flush;
    rows.push([
      name,
      p.op ?? "-",
      String(count),
      ...decompositionCells(p),
      f?.app_us?.count ? us(f.app_us.median) : "-",
      f?.engine_us?.count ? us(f.engine_us.median) : "-",
      ((p.durationMs ?? 0) / 1000).toFixed(2),
      String(p.max_in_flight ?? "-"),
    ]);
  }
  rows[0]!.push("", "");
  out += table(rows);
  out +=
    "(app: the guest program's system call, timed in the guest; device: v86's disk request to its completion; ring: the\n" +
    " worker ring's client; engine: the worker's own time. app−engine: the emulator's share of the median)\n";
  const clocks = r.phaseOrder.map((n) => [n, r.phases[n]!.clock] as const).filter(([, c]) => c);
  if (clocks.length) {
    out += `guest clock vs host: ${clocks.map(([n, c]) => `${n} ${c!.driftUs >= 0 ? "+" : ""}${c!.driftUs.toFixed(0)} µs over ${(c!.hostSpanUs / 1e6).toFixed(2)} s (${c!.driftPpm.toFixed(0)} ppm)`).join(", ")}\n`;
  }
  out += r.disk === "virtio" ? `disk: virtio-blk; cuts: ${r.cuts}\n` : `IDE transfer: ${r.transfer.mode}; ${r.transfer.dmaWrites} DMA writes, ${r.transfer.pioWrites} PIO writes; cuts: ${r.cuts}\n`;
  const s = r.snapshot;
  if (s) {
    out += `\nsnapshot '${s.name}' (id ${s.id}) before ${s.phase}: guest paused ${s.pauseMs.toFixed(1)} ms = drain ${s.drainMs.toFixed(1)} + flush ${s.flushMs.toFixed(1)}`;
    if (s.vmStateBytes) out += ` + VM state serialise ${s.vmStateSerializeMs.toFixed(1)}`;
    out += ` + snapshot create ${s.snapshotCreateMs.toFixed(1)} + resume ${s.resumeMs.toFixed(1)} ms\n`;
    out += `  disk snapshot ${s.diskSnapshotMs.toFixed(1)} ms (engine metadata I/O)`;
    out += s.vmStateBytes
      ? `; VM state ${mib(s.vmStateBytes)}: serialise ${s.vmStateSerializeMs.toFixed(1)} ms, write ${s.vmStateWriteMs.toFixed(1)} ms (of which the engine's data I/O ${s.vmStateIoMs.toFixed(1)} ms)\n`
      : " (no VM state: --savevm stores it)\n";
  }
  if (r.engineStats) {
    out += "\nengine I/O per phase:\n";
    for (const name of r.phaseOrder) if (r.engineStats[name]) out += `  ${name}: ${costLine(r.engineStats[name]!)}\n`;
  }
  if (r.trace) out += `\ntrace: ${r.trace.events} events in ${r.trace.file}\n`;
  return out;
}
