/**
 * BootSession: an installed OS booting from its own disk image — the image served by refcow from a worker
 * thread, a DiskBootMachine (disk-boot-machine.ts) on it — and what a person at the machine's monitor does
 * with both: savevm / loadvm / delvm (internal snapshots with the machine state), stop / cont, and a clean
 * close.
 *
 *   const s = await BootSession.open({ image: "os.qcow2", diskType: "virtio", onSerial, onPowerOff, ... });
 *   s.machine.sendSerial(keys);
 *   await s.savevm("before");  ...  await s.loadvm("before");
 *   await s.close();            // quiesced, flushed, closed: qemu-img check clean
 *
 * Opening: the image is probed (qcow2 or raw) and opened by the worker before the emulator exists, so a
 * corrupt or unsupported image is one error and nothing boots. With `snapshotMode` (QEMU's -snapshot) a
 * qcow2 overlay backed by the image is made in a temporary folder and opened instead: the guest's writes
 * (and savevm's snapshots) go there and are dropped with it at close; the image is only read. With
 * `loadvm` the snapshot's disk is applied and the machine resumes its saved state instead of booting.
 *
 * savevm, as QEMU's: stop the CPU and wait for the disk's requests (quiesce), flush, save the machine
 * state, create the snapshot with the state in its VM-state area (replacing one of the same name), resume
 * unless the machine was stopped. loadvm: stop, read the snapshot's VM state (nothing is changed if that
 * fails), apply the snapshot to the disk, restore the state, resume.
 *
 * commit (Ctrl-A s), as QEMU's bdrv_commit for -snapshot: stop the CPU and wait for the disk, close the
 * overlay, write what it holds into the image (src/open/commit.ts), make the overlay empty again (unless it
 * holds savevm's snapshots: then it is kept, reading the same), open it again under the same device,
 * resume. Without -snapshot it flushes the image.
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Qcow2Image } from "../open/qcow2.js";
import { commitOverlay } from "../open/commit.js";
import { probeFormat } from "../open/open-path.js";
import { backingNameFor, describeImage, ensureOverlay } from "../open/persistent-overlay.js";
import { isHttpUrl } from "../io/http-object.js";
import type { CacheMode, SchemeOptionValues, SnapshotInfo } from "../engine/types.js";
import { NodeFile } from "../io/node-file.js";
import type { DiskClient } from "../worker/disk-client.js";
import { ImagePool, type ServedImageOptions } from "../worker/pool.js";
import { checkSettings, DiskBootMachine } from "./disk-boot-machine.js";
import { chooseWasmTiering, wasmTieringLoaded } from "./wasm-tiering.js";
import { splitMachineState } from "./machine-state.js";
import { probeQcow2 } from "./qcow2-probe.js";
import { ReopenableZeroingDisk } from "./reopenable-disk.js";
import { withDeviceCaches, RefcowV86Disk } from "./v86-disk.js";
import type { DiskDevice } from "./disk-device.js";
import { HdaAdapter } from "./hda-adapter.js";
import { emulatorRingClientOptions } from "./emulator-ring-client.js";

export type BootDiskType = "ide" | "virtio";

export interface BootSessionOptions {
  image: string;
  diskType: BootDiskType;
  cache: CacheMode;
  scheme: string;
  schemeOptions?: SchemeOptionValues;
  memoryMiB: number;
  /** Writes go to a temporary overlay, dropped at close (QEMU's -snapshot). */
  snapshotMode?: boolean;
  /**
   * Writes go to this qcow2 overlay over the image, made on first use and reused after (the image, a file
   * or an http(s) URL, is only read).
   */
  overlay?: string;
  /** Start from this snapshot (its disk and machine state) instead of booting. */
  loadvm?: string;
  /** The disk device's caches (`withDeviceCaches`, v86-disk.ts: the write cache in writeback, read-ahead); default true. */
  writeCache?: boolean;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  wasmPath: string;
  onProgress?: (message: string) => void;
  onSerial?: (bytes: Uint8Array) => void;
  onBiosLine?: (line: string) => void;
  onNoBootableDevice?: (line: string) => void;
  onPowerOff?: () => void;
}

export interface BlockInfo {
  device: string;
  file: string;
  format: "qcow2" | "raw";
  cache: CacheMode;
  scheme: string;
  size: number;
  /** -snapshot: the image the temporary overlay reads from. */
  backingFile?: string;
}

export class BootSession {
  readonly machine: DiskBootMachine;
  readonly block: BlockInfo;
  private readonly disk: ReopenableZeroingDisk;
  /** The guest's disk device (IDE adapter or virtio-blk), for an observer or instrumentation. */
  readonly device: DiskDevice;
  private closing: Promise<void> | undefined;

