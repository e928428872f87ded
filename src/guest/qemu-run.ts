/**
 * runQemuGuestWorkload: one run of a guest workload under QEMU (`refcow run --emulator qemu`) — the same
 * kernel, initramfs, guest program, workloads (workloads.ts, their warm-up writes included) and mid-run
 * snapshot as the v86 runs of run-workload.ts, on the same disk types, so that the guest's own per-phase
 * figures compare across emulators.
 *
 *   const r = await runQemuGuestWorkload({ image: "/tmp/q.qcow2", backend: "qemu-lazy", workload: "rand4k", clusters: 64 });
 *   r.phases["post-snapshot"].app_us?.median;   // the guest program's own write latency, µs
 *
 * Backends (the image's block driver under the guest's disk):
 *
 *   qemu        QEMU's qcow2 driver, the drive's cache mode = `cache`
 *   qemu-lazy   the same with lazy_refcounts=on (image created with it; the drive opened with it)
 *   refcow      `refcow nbd --scheme S --cache=C --monitor SOCK` in a child process (refcow-nbd-process.ts),
 *               reached through QEMU's nbd driver, which passes the guest's flushes on
 *
 * The snapshot: just before the phase to snapshot (the guest waits at its REFCOW-PHASE announcement, no
 * request in flight), an internal snapshot of the live disk — over QMP `blockdev-snapshot-internal-sync` for
 * the qemu backends, through the export's control socket (`snapshot -c NAME`) for refcow. No VM state.
 *
 * What is measured: the guest program's own clock (refcow-io's REFCOW-IO reports: every write's system call
 * and the closing fdatasync), and the host's wall time of each phase. QEMU has no per-request hook, so
 * there are no device, ring or engine clocks here. QEMU boots cold every run (about 7 s under TCG).
 * QEMU quits through QMP at the end, closing the image cleanly (and refcow nbd with it), also on failure.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadavg } from "node:os";
import { createImagePath } from "../open/open-path.js";
import { monitorCommand } from "../nbd/monitor-socket.js";
import { column, type LatencyColumn } from "./decomposition.js";
import { guestIops, parseGuestIoReports, type GuestIoReport } from "./guest-io-report.js";
import { DEFAULT_CLUSTER_SIZE, DEFAULT_DISK_SIZE } from "./guest-session.js";
import { QEMU_DRIVE_ID, QemuMachine, type QemuAccel, type QemuDrive } from "./qemu-machine.js";
import { RefcowNbdProcess } from "./refcow-nbd-process.js";
import { resolveSnapshotPhase, runSnapshotName, type GuestRunOptions, type GuestRunSummary } from "./run-workload.js";
import { PHASE_LINE } from "./serial-console.js";
import { buildWorkload } from "./workloads.js";

export const QEMU_BACKENDS = ["qemu", "qemu-lazy", "refcow"] as const;
export type QemuBackend = (typeof QEMU_BACKENDS)[number];

/** As run-workload.ts's, the image created with 64 KiB clusters; `scheme` is refcow's (backend refcow only). */
export interface QemuGuestOptions extends GuestRunOptions {
  backend: QemuBackend;
  accel?: QemuAccel;
}

export interface QemuPhaseStats {
  /** The kind of request the phase is about ("write" for the write workloads). */
  op: "write" | "read";
  /** Requests of that kind the guest program timed (0 when the phase does not run it: dd, mkfs...). */
  count: number;
  /** The guest program's system call per request, µs (its own CLOCK_MONOTONIC). */
  app_us?: LatencyColumn;
  /** Its closing fdatasync, µs. */
  flush_app_us?: LatencyColumn;
  /** Host wall time from the guest's announcement of the phase to its end (fsync included), ms. */
  durationMs: number;
  /** The program's requests per second of guest time, first submission to last completion. */
  guest_iops?: number;
}

export interface QemuSnapshotTiming {
  name: string;
  /** The phase it was taken before. */
  phase: string;
  /** "qmp" (blockdev-snapshot-internal-sync) or "monitor" (refcow nbd's control socket). */
  via: "qmp" | "monitor";
  /** From the request to its answer, ms: how long the waiting guest was held. */
  createMs: number;
}

/** `scheme` is refcow's, or the backend's name for QEMU's own driver ("qemu", "qemu-lazy"); `bootMs` a cold boot. */
export interface QemuGuestResult extends GuestRunSummary {
  emulator: "qemu";
  backend: QemuBackend;
  /** "kvm", "tcg", or "tcg (kvm failed: ...)". */
  accel: string;
  qemuVersion: string;
  phases: Record<string, QemuPhaseStats>;
  snapshot?: QemuSnapshotTiming;
}

