/**
 * GuestSession: the real Linux guest in v86 with its IDE disk on a qcow2 image served by refcow from a worker
 * thread — the image, the emulator and the host-driven operations on both (internal snapshots with or
 * without the VM state, loadvm).
 *
 *   const s = await GuestSession.open({ image: "t.qcow2", scheme: "owner", cache: "writeback" });
 *   await s.guest.check("dd if=/tmp/p of=/dev/sda bs=4096 seek=16 oflag=direct conv=fsync");
 *   const t = await s.snapshot("before", { vmState: true });   // savevm: disk + machine state
 *   await s.guest.check("echo changed > /tmp/x");
 *   await s.loadvm("before");                                   // disk and machine back together
 *   await s.close();                                            // the image is left clean (qemu-img check)
 *
 * Opening: the image is created when missing (qcow2, 64 KiB clusters, `size`), served from a worker of a
 * private pool (piscina) with the chosen refcount scheme and cache mode, and the guest resumes a cached
 * warm-start state (warm-state.ts; prepared with one cold boot when missing) or, with `warmStart: false`,
 * boots cold on the image. After a warm start the guest drops its block-device cache (the state was
 * saved over an empty disk; the image may hold data).
 *
 * Phases: when the guest prints `REFCOW-PHASE <name>` (serial-console.ts), the session labels the disk
 * requests that follow with <name>, awaits `onPhase(name)` while the guest waits, then lets it go on.
 *
 * Snapshot (`snapshot()`), as QEMU's savevm does it, with each step timed:
 *   1. drain:   stop the emulator (the CPU stops at its next slice), wait until the hda queue is empty;
 *   2. flush:   the engine's flush (every acknowledged write durable, whatever the cache mode);
 *   3. (with vmState) v86 save_state(): CPU, RAM and devices, serialised while stopped;
 *   4. create:  DiskClient.snapshotCreate, with the VM state stored in the snapshot's VM-state area (the
 *               engine's cost records around it split its time into disk snapshot and VM state);
 *   5. resume.
 * `loadvm()` stops and drains, reads the snapshot's VM state back (readVmState), applies the snapshot
 * (DiskClient.snapshotApply), restores the emulator from the state and resumes: guest RAM and disk go back to
 * the same instant.
 */
import { existsSync } from "node:fs";
import { createImagePath } from "../open/open-path.js";
import type { CacheMode, CostBreakdown, ImageOpenOptions } from "../engine/types.js";
import { diffCosts } from "../io/accounting-file.js";
import type { DiskClient } from "../worker/disk-client.js";
import { ImagePool, type ServedImageOptions } from "../worker/pool.js";
import { probeQcow2 } from "../v86/qcow2-probe.js";
import { ServedAsyncDisk } from "../worker/served-async-disk.js";
import { emulatorRingClientOptions } from "../v86/emulator-ring-client.js";
import type { GuestImagePaths } from "./guest-image.js";
import { GuestRunner } from "./guest-runner.js";
import type { GuestDiskType } from "./guest-machine.js";
import { ALL_CUTS, SPIN_CAP_CLIENT_US, SPIN_CAP_SERVER_US, type LatencyCuts } from "./latency-cuts.js";
import { PHASE_LINE } from "./serial-console.js";
import { obtainWarmState } from "./warm-state.js";

export const DEFAULT_DISK_SIZE = 256 << 20;
export const DEFAULT_CLUSTER_SIZE = 65536;

/**
 * The image's open options are ImageOpenOptions' (defaults here: scheme "eager", cache "writeback"); the
 * session serves the image read-write in the flush order of its scheme's default.
 */
export interface GuestSessionOptions extends Pick<ImageOpenOptions, "scheme" | "schemeOptions" | "cache"> {
  /** qcow2 image path; created when missing. */
  image: string;
  /** Virtual size when the image is created (default 256 MiB). An existing image keeps its own. */
  size?: number;
  /** Resume the cached warm-start state (default true); false boots cold on the image. */
  warmStart?: boolean;
  /** Guest RAM in MiB (default 128). */
  memoryMiB?: number;
  /** Kernel command line (default DEFAULT_CMDLINE). */
  cmdline?: string;
  /** Guest image files (default .cache/guest of the checkout, or $REFCOW_GUEST_DIR). */
  guestImage?: GuestImagePaths;
  /** Ring and spin settings of the served image (over those the cuts choose). */
  served?: Omit<ServedImageOptions, "scheme" | "cache" | "readOnly" | "format">;
  /** Which cuts of the guest-to-engine delay are on (default all; latency-cuts.ts). */
  cuts?: LatencyCuts;
  /** The guest's disk: v86's IDE (default) or refcow's virtio-blk device. */
  diskType?: GuestDiskType;
  /** Progress lines (booting, snapshots). */
  onProgress?: (message: string) => void;
}