  static async open(o: BootSessionOptions): Promise<BootSession> {
    chooseWasmTiering();
    const progress = o.onProgress ?? (() => undefined);
    if (o.overlay !== undefined && o.snapshotMode) throw new Error("--overlay keeps the guest's writes and -snapshot drops them: give one of them");
    const remote = isHttpUrl(o.image);
    if (remote && o.overlay === undefined && !o.snapshotMode) {
      throw new Error(`${o.image} is a remote image, read-only: boot it with --overlay FILE (the guest's writes kept there) or -snapshot (dropped at exit)`);
    }
    let format: "qcow2" | "raw";
    let size: number;
    let served = o.image;
    if (o.overlay !== undefined) {
      const kept = ensureOverlay(o.image, o.overlay);
      ({ format, size } = kept);
      served = o.overlay;
      progress(kept.created ? `made the overlay ${o.overlay} over ${o.image}: the guest's writes stay there` : `reusing the overlay ${o.overlay} over ${o.image}`);
    } else if (remote) {
      ({ format, size } = describeImage(o.image));
    } else {
      format = probeFormat(o.image);
      if (format === "qcow2") size = probeQcow2Clean(o.image).size;
      else size = statSync(o.image).size;
    }
    if (size % 512 !== 0) throw new Error(`'${o.image}' has a virtual size of ${size} bytes, not whole 512-byte sectors: a disk cannot use it`);
    let overlayDir: string | undefined;
    if (o.snapshotMode) {
      overlayDir = mkdtempSync(path.join(os.tmpdir(), "refcow-boot-"));
      served = path.join(overlayDir, "overlay.qcow2");
      createOverlay(served, size, o.image, format);
      progress(`writes go to a temporary overlay (${served}), dropped at exit`);
    }
    const pool = new ImagePool();
    let client: DiskClient | undefined;
    try {
      // How the client waits for completions: emulator-ring-client.ts.
      const lone = emulatorRingClientOptions(o.diskType);
      const overlaid = overlayDir !== undefined || o.overlay !== undefined;
      const openOptions: ServedImageOptions = { scheme: o.scheme, schemeOptions: o.schemeOptions, cache: o.cache, format: overlaid ? "qcow2" : format, client: lone };
      client = await pool.open(served, openOptions);
      let initialState: ArrayBuffer | undefined;
      if (o.loadvm !== undefined) {
        if (format !== "qcow2" && !overlaid) throw new Error(`--loadvm: '${o.image}' is a raw image: it has no snapshots`);
        const sn = findSnapshot(await client.snapshotList(), o.loadvm);
        if (!sn) throw new Error(`Snapshot '${o.loadvm}' does not exist in ${o.image}`);
        if (!sn.vmStateSize) throw new Error(`snapshot '${o.loadvm}' is a disk-only snapshot (no VM state): revert to it offline with 'refcow snapshot -a'`);
        progress(`loading snapshot '${sn.name}' (${(sn.vmStateSize / 2 ** 20).toFixed(1)} MiB of machine state)...`);
        const blob = await client.readVmState(sn.id);
        await client.snapshotApply(sn.id);
        initialState = ownBuffer(blob);
      }
      const session = new BootSession(o, pool, client, openOptions, overlayDir, { format, size, served }, initialState);
      await session.machine.loaded;
      wasmTieringLoaded();
      return session;
    } catch (e) {
      await client?.close().catch(() => undefined);
      await pool.destroy().catch(() => undefined);
      if (overlayDir) rmSync(overlayDir, { recursive: true, force: true });
      throw e;
    }
  }

  private constructor(
    private readonly o: BootSessionOptions,
    private readonly pool: ImagePool,
    private client: DiskClient,
    private readonly openOptions: ServedImageOptions,
    private readonly overlayDir: string | undefined,
    private readonly info: { format: "qcow2" | "raw"; size: number; served: string },
    initialState: ArrayBuffer | undefined,
  ) {
    this.disk = new ReopenableZeroingDisk(client);
    const disk = new RefcowV86Disk(this.disk, o.writeCache === false ? { type: o.diskType } : withDeviceCaches({ type: o.diskType }, o.cache));
    this.device = disk.device;
    this.block = {
      device: o.diskType === "virtio" ? "virtio0" : "ide0-hd0",
      file: info.served,
      format: overlayDir || o.overlay !== undefined ? "qcow2" : info.format,
      cache: o.cache,
      scheme: o.scheme,
      size: info.size,
      backingFile: overlayDir || o.overlay !== undefined ? backingNameFor(o.image) : undefined,
    };
    this.machine = new DiskBootMachine({
      disk,
      firmware: o.firmware,
      wasmPath: o.wasmPath,
      memoryMiB: o.memoryMiB,
      initialState,
      onSerial: o.onSerial,
      onBiosLine: o.onBiosLine,
      onNoBootableDevice: o.onNoBootableDevice,
      onPowerOff: o.onPowerOff,
    });
  }

  /** The disk has snapshots (qcow2, or the -snapshot overlay). */
  get snapshotsSupported(): boolean {
    return this.block.format === "qcow2";
  }

  async snapshots(): Promise<SnapshotInfo[]> {
    return this.snapshotsSupported ? this.client.snapshotList() : [];
  }