/** Creates the image for the backend when missing; says whether it did. */
function prepareImage(o: QemuGuestOptions): boolean {
  if (fs.existsSync(o.image)) return false;
  const size = o.size ?? DEFAULT_DISK_SIZE;
  if (o.backend === "refcow") {
    createImagePath(o.image, { size, clusterSize: DEFAULT_CLUSTER_SIZE });
  } else {
    const lazy = o.backend === "qemu-lazy" ? "on" : "off";
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `cluster_size=${DEFAULT_CLUSTER_SIZE},lazy_refcounts=${lazy}`, o.image, String(size)], { stdio: ["ignore", "ignore", "pipe"] });
  }
  return true;
}

/** The image's virtual size, cluster size and snapshot names, as qemu-img info reports them. */
function imageInfo(image: string): { size: number; clusterSize: number; snapshots: string[] } {
  const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-U", image], { encoding: "utf8" })) as {
    format: string;
    "virtual-size": number;
    "cluster-size"?: number;
    snapshots?: { name: string }[];
  };
  if (info.format !== "qcow2") throw new Error(`${image} is ${info.format}, not qcow2`);
  return { size: info["virtual-size"], clusterSize: info["cluster-size"] ?? DEFAULT_CLUSTER_SIZE, snapshots: (info.snapshots ?? []).map((s) => s.name) };
}

