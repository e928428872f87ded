/**
 * runGuestWorkload: one run of a guest workload on one image — the programmatic form of `refcow run`, and
 * what the experiment calls once per scheme and cache mode.
 *
 *   import { runGuestWorkload } from "./run-workload.js";   // dist/guest/run-workload.js once built
 *
 *   const r = await runGuestWorkload({
 *     image: "/tmp/eager.qcow2",      // created when missing (qcow2, 64 KiB clusters, `size`)
 *     size: 256 << 20,
 *     scheme: "eager",                // eager | lazy | lazy-count | owner | journal
 *     cache: "writeback",             // writethrough | writeback | unsafe
 *     workload: "rand4k",             // smoke | rand4k | seq | overwrite | fs   (workloads.ts)
 *     clusters: 256,                  // workload scale
 *     snapshotAt: "middle",           // a phase name, "middle" (the workload's), or "none"
 *     savevm: false,                  // store the VM state in the snapshot too
 *     trace: "/tmp/eager.trace",      // write a disk trace (trace.ts)
 *     warmStart: true,                // resume the cached warm-start state (default)
 *     onProgress: (msg, transient) => process.stderr.write(msg + "\n"),
 *   });
 *   r.phases["post-snapshot"].writes.medianUs;   // per phase: reads / writes / flushes → LatencyStats
 *   r.phases["post-snapshot"].app_us?.median;    // the four clocks: app_us, device_us, ring_us, engine_us
 *   r.snapshot?.diskSnapshotMs;                  // drainMs, flushMs, vmStateBytes, vmStateWriteMs, ...
 *   r.engineStats?.["post-snapshot"];            // the engine's per-purpose costs during the phase
 *
 * Stability: the option and result shapes below are the interface the experiment and the report build
 * on; fields may be added, none removed or renamed.
 *
 * What it does: opens a GuestSession (the guest resumes in about 0.3 s), builds the workload for the
 * image's size and cluster size, and runs its phases one guest command each. When the guest announces a
 * phase, the host takes the snapshot if this is the phase to snapshot before, then reads the engine's cost
 * records and starts the phase's clock; when the command ends it stops the clock and reads the records
 * again. Every disk request's latency (submit→complete, as the emulator saw it) is kept with its phase, with
 * its time in the DiskClient and in the engine; the guest program's own timing of each request (refcow-io's
 * REFCOW-IO report) completes the decomposition of the phase (decomposition.ts).
 * The image is closed at the end (clean: `qemu-img check` passes), also when the run fails.
 */
import { existsSync } from "node:fs";
import { loadavg } from "node:os";
import { diffCosts } from "../io/accounting-file.js";
import type { CacheMode, CostBreakdown, ImageOpenOptions } from "../engine/types.js";
import { DEFAULT_CLUSTER_SIZE, DEFAULT_DISK_SIZE, GuestSession, type SnapshotTimings } from "./guest-session.js";
import { decompose } from "./decomposition.js";
import { guestIops, parseGuestIoReports, type GuestIoReport } from "./guest-io-report.js";
import { phaseStats, type PhaseStats } from "./latency-stats.js";
import { traceFromRecords, writeTrace, type TraceSnapshotEvent } from "./trace.js";
import { buildWorkload, type Workload, type WorkloadName } from "./workloads.js";
import { ALL_CUTS, formatCuts, type LatencyCuts } from "./latency-cuts.js";
import type { GuestDiskType } from "./guest-machine.js";
import type { VirtioPhaseSummary } from "./request-recorder.js";
import { EmulatorClock, type EmulatorTime } from "../v86/emulator-clock.js";

/**
 * What a guest run takes under either emulator (QEMU's: qemu-run.ts's QemuGuestOptions). The image's open
 * options are ImageOpenOptions' scheme, scheme options and cache mode (as GuestSession's).
 */
export interface GuestRunOptions extends Pick<ImageOpenOptions, "scheme" | "schemeOptions" | "cache"> {
  /** qcow2 image; created when missing. */
  image: string;
  /** Virtual size in bytes when the image is created (default 256 MiB). */
  size?: number;
  /** Default "smoke". */
  workload?: WorkloadName | string;
  /** Workload scale (see WorkloadParams.clusters). */
  clusters?: number;
  /** Seed of the guest's random orders (default 1). */
  seed?: number;
  /** The guest's disk: v86's IDE (default) or refcow's virtio-blk device. */
  disk?: GuestDiskType;
  /** Requests the guest program keeps in flight (rand4k, overwrite; default 1). */
  iodepth?: number;
  /** Snapshot before this phase; "middle" (default) = the workload's middle; "none" = no snapshot. */
  snapshotAt?: string;
  /**
   * Name of the snapshot. Default "refcow-run", or "refcow-run-2", "-3"... when the image already has one
   * of that name; a name given here must not exist yet.
   */
  snapshotName?: string;
  memoryMiB?: number;
  cmdline?: string;
  /**
   * Aborting stops the run: the guest is stopped and the image closed cleanly, and the call rejects with
   * an Error "interrupted".
   */
  signal?: AbortSignal;
  /** Progress messages; `transient` ones (counters) may overwrite each other on a terminal. */
  onProgress?: (message: string, transient?: boolean) => void;
}