  /** QEMU's savevm: the disk and the machine state, as snapshot `name` (one of that name is replaced). */
  async savevm(name: string): Promise<SnapshotInfo> {
    this.needSnapshots();
    const wasStopped = this.machine.stopped;
    await this.machine.stop();
    try {
      await this.client.flush();
      const state = new Uint8Array(await this.machine.saveState());
      for (const old of (await this.client.snapshotList()).filter((s) => s.name === name)) await this.client.snapshotDelete(old.id);
      return await this.client.snapshotCreate(name, { vmState: state, vmClockNsec: Math.round(this.machine.runMs * 1e6), date: new Date() });
    } finally {
      if (!wasStopped) await this.machine.cont();
    }
  }

  /** QEMU's loadvm: disk and machine back to snapshot `name` (id or name). */
  async loadvm(name: string): Promise<void> {
    this.needSnapshots();
    const sn = findSnapshot(await this.client.snapshotList(), name);
    if (!sn) throw new Error(`Snapshot '${name}' does not exist in one or more devices`);
    if (!sn.vmStateSize) throw new Error("This is a disk-only snapshot. Revert to it offline using qemu-img");
    const wasStopped = this.machine.stopped;
    await this.machine.stop();
    let blob: Uint8Array;
    try {
      blob = await this.client.readVmState(sn.id);
      const state = ownBuffer(blob);
      // Refused here, before the disk changes, when the state is not one this machine can take.
      checkSettings(splitMachineState(state).machine, this.machine.settings);
      await this.client.snapshotApply(sn.id);
      await this.machine.restoreState(state);
    } finally {
      if (!wasStopped) await this.machine.cont();
    }
  }

  /** QEMU's delvm. */
  async delvm(name: string): Promise<void> {
    this.needSnapshots();
    const sn = findSnapshot(await this.client.snapshotList(), name);
    if (!sn) throw new Error(`Could not delete snapshot '${name}' on '${this.block.device}': Can't find the snapshot`);
    await this.client.snapshotDelete(sn.id);
  }

  /** The engine's flush, after every write the guest has seen complete (the IDE write cache's too). */
  async flush(): Promise<void> {
    await this.guestWritesSettled();
    await this.client.flush();
  }

  private async guestWritesSettled(): Promise<void> {
    if (this.device instanceof HdaAdapter) await this.device.settled();
  }

  /**
   * Ctrl-A s: with -snapshot, the overlay's data written back into the image (see the top); returns the
   * bytes committed. Without -snapshot, a flush (0 bytes).
   */
  async commit(): Promise<number> {
    if (!this.overlayDir) {
      await this.flush();
      return 0;
    }
    const wasStopped = this.machine.stopped;
    await this.machine.stop();
    try {
      const keepOverlay = (await this.client.snapshotList()).length > 0;
      await this.disk.detach();
      let committed: number;
      try {
        committed = commitOverlay(this.info.served, path.resolve(this.o.image), this.info.format).bytes;
        if (!keepOverlay) createOverlay(this.info.served, this.info.size, this.o.image, this.info.format);
      } finally {
        // The overlay opened again whatever happened: committed and emptied, or as it was.
        this.client = await this.pool.open(this.info.served, this.openOptions);
        this.disk.attach(this.client);
      }
      return committed;
    } finally {
      if (!wasStopped) await this.machine.cont();
    }
  }

  /**
   * Stops the machine (its disk requests complete), frees the emulator, closes the image (flushed and
   * marked clean) and the worker, and removes -snapshot's overlay. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      let first: unknown;
      for (const step of [() => this.machine.destroy(), () => this.client.close(), () => this.pool.destroy()]) {
        try {
          await step();
        } catch (e) {
          first ??= e;
        }
      }
      if (this.overlayDir) rmSync(this.overlayDir, { recursive: true, force: true });
      if (first) throw first;
    })();
    return this.closing;
  }

  private needSnapshots(): void {
    if (!this.snapshotsSupported) throw new Error(`Device '${this.block.device}' is writable but does not support snapshots (a raw image)`);
  }
}

/** A new qcow2 overlay at `file` (replacing one there) over `image`, the same size. */
function createOverlay(file: string, size: number, image: string, format: "qcow2" | "raw"): void {
  const bf = NodeFile.open(file, { create: true });
  try {
    Qcow2Image.create(bf, { size, backingFile: backingNameFor(image), backingFormat: format });
  } finally {
    bf.close();
  }
}

/** By id first, then by name (QEMU's bdrv_snapshot_find). */
export function findSnapshot(list: readonly SnapshotInfo[], idOrName: string): SnapshotInfo | undefined {
  return list.find((s) => s.id === idOrName) ?? list.find((s) => s.name === idOrName);
}

/** probeQcow2 with the file named first in every error. */
function probeQcow2Clean(file: string): { clusterSize: number; size: number } {
  try {
    return probeQcow2(file);
  } catch (e) {
    throw new Error(`'${file}': ${e instanceof Error ? e.message : String(e)}`);
  }
}

function ownBuffer(b: Uint8Array): ArrayBuffer {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? (b.buffer as ArrayBuffer) : (b.slice().buffer as ArrayBuffer);
}
