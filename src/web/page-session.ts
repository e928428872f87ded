/**
 * One guest on one image: the engine serving an OPFS file from the Web Worker, the guest booted on it, and
 * the operations the page offers — snapshots with the guest's VM state, download (the image closed cleanly,
 * so it is plain qcow2), reopening with another refcount scheme or cache mode.
 *
 * Operations that need the guest stopped run one at a time: pause (CPU stopped, disk queue drained), act on
 * the image, resume. Snapshots store v86's machine state as the snapshot's VM state (as `savevm` does), so
 * applying one brings back the guest's RAM together with the disk: no stale page cache.
 */
import type { CacheMode, CheckResult, SnapshotInfo } from "../engine/types.js";
import type { WebImageHost } from "../worker/web-host.js";
import { BrowserGuest, type GuestFiles } from "./browser-guest.js";
import type { GuestDiskType } from "../guest/guest-machine.js";
import { readFile, readHead } from "./opfs-store.js";
import { ReopenableDisk } from "../v86/reopenable-disk.js";

export interface EngineSettings {
  scheme: string;
  cache: CacheMode;
}

export interface SessionOptions {
  host: WebImageHost;
  file: string;
  settings: EngineSettings;
  files: GuestFiles;
  cmdline: string;
  memoryMiB: number;
  /** The guest's disk: v86's IDE (default) or refcow's virtio-blk device. */
  diskType?: GuestDiskType;
  onConsoleByte?: (byte: number) => void;
}

export interface ExportedImage {
  bytes: Uint8Array;
  /** refcow's check of the closed image, as `qemu-img check` reports it. */
  check: CheckResult;
}

export class PageSession {
  settings: EngineSettings;
  private opChain: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly host: WebImageHost,
    readonly file: string,
    readonly disk: ReopenableDisk,
    readonly guest: BrowserGuest,
    settings: EngineSettings,
    /** The image's cluster size in bytes (from its header). */
    readonly clusterSize: number,
  ) {
    this.settings = settings;
  }

  /** Opens the image in the worker and boots the guest on it. */
  static async start(o: SessionOptions): Promise<PageSession> {
    // qcow2 header: cluster_bits is the big-endian u32 at byte 20 (the open below validates the rest).
    const head = await readHead(o.file, 24);
    const clusterBits = head.length === 24 ? new DataView(head.buffer, head.byteOffset).getUint32(20) : 16;
    const client = await o.host.open(o.file, o.settings);
    const disk = new ReopenableDisk(client);
    let guest: BrowserGuest;
    try {
      guest = await BrowserGuest.boot({ disk, files: o.files, cmdline: o.cmdline, memoryMiB: o.memoryMiB, diskType: o.diskType, onConsoleByte: o.onConsoleByte });
    } catch (e) {
      await disk.detach().catch(() => undefined);
      throw e;
    }
    return new PageSession(o.host, o.file, disk, guest, o.settings, 2 ** Math.min(Math.max(clusterBits, 9), 21));
  }

  /** Snapshots of the image. */
  snapshots(): Promise<SnapshotInfo[]> {
    return this.serial(() => this.client().snapshotList());
  }

  /** Takes a snapshot of the disk and, unless `vmState` is false, of the guest's machine state. */
  snapshotTake(name: string, options: { vmState?: boolean } = {}): Promise<SnapshotInfo> {
    return this.paused(async () => {
      const state = (options.vmState ?? true) ? new Uint8Array(await this.guest.saveState()) : undefined;
      return this.client().snapshotCreate(name, { vmState: state, vmClockNsec: Math.round(performance.now() * 1e6), date: new Date() });
    });
  }

  /**
   * Reverts the disk to snapshot `id` and, when it holds a VM state, the guest's machine too. Without a VM
   * state the guest keeps running on a disk that changed underneath it (its page cache may be stale):
   * the result says so.
   */
  snapshotApply(id: string): Promise<{ restoredVm: boolean }> {
    return this.paused(async () => {
      const client = this.client();
      const info = (await client.snapshotList()).find((s) => s.id === id || s.name === id);
      await client.snapshotApply(id);
      if (!info || info.vmStateSize === 0) return { restoredVm: false };
      const state = await client.readVmState(id);
      await this.guest.restoreState(state.slice().buffer, `snapshot ${info.name}`);
      return { restoredVm: true };
    });
  }

  snapshotDelete(id: string): Promise<void> {
    return this.serial(() => this.client().snapshotDelete(id));
  }

  /**
   * The image's bytes for a download: the guest paused, the image closed (every scheme leaves plain qcow2 at
   * a clean close), checked, read from OPFS, and opened again with the same settings.
   */
  exportImage(): Promise<ExportedImage> {
    return this.paused(async () => {
      await this.disk.detach();
      try {
        const check = await this.host.check(this.file);
        const bytes = await readFile(this.file);
        return { bytes, check };
      } finally {
        this.disk.attach(await this.host.open(this.file, this.settings));
      }
    });
  }

  /** Closes the image and opens it again with other settings (scheme conversion happens at open/close). */
  reopen(settings: EngineSettings): Promise<void> {
    return this.paused(async () => {
      await this.disk.detach();
      try {
        this.disk.attach(await this.host.open(this.file, settings));
        this.settings = settings;
      } catch (e) {
        this.disk.attach(await this.host.open(this.file, this.settings));
        throw e;
      }
    });
  }

  /** Stops the guest and closes the image. */
  async close(): Promise<void> {
    await this.opChain.catch(() => undefined);
    await this.guest.destroy().catch(() => undefined);
    await this.disk.detach();
  }

  private client() {
    const c = this.disk.client;
    if (!c) throw new Error("the image is not open");
    return c;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.opChain.then(fn);
    this.opChain = p.catch(() => undefined);
    return p;
  }

  private paused<T>(fn: () => Promise<T>): Promise<T> {
    return this.serial(async () => {
      await this.guest.pause();
      try {
        return await fn();
      } finally {
        await this.guest.resume();
      }
    });
  }
}