export interface GuestWorkloadOptions extends GuestRunOptions {
  /** Save the VM state in the snapshot (savevm). */
  savevm?: boolean;
  /** Write a disk trace of the workload to this file. */
  trace?: string;
  /** Resume the cached warm-start state (default true); false boots cold. */
  warmStart?: boolean;
  /** Read the engine's cost records around each phase (default true). */
  engineStats?: boolean;
  /** Which cuts of the guest-to-engine delay are on (default all; latency-cuts.ts). */
  cuts?: LatencyCuts;
  /** Charge the emulator thread's time in each phase to categories (EmulatorClock, src/v86/emulator-clock.ts). */
  emulatorTime?: boolean;
}

/** What a guest run reports under either emulator (QEMU's: qemu-run.ts's QemuGuestResult). */
export interface GuestRunSummary {
  image: string;
  scheme: string;
  cache: CacheMode;
  workload: string;
  size: number;
  clusterSize: number;
  /** The image was created by this run. */
  created: boolean;
  /** The guest's disk device. */
  disk: GuestDiskType;
  /** Requests the guest program kept in flight (rand4k, overwrite). */
  iodepth: number;
  /** ms to the command prompt (the warm start, or the cold boot with `warmStart: false`). */
  bootMs: number;
  /** The workload's phases, in order. */
  phaseOrder: string[];
  /**
   * How rand4k and overwrite issued their writes: "refcow-io" (back to back from one guest process) or "dd"
   * (one busybox dd per write, in a guest image built without a C compiler).
   */
  ioTool: "refcow-io" | "dd";
  /** ms from the first phase's start to the last one's end. */
  workloadMs: number;
  /** Host load averages (1, 5, 15 min) at the end: the latencies are host time on a shared machine. */
  loadAverage: number[];
}

export interface GuestWorkloadResult extends GuestRunSummary {
  warm: boolean;
  /** ms of the cold boot that prepared the warm-start state, when it was not cached yet. */
  warmStatePreparedMs?: number;
  phases: Record<string, PhaseStats>;
  /** The snapshot, when one was taken. */
  snapshot?: SnapshotTimings;
  /** The engine's per-purpose costs during each phase (absent when the engine keeps none). */
  engineStats?: Record<string, CostBreakdown>;
  /** FLUSH CACHE commands the guest sent during the workload. */
  guestFlushes: number;
  /**
   * How the guest kernel moves the disk's data: libata's transfer mode of the disk (e.g. "XFER_MW_DMA_2",
   * "XFER_PIO_4"), and the writes v86 handed over as bus-master DMA transfers and through its PIO buffer.
   */
  transfer: { mode: string; dmaWrites: number; pioWrites: number };
  /** The cuts of the guest-to-engine delay that were on ("all", "none" or a list; latency-cuts.ts). */
  cuts: string;
  trace?: { file: string; events: number };
}

/** The phase to snapshot before, or undefined for none. Throws a clear error for an unknown phase. */
export function resolveSnapshotPhase(w: Workload, snapshotAt: string | undefined): string | undefined {
  const at = snapshotAt ?? "middle";
  if (at === "none") return undefined;
  if (at === "middle") return w.middle;
  if (w.phases.some((p) => p.name === at)) return at;
  throw new RangeError(`--snapshot-at '${at}': workload ${w.name} has the phases ${w.phases.map((p) => p.name).join(", ")} (or use 'middle' / 'none')`);
}

export async function runGuestWorkload(o: GuestWorkloadOptions): Promise<GuestWorkloadResult> {
  const progress = o.onProgress ?? (() => undefined);
  // Checked before anything is booted or created.
  const newSize = existsSync(o.image) ? undefined : (o.size ?? DEFAULT_DISK_SIZE);
  const probe = buildWorkload(o.workload ?? "smoke", { diskSize: newSize ?? 1 << 30, clusterSize: DEFAULT_CLUSTER_SIZE, clusters: o.clusters, seed: o.seed, iodepth: o.iodepth });
  if (o.iodepth !== undefined && (!Number.isInteger(o.iodepth) || o.iodepth < 1 || o.iodepth > 64)) throw new RangeError(`--iodepth must be 1 to 64, got ${o.iodepth}`);
  if (resolveSnapshotPhase(probe, o.snapshotAt) === undefined && o.savevm) {
    throw new RangeError("savevm stores the VM state in a snapshot: it cannot go with --snapshot-at none");
  }

  const session = await GuestSession.open({
    image: o.image,
    size: o.size,
    scheme: o.scheme,
    schemeOptions: o.schemeOptions,
    cache: o.cache,
    warmStart: o.warmStart,
    memoryMiB: o.memoryMiB,
    cmdline: o.cmdline,
    cuts: o.cuts,
    diskType: o.disk,
    onProgress: (m) => progress(m),
  });
  const abort = () => void session.close().catch(() => undefined);
  o.signal?.addEventListener("abort", abort, { once: true });
  try {
    if (o.signal?.aborted) throw new Error("interrupted");
    return await runOn(session, o, progress);
  } catch (e) {
    throw o.signal?.aborted ? new Error("interrupted") : e;
  } finally {
    o.signal?.removeEventListener("abort", abort);
    await session.close();
  }
}