export async function runQemuGuestWorkload(o: QemuGuestOptions): Promise<QemuGuestResult> {
  const progress = o.onProgress ?? (() => undefined);
  if (!(QEMU_BACKENDS as readonly string[]).includes(o.backend)) throw new RangeError(`unknown backend '${o.backend}' (available: ${QEMU_BACKENDS.join(", ")})`);
  if (o.backend !== "refcow" && (o.scheme !== undefined || o.schemeOptions !== undefined)) {
    throw new RangeError(`--scheme is refcow's: the ${o.backend} backend is QEMU's own qcow2 driver`);
  }
  if (o.iodepth !== undefined && (!Number.isInteger(o.iodepth) || o.iodepth < 1 || o.iodepth > 64)) throw new RangeError(`--iodepth must be 1 to 64, got ${o.iodepth}`);
  const cache = o.cache ?? "writeback";
  const disk = o.disk ?? "ide";
  // The workload is built (and its options checked) before anything is created or started.
  buildWorkload(o.workload ?? "smoke", { diskSize: fs.existsSync(o.image) ? 1 << 30 : (o.size ?? DEFAULT_DISK_SIZE), clusterSize: DEFAULT_CLUSTER_SIZE, clusters: o.clusters, seed: o.seed, iodepth: o.iodepth });
  const created = prepareImage(o);
  const info = imageInfo(o.image);
  const w = buildWorkload(o.workload ?? "smoke", { diskSize: info.size, clusterSize: info.clusterSize, clusters: o.clusters, seed: o.seed, iodepth: o.iodepth });
  const snapshotPhase = resolveSnapshotPhase(w, o.snapshotAt);
  const snapshotName = snapshotPhase === undefined ? "" : runSnapshotName(info.snapshots, o.snapshotName, o.image);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-qemu-"));
  let server: RefcowNbdProcess | undefined;
  let machine: QemuMachine | undefined;
  let onLine: (line: string) => void = () => undefined;
  // Interrupted: QEMU quits over QMP (closing the image cleanly); the command being waited for then fails.
  const abort = () => void machine?.quit(30_000).catch(() => machine?.kill());
  o.signal?.addEventListener("abort", abort, { once: true });
  try {
    let drive: QemuDrive;
    if (o.backend === "refcow") {
      progress(`[run] refcow nbd --scheme ${o.scheme ?? "eager"} --cache=${cache} --monitor serving ${o.image}`);
      server = await RefcowNbdProcess.start({ image: o.image, dir, cache, scheme: o.scheme ?? "eager", schemeOptions: o.schemeOptions });
      drive = { kind: "nbd", socket: server.socket };
    } else {
      drive = { kind: "file", path: path.resolve(o.image), cache, lazyRefcounts: o.backend === "qemu-lazy" };
    }
    machine = await QemuMachine.boot({
      drive,
      diskType: disk,
      workDir: dir,
      memoryMiB: o.memoryMiB,
      cmdline: o.cmdline,
      accel: o.accel,
      onConsoleLine: (line) => onLine(line),
      onProgress: (m) => progress(m),
    });
    if (o.signal?.aborted) throw new Error("interrupted");
    const m = machine;

    let expected = "";
    let phaseStart = 0;
    let phaseError: Error | undefined;
    let snapshot: QemuSnapshotTiming | undefined;
    let chain: Promise<void> = Promise.resolve();
    const takeSnapshot = async (phase: string): Promise<QemuSnapshotTiming> => {
      const t0 = performance.now();
      if (server) {
        const a = await monitorCommand(server.monitor, `snapshot -c ${snapshotName}`);
        if (a.error) throw new Error(`refcow nbd --monitor: snapshot -c ${snapshotName}: ${a.error}`);
      } else {
        await m.qmp.execute("blockdev-snapshot-internal-sync", { device: QEMU_DRIVE_ID, name: snapshotName });
      }
      return { name: snapshotName, phase, via: server ? "monitor" : "qmp", createMs: performance.now() - t0 };
    };
    onLine = (line) => {
      const pm = PHASE_LINE.exec(line);
      if (!pm) return;
      const name = pm[1]!;
      chain = chain.then(async () => {
        try {
          if (name !== expected) throw new Error(`the guest announced phase '${name}' while '${expected}' was running`);
          if (name === snapshotPhase) {
            progress(`[run] snapshot '${snapshotName}' before ${name}...`);
            snapshot = await takeSnapshot(name);
            progress(`[run] snapshot '${snapshotName}' before ${name}: ${snapshot.createMs.toFixed(1)} ms (${snapshot.via})`);
          }
        } catch (e) {
          phaseError ??= e instanceof Error ? e : new Error(String(e));
        }
        phaseStart = performance.now();
        m.send("\n");
      });
    };

    const ioTool = (await m.run("[ -x /bin/refcow-io ]")).exitCode === 0 ? "refcow-io" : "dd";
    const reports: Record<string, GuestIoReport[]> = {};
    const durations: Record<string, number> = {};
    const t0 = performance.now();
    for (const [i, ph] of w.phases.entries()) {
      expected = ph.name;
      phaseStart = 0;
      progress(`[run] phase ${i + 1}/${w.phases.length} ${ph.name}: ${ph.description}`);
      reports[ph.name] = parseGuestIoReports(await m.check(ph.command, { timeoutMs: ph.timeoutMs }));
      const end = performance.now();
      if (phaseError) throw phaseError;
      if (phaseStart === 0) throw new Error(`phase ${ph.name}: the guest never announced it (REFCOW-PHASE ${ph.name})`);
      durations[ph.name] = end - phaseStart;
      progress(`[run] phase ${i + 1}/${w.phases.length} ${ph.name}: done in ${(durations[ph.name]! / 1000).toFixed(1)} s`);
    }
    const workloadMs = performance.now() - t0;

    const phaseOrder = w.phases.map((p) => p.name);
    const phases: Record<string, QemuPhaseStats> = {};
    for (const name of phaseOrder) phases[name] = phaseFromReports(reports[name] ?? [], durations[name]!);
    const code = await m.quit();
    machine = undefined;
    if (code !== 0) throw new Error(`QEMU exited with status ${code} after 'quit'`);
    await server?.stopped();
    server = undefined;
    const result: QemuGuestResult = {
      emulator: "qemu",
      backend: o.backend,
      accel: m.accel,
      qemuVersion: m.qmp.version,
      image: o.image,
      scheme: o.backend === "refcow" ? (o.scheme ?? "eager") : o.backend,
      cache,
      workload: w.name,
      size: info.size,
      clusterSize: info.clusterSize,
      created,
      disk,
      iodepth: o.iodepth ?? 1,
      bootMs: m.readyMs,
      phaseOrder,
      phases,
      ioTool,
      workloadMs,
      loadAverage: loadavg(),
    };
    if (snapshot) result.snapshot = snapshot;
    return result;
  } catch (e) {
    throw o.signal?.aborted ? new Error("interrupted") : e;
  } finally {
    o.signal?.removeEventListener("abort", abort);
    // A failed run still closes the image cleanly: QEMU quits (closing its drive), then refcow nbd ends.
    if (machine) await machine.quit(30_000).catch(() => machine?.kill());
    if (server) await server.stopped(10_000).catch(() => server?.kill());
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A phase's figures from the guest program's reports: the write (or read) calls and the closing fdatasync. */
export function phaseFromReports(reports: readonly GuestIoReport[], durationMs: number): QemuPhaseStats {
  const us = (op: GuestIoReport["op"]) => reports.filter((r) => r.op === op).flatMap((r) => r.latenciesNs.map((ns) => ns / 1000));
  const writes = us("write");
  const reads = us("read");
  const op = writes.length > 0 || reads.length === 0 ? "write" : "read";
  const mine = op === "write" ? writes : reads;
  const p: QemuPhaseStats = { op, count: mine.length, durationMs };
  if (mine.length) p.app_us = column(mine);
  const flushes = us("fdatasync");
  if (flushes.length) p.flush_app_us = column(flushes);
  const gr = reports.find((r) => r.op === op);
  const iops = gr && guestIops(gr);
  if (iops !== undefined) p.guest_iops = iops;
  return p;
}