/** How a host-driven snapshot went, in ms (bytes where named so). */
export interface SnapshotTimings {
  name: string;
  id: string;
  /** Stopping the emulator and waiting for the disk requests in flight. */
  drainMs: number;
  /** The engine's flush. */
  flushMs: number;
  /**
   * The disk snapshot: the engine's I/O time (writes and flushes) on everything but guest data during the
   * create request — L1 copy, refcount / owner / journal updates, L2 tables, snapshot table, header. Taken
   * from the engine's cost records, the same way with and without a VM state, so the two compare; with a
   * VM state it also holds the metadata I/O of the VM-state area (its L2 table and refcounts). Falls back
   * to `snapshotCreateMs` when the engine keeps no cost records.
   */
  diskSnapshotMs: number;
  /** The whole create request (wall time, including the VM state when saved). */
  snapshotCreateMs: number;
  /** Size of the VM state saved with it (0 without). */
  vmStateBytes: number;
  /** v86 save_state() while stopped. */
  vmStateSerializeMs: number;
  /**
   * What storing the VM state added to the create request: `snapshotCreateMs - diskSnapshotMs` (copying
   * it through the ring, allocating the VM-state area and writing it); 0 without a VM state.
   */
  vmStateWriteMs: number;
  /** Of vmStateWriteMs: the engine's I/O time writing the VM-state bytes themselves (cost records). */
  vmStateIoMs: number;
  resumeMs: number;
  /** Stop to resume: how long the guest did not run. */
  pauseMs: number;
  /** The phase the guest was in (or "idle" at the prompt). */
  phase: string;
}

export interface LoadvmTimings {
  name: string;
  drainMs: number;
  /** DiskClient.snapshotApply. */
  applyMs: number;
  vmStateBytes: number;
  /** DiskClient.readVmState. */
  vmStateReadMs: number;
  /** v86 restore_state(). */
  restoreMs: number;
  resumeMs: number;
  pauseMs: number;
}

const ms = (t: number) => performance.now() - t;

export class GuestSession {
  readonly guest: GuestRunner;
  readonly client: DiskClient;
  readonly disk: ServedAsyncDisk;
  readonly image: string;
  readonly scheme: string;
  readonly cache: CacheMode;
  /** Virtual disk size in bytes. */
  readonly size: number;
  readonly clusterSize: number;
  readonly diskType: GuestDiskType;
  /** The image was created by this session. */
  readonly created: boolean;
  /** True when the guest resumed a saved state, false after a cold boot. */
  readonly warm: boolean;
  /** ms to the command prompt: the warm start, or the cold boot. */
  readonly bootMs: number;
  /** A cold boot (of this many ms) prepared the warm-start state first; undefined when it was cached. */
  readonly warmStatePreparedMs: number | undefined;
  /**
   * Called when the guest announces a phase, while it waits (the requests it issues next are already
   * labelled with the phase). The guest goes on when the returned promise settles.
   */
  onPhase: ((phase: string) => Promise<void> | void) | undefined;
  /** The first error `onPhase` threw (the guest was let go on anyway). */
  phaseError: Error | undefined;

  private readonly pool: ImagePool;
  private readonly t0 = performance.now();
  private phaseChain: Promise<void> = Promise.resolve();
  private closed = false;
  private closing: Promise<void> | undefined;