/**
 * The run's snapshot name: `wanted` (not empty, not taken), or "refcow-run", "refcow-run-2"... whichever is
 * free among `existing`.
 */
export function runSnapshotName(existing: readonly string[], wanted: string | undefined, image: string): string {
  const names = new Set(existing);
  if (wanted !== undefined) {
    if (!wanted) throw new RangeError("the snapshot name must not be empty");
    if (names.has(wanted)) throw new Error(`${image} already has a snapshot named '${wanted}'`);
    return wanted;
  }
  let name = "refcow-run";
  for (let i = 2; names.has(name); i++) name = `refcow-run-${i}`;
  return name;
}

async function pickSnapshotName(s: GuestSession, wanted: string | undefined): Promise<string> {
  return runSnapshotName((await s.client.snapshotList()).map((sn) => sn.name), wanted, s.image);
}

async function runOn(s: GuestSession, o: GuestWorkloadOptions, progress: (m: string, transient?: boolean) => void): Promise<GuestWorkloadResult> {
  const w = buildWorkload(o.workload ?? "smoke", { diskSize: s.size, clusterSize: s.clusterSize, clusters: o.clusters, seed: o.seed, iodepth: o.iodepth });
  const snapshotPhase = resolveSnapshotPhase(w, o.snapshotAt);
  const wantStats = o.engineStats ?? true;
  const adapter = s.guest.adapter;
  adapter.takeRecords(); // boot / resume requests are not part of the workload
  const snapshotName = snapshotPhase === undefined ? "" : await pickSnapshotName(s, o.snapshotName);

  let expected = "";
  let phaseStart = 0;
  // v86's count of emulated instructions (a u32 that wraps) at the phase's announcement.
  const instructionCount = () => s.guest.v86.get_instruction_counter();
  let instructionsAtStart = 0;
  const instructions: Record<string, number> = {};
  let statsAtStart: CostBreakdown | null = null;
  let snapshot: SnapshotTimings | undefined;
  const snapshotEvents: TraceSnapshotEvent[] = [];
  const durations: Record<string, number> = {};
  const engineStats: Record<string, CostBreakdown> = {};
  let haveStats = wantStats;
  const clock = o.emulatorTime ? new EmulatorClock(s.guest.v86, s.guest.adapter.device) : undefined;
  const emulatorTimes: Record<string, EmulatorTime> = {};

  s.onPhase = async (name) => {
    if (name !== expected) throw new Error(`the guest announced phase '${name}' while '${expected}' was running`);
    if (name === snapshotPhase) {
      const label = `${o.savevm ? "savevm" : "snapshot"} '${snapshotName}' before ${name}`;
      progress(`[run] ${label}...`);
      const at = performance.now();
      snapshot = await s.snapshot(snapshotName, { vmState: o.savevm });
      snapshotEvents.push({ at, name: snapshot.name, phase: name, pauseMs: snapshot.pauseMs });
      progress(`[run] ${label}: guest paused ${snapshot.pauseMs.toFixed(1)} ms`);
    }
    if (haveStats) {
      statsAtStart = await s.engineStats();
      if (statsAtStart === null) haveStats = false;
    }
    phaseStart = performance.now();
    instructionsAtStart = instructionCount();
    clock?.take();
  };

  const ioTool = (await s.guest.run("[ -x /bin/refcow-io ]")).exitCode === 0 ? "refcow-io" : "dd";
  const mode = s.diskType === "virtio" ? "virtio-blk" : (await s.guest.run("cat /sys/class/ata_device/dev1.0/xfer_mode")).output.trim() || "unknown";
  const recorder = adapter.recorder;
  const dmaBefore = recorder.dmaWrites;
  const pioBefore = recorder.pioWrites;
  const reports: Record<string, GuestIoReport[]> = {};
  const flushesBefore = s.guest.guestFlushes;
  const t0 = performance.now();
  for (const [i, ph] of w.phases.entries()) {
    expected = ph.name;
    const label = `[run] phase ${i + 1}/${w.phases.length} ${ph.name}`;
    progress(`${label}: ${ph.description}`);
    const ticker = setInterval(() => {
      if (phaseStart === 0) return;
      const sum = adapter.summary(ph.name);
      progress(`${label}: ${sum.writes} writes, ${sum.reads} reads, ${sum.flushes} flushes, ${((performance.now() - phaseStart) / 1000).toFixed(0)} s`, true);
    }, 1000);
    ticker.unref?.();
    phaseStart = 0;
    try {
      reports[ph.name] = parseGuestIoReports(await s.guest.check(ph.command, { timeoutMs: ph.timeoutMs }));
    } catch (e) {
      throw s.phaseError ?? e;
    } finally {
      clearInterval(ticker);
    }
    const end = performance.now();
    const instructionsAtEnd = instructionCount();
    if (clock) emulatorTimes[ph.name] = clock.take();
    adapter.phase = "idle";
    if (s.phaseError) throw s.phaseError;
    if (phaseStart === 0) throw new Error(`phase ${ph.name}: the guest never announced it (REFCOW-PHASE ${ph.name})`);
    durations[ph.name] = end - phaseStart;
    instructions[ph.name] = (instructionsAtEnd - instructionsAtStart) >>> 0;
    if (haveStats && statsAtStart) {
      const after = await s.engineStats();
      if (after) engineStats[ph.name] = diffCosts(after, statsAtStart);
    }
    const sum = adapter.summary(ph.name);
    progress(`${label}: done in ${(durations[ph.name]! / 1000).toFixed(1)} s (${sum.writes} writes, ${sum.reads} reads, ${sum.flushes} flushes)`);
  }
  const workloadMs = performance.now() - t0;
  clock?.uninstall();

  const phaseOrder = w.phases.map((p) => p.name);
  const records = adapter.takeRecords().filter((r) => phaseOrder.includes(r.phase));
  const phases = phaseStats(records, phaseOrder);
  for (const name of phaseOrder) {
    const p = phases[name]!;
    p.durationMs = durations[name];
    p.guest_instructions = instructions[name];
    const mine = records.filter((r) => r.phase === name);
    const op = p.writes.count > 0 || p.reads.count === 0 ? "write" : "read";
    const d = decompose(mine, reports[name] ?? [], op);
    if (d) Object.assign(p, { op }, d);
    const f = decompose(mine, reports[name] ?? [], "flush");
    if (f) p.flush = f;
    const sum = adapter.summary(name);
    p.max_in_flight = sum.maxInFlight;
    if (emulatorTimes[name]) p.emulator_time = emulatorTimes[name];
    const v = sum as Partial<VirtioPhaseSummary>;
    if (v.interrupts !== undefined) {
      p.interrupts = v.interrupts;
      p.batches = v.batches;
      p.notifies = v.notifies;
    }
    // The guest program's own rate: its requests over the span from the first submission to the last
    // completion, on the guest's clock (the closing fdatasync excluded).
    const gr = (reports[name] ?? []).find((r) => r.op === op);
    const iops = gr && guestIops(gr);
    if (iops !== undefined) p.guest_iops = iops;
  }

  let trace: GuestWorkloadResult["trace"];
  if (o.trace) {
    const t = traceFromRecords(
      {
        size: s.size,
        clusterSize: s.clusterSize,
        created: new Date().toISOString(),
        workload: w.name,
        scheme: s.scheme,
        cache: s.cache,
        phases: phaseOrder,
      },
      records,
      t0,
      snapshotEvents,
    );
    writeTrace(o.trace, t);
    trace = { file: o.trace, events: t.events.length };
    progress(`[run] trace: ${t.events.length} events written to ${o.trace}`);
  }

  const result: GuestWorkloadResult = {
    image: s.image,
    scheme: s.scheme,
    cache: s.cache,
    workload: w.name,
    size: s.size,
    clusterSize: s.clusterSize,
    created: s.created,
    disk: s.diskType,
    iodepth: o.iodepth ?? 1,
    bootMs: s.bootMs,
    warm: s.warm,
    phaseOrder,
    phases,
    ioTool,
    guestFlushes: s.guest.guestFlushes - flushesBefore,
    transfer: { mode, dmaWrites: recorder.dmaWrites - dmaBefore, pioWrites: recorder.pioWrites - pioBefore },
    cuts: formatCuts(o.cuts ?? ALL_CUTS),
    workloadMs,
    loadAverage: loadavg(),
  };
  if (s.warmStatePreparedMs !== undefined) result.warmStatePreparedMs = s.warmStatePreparedMs;
  if (snapshot) result.snapshot = snapshot;
  if (haveStats && Object.keys(engineStats).length > 0) result.engineStats = engineStats;
  if (trace) result.trace = trace;
  return result;
}