  static async open(o: GuestSessionOptions): Promise<GuestSession> {
    const progress = o.onProgress ?? (() => undefined);
    let created = false;
    if (!existsSync(o.image)) {
      const size = o.size ?? DEFAULT_DISK_SIZE;
      createImagePath(o.image, { size, clusterSize: DEFAULT_CLUSTER_SIZE });
      created = true;
      progress(`[run] created ${o.image}: qcow2, ${size} bytes, ${DEFAULT_CLUSTER_SIZE / 1024} KiB clusters`);
    }
    const { clusterSize, size } = probeQcow2(o.image, "refcow run needs qcow2 for its snapshots");
    if (!created && o.size !== undefined && o.size !== size) progress(`[run] ${o.image} exists (${size} bytes): the size asked (${o.size}) does not apply`);
    if (size % 512 !== 0) throw new Error(`'${o.image}' has a virtual size of ${size} bytes, not a multiple of 512: the guest disk cannot use it`);
    const scheme = o.scheme ?? "eager";
    const cache = o.cache ?? "writeback";
    const warmStart = o.warmStart ?? true;
    // Prepare the warm state before the image is opened: its cold boot does not need the image.
    const warmState = warmStart
      ? await obtainWarmState({ diskSize: size, image: o.guestImage, memoryMiB: o.memoryMiB, cmdline: o.cmdline, diskType: o.diskType, onProgress: progress })
      : undefined;
    const pool = new ImagePool();
    let client: DiskClient | undefined;
    let guest: GuestRunner | undefined;
    try {
      const cuts = o.cuts ?? ALL_CUTS;
      // How the client waits for completions: emulator-ring-client.ts.
      const lone = emulatorRingClientOptions(o.diskType ?? "ide");
      const spin: Partial<ServedImageOptions> = cuts.spin ? { client: { sizedSpinCapUs: SPIN_CAP_CLIENT_US, ...lone }, serverSizedSpinCapUs: SPIN_CAP_SERVER_US } : { client: lone };
      client = await pool.open(o.image, { ...spin, ...o.served, scheme, schemeOptions: o.schemeOptions, cache, format: "qcow2" });
      const disk = new ServedAsyncDisk(client.ring);
      let onLine: (line: string) => void = () => undefined;
      guest = await GuestRunner.boot({
        disk,
        image: o.guestImage,
        memoryMiB: o.memoryMiB,
        cmdline: o.cmdline,
        initialState: warmState?.state,
        pollFromRunLoop: cuts.wake,
        adapter: { pollCompletions: cuts.wake, dmaWithoutCopy: cuts.nocopy },
        diskType: o.diskType,
        virtio: { pollCompletions: cuts.wake },
        onProgress: progress,
        onConsoleLine: (line) => onLine(line),
      });
      const session = new GuestSession(o, pool, client, disk, guest, { created, size, clusterSize, scheme, cache, warmStatePreparedMs: warmState?.coldBootMs });
      onLine = (line) => session.consoleLine(line);
      if (session.warm) {
        // The saved guest read the (empty) disk it was booted on; this one may hold data.
        await guest.check("blockdev --flushbufs $DISK && echo 3 > /proc/sys/vm/drop_caches");
      }
      return session;
    } catch (e) {
      await guest?.destroy().catch(() => undefined);
      await pool.destroy().catch(() => undefined);
      throw e;
    }
  }

  private constructor(
    o: GuestSessionOptions,
    pool: ImagePool,
    client: DiskClient,
    disk: ServedAsyncDisk,
    guest: GuestRunner,
    info: { created: boolean; size: number; clusterSize: number; scheme: string; cache: CacheMode; warmStatePreparedMs: number | undefined },
  ) {
    this.image = o.image;
    this.pool = pool;
    this.client = client;
    this.disk = disk;
    this.guest = guest;
    this.created = info.created;
    this.size = info.size;
    this.clusterSize = info.clusterSize;
    this.diskType = o.diskType ?? "ide";
    this.scheme = info.scheme;
    this.cache = info.cache;
    this.warm = guest.warm;
    this.bootMs = guest.readyMs;
    this.warmStatePreparedMs = info.warmStatePreparedMs;
  }

  private consoleLine(line: string): void {
    const m = PHASE_LINE.exec(line);
    if (!m) return;
    const name = m[1]!;
    // Synchronously, from inside the emulator's serial output: nothing of the phase has been issued yet
    // (the guest waits for our reply before its first request).
    this.guest.adapter.phase = name;
    this.phaseChain = this.phaseChain.then(async () => {
      try {
        await this.onPhase?.(name);
      } catch (e) {
        this.phaseError ??= e instanceof Error ? e : new Error(String(e));
      }
      if (!this.closed) this.guest.sendToConsole("\n");
    });
  }

  /** The engine's cumulative cost records (null when the engine keeps none). */
  async engineStats(): Promise<CostBreakdown | null> {
    return ((await this.client.stats()) as CostBreakdown | null) ?? null;
  }

  /**
   * Takes an internal snapshot of the running guest's disk — with its machine state when `vmState` is set
   * (savevm) — pausing the guest meanwhile. Usable at the prompt or from `onPhase` in the middle of a
   * workload command.
   */
  async snapshot(name: string, opts: { vmState?: boolean } = {}): Promise<SnapshotTimings> {
    const phase = this.guest.adapter.phase;
    const t0 = performance.now();
    await this.guest.stop();
    let resumed = false;
    try {
      const drainMs = ms(t0);
      let t = performance.now();
      await this.client.flush();
      const flushMs = ms(t);
      let state: Uint8Array | undefined;
      let vmStateSerializeMs = 0;
      if (opts.vmState) {
        t = performance.now();
        state = new Uint8Array(await this.guest.captureState());
        vmStateSerializeMs = ms(t);
      }
      const before = await this.engineStats();
      t = performance.now();
      const info = await this.client.snapshotCreate(name, {
        vmState: state,
        // QEMU records the guest's virtual clock; v86's guest clock is host time, so: ns this emulator ran.
        vmClockNsec: Math.round((performance.now() - this.t0) * 1e6),
        date: new Date(),
      });
      const snapshotCreateMs = ms(t);
      const after = before ? await this.engineStats() : null;
      let diskSnapshotMs = snapshotCreateMs;
      let vmStateIoMs = 0;
      if (before && after) {
        let metaNs = 0;
        for (const [purpose, c] of Object.entries(diffCosts(after, before))) {
          if (purpose === "guest-data") vmStateIoMs = state ? c!.timeNs / 1e6 : 0;
          else metaNs += c!.timeNs;
        }
        diskSnapshotMs = Math.min(snapshotCreateMs, metaNs / 1e6);
      }
      t = performance.now();
      resumed = true;
      await this.guest.resume();
      const resumeMs = ms(t);
      return {
        name,
        id: info.id,
        drainMs,
        flushMs,
        diskSnapshotMs,
        snapshotCreateMs,
        vmStateBytes: state?.length ?? 0,
        vmStateSerializeMs,
        vmStateWriteMs: state ? snapshotCreateMs - diskSnapshotMs : 0,
        vmStateIoMs,
        resumeMs,
        pauseMs: ms(t0),
        phase,
      };
    } finally {
      // A failed snapshot leaves the guest running on its disk as it was.
      if (!resumed) await this.guest.resume();
    }
  }

  /**
   * loadvm: applies snapshot `name` to the disk and restores the machine state saved with it. Call it
   * between commands; the guest continues from the instant of the savevm (at the prompt, if it was taken
   * there). Refused, with nothing changed, when the snapshot has no VM state.
   */
  async loadvm(name: string): Promise<LoadvmTimings> {
    const list = await this.client.snapshotList();
    const sn = list.find((s) => s.id === name) ?? list.find((s) => s.name === name);
    if (!sn) throw new Error(`loadvm: no snapshot '${name}' in ${this.image}`);
    if (!sn.vmStateSize) throw new Error(`loadvm: snapshot '${name}' has no VM state (it was taken without savevm); apply it with 'refcow snapshot -a'`);
    const t0 = performance.now();
    await this.guest.stop();
    const drainMs = ms(t0);
    let t = performance.now();
    let applyMs: number;
    let blob: Uint8Array;
    let vmStateReadMs: number;
    try {
      // The VM state first: if it cannot be read, nothing has changed yet.
      blob = await this.client.readVmState(sn.id);
      vmStateReadMs = ms(t);
      t = performance.now();
      await this.client.snapshotApply(sn.id);
      applyMs = ms(t);
    } catch (e) {
      // The machine state was not touched: let the guest go on (on its disk, unless the apply got through).
      await this.guest.resume();
      throw e;
    }
    t = performance.now();
    const buffer = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength ? (blob.buffer as ArrayBuffer) : blob.slice().buffer;
    await this.guest.restoreCapturedState(buffer);
    const restoreMs = ms(t);
    t = performance.now();
    await this.guest.resume();
    const resumeMs = ms(t);
    return { name, drainMs, applyMs, vmStateBytes: blob.length, vmStateReadMs, restoreMs, resumeMs, pauseMs: ms(t0) };
  }

  /**
   * Stops the guest, closes the image (flushing it: it is left clean) and the worker pool. Idempotent: every
   * call resolves when the one close is done. A command running in the guest fails with "guest destroyed".
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      let first: unknown;
      for (const step of [() => this.guest.destroy(), () => this.client.close(), () => this.pool.destroy()]) {
        try {
          await step();
        } catch (e) {
          first ??= e;
        }
      }
      if (first) throw first;
    })();
    return this.closing;
  }
}
