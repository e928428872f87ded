/**
 * OsSession: an installed OS booting in the page from its own disk — an image in the origin private file
 * system served by refcow's Web Worker, a DiskBootMachine (src/v86/disk-boot-machine.ts: SeaBIOS boots the
 * disk, no kernel is handed to v86) with its VGA screen in the page and its serial console — and what the
 * page's buttons do with both: savevm / loadvm / delvm (internal snapshots with the machine state, as
 * `refcow boot`'s monitor does), a copy of the image for a download, a clean close.
 *
 *   const s = await OsSession.open({ host, file, diskType: "ide", memoryMiB: 128, firmware, wasmUrl, screen, ... });
 *   s.machine.sendSerial(keys);
 *   await s.savevm("before");  ...  await s.loadvm("before");
 *   await s.close();            // quiesced, flushed, closed: the image in OPFS is clean qcow2
 *
 * savevm: stop the CPU and wait for the disk's requests, flush, save the machine state, create the snapshot
 * with the state in its VM-state area (one of the same name is replaced), resume unless stopped before.
 * loadvm: stop, read the snapshot's state and check it fits this machine (nothing changes when it does not),
 * apply the snapshot to the disk, restore the state, resume. Operations run one at a time.
 */
import type { ImageOpenOptions, SnapshotInfo } from "../engine/types.js";
import { checkSettings, DiskBootMachine } from "../v86/disk-boot-machine.js";
import { splitMachineState } from "../v86/machine-state.js";
import { withDeviceCaches, RefcowV86Disk, type V86DiskType } from "../v86/v86-disk.js";
import type { DiskClient } from "../worker/disk-client.js";
import type { WebImageHost } from "../worker/web-host.js";
import { copyFile } from "./opfs-store.js";
import { ReopenableDisk } from "../v86/reopenable-disk.js";
import { emulatorRingClientOptions } from "../v86/emulator-ring-client.js";

/** `scheme` and `cache` are ImageOpenOptions' (the page's settings). */
export interface OsSessionOptions extends Pick<ImageOpenOptions, "scheme" | "cache"> {
  host: WebImageHost;
  /** OPFS file name of the image (qcow2). */
  file: string;
  diskType: V86DiskType;
  memoryMiB: number;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  /** URL of v86's wasm. */
  wasmUrl: string;
  /** v86's screen: a div holding a div (text modes) and a canvas (graphics modes). */
  screen?: HTMLElement;
  onSerial?: (bytes: Uint8Array) => void;
  onBiosLine?: (line: string) => void;
  onNoBootableDevice?: (line: string) => void;
  onPowerOff?: () => void;
  /** Bytes the persistent chunk cache of remote images may hold (default 1 GiB; 0: none). */
  httpCacheBytes?: number;
}

export class OsSession {
  readonly machine: DiskBootMachine;
  /** Virtual size of the disk in bytes. */
  readonly size: number;
  private chain: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;

  /** Opens the image in the worker (a bad image is one error, before anything boots) and boots it. */
  static async open(o: OsSessionOptions): Promise<OsSession> {
    const client = await openRetrying(o);
    if (client.size % 512 !== 0) {
      await client.close();
      throw new Error(`${o.file} has a virtual size of ${client.size} bytes, not whole 512-byte sectors: a disk cannot use it`);
    }
    const s = new OsSession(o, new ReopenableDisk(client));
    await s.machine.loaded;
    return s;
  }

  private constructor(
    private readonly o: OsSessionOptions,
    private readonly disk: ReopenableDisk,
  ) {
    this.size = disk.size;
    const v86Disk = new RefcowV86Disk(disk, withDeviceCaches({ type: o.diskType }, o.cache ?? "writeback"));
    this.machine = new DiskBootMachine({
      disk: v86Disk,
      firmware: o.firmware,
      wasmPath: o.wasmUrl,
      memoryMiB: o.memoryMiB,
      onSerial: o.onSerial,
      onBiosLine: o.onBiosLine,
      onNoBootableDevice: o.onNoBootableDevice,
      onPowerOff: o.onPowerOff,
      // v86's PS/2 keyboard takes the keys typed while the screen has the focus (the page turns it on and off).
      v86Options: o.screen ? { screen_container: o.screen, disable_keyboard: false } : {},
    });
  }

  get file(): string {
    return this.o.file;
  }

  get diskType(): V86DiskType {
    return this.o.diskType;
  }

  snapshots(): Promise<SnapshotInfo[]> {
    return this.serial(() => this.client().snapshotList());
  }

  /** QEMU's savevm: the disk and the machine state as snapshot `name` (one of that name is replaced). */
  savevm(name: string): Promise<SnapshotInfo> {
    return this.serial(() =>
      this.stopped(async () => {
        const client = this.client();
        await client.flush();
        const state = new Uint8Array(await this.machine.saveState());
        for (const old of (await client.snapshotList()).filter((s) => s.name === name)) await client.snapshotDelete(old.id);
        return client.snapshotCreate(name, { vmState: state, vmClockNsec: Math.round(this.machine.runMs * 1e6), date: new Date() });
      }),
    );
  }

  /** QEMU's loadvm: disk and machine back to snapshot `name` (id or name). */
  loadvm(name: string): Promise<void> {
    return this.serial(async () => {
      const client = this.client();
      const sn = findSnapshot(await client.snapshotList(), name);
      if (!sn) throw new Error(`Snapshot '${name}' does not exist in one or more devices`);
      if (!sn.vmStateSize) throw new Error("This is a disk-only snapshot. Revert to it offline using qemu-img");
      await this.stopped(async () => {
        const blob = await client.readVmState(sn.id);
        const state = blob.slice().buffer as ArrayBuffer;
        // Refused here, before the disk changes, when the state is not one this machine can take.
        checkSettings(splitMachineState(state).machine, this.machine.settings);
        await client.snapshotApply(sn.id);
        await this.machine.restoreState(state);
      });
    });
  }

  /** QEMU's delvm. */
  delvm(name: string): Promise<void> {
    return this.serial(async () => {
      const client = this.client();
      const sn = findSnapshot(await client.snapshotList(), name);
      if (!sn) throw new Error(`Could not delete snapshot '${name}': Can't find the snapshot`);
      await client.snapshotDelete(sn.id);
    });
  }

  /**
   * Copies the image into OPFS file `to` for a download: the guest stopped, the image closed cleanly (plain
   * qcow2 whatever the scheme), copied (streamed), opened again, the guest resumed.
   */
  copyImage(to: string): Promise<number> {
    return this.serial(() =>
      this.stopped(async () => {
        await this.disk.detach();
        try {
          return await copyFile(this.o.file, to);
        } finally {
          this.disk.attach(await openRetrying(this.o));
        }
      }),
    );
  }

  /** Stops the machine (its disk requests complete), frees the emulator, closes the image cleanly. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.chain.catch(() => undefined);
      let first: unknown;
      for (const step of [() => this.machine.destroy(), () => this.disk.detach()]) {
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

  private client(): DiskClient {
    const c = this.disk.client;
    if (!c) throw new Error("the image is not open");
    return c;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new Error("the machine is closed"));
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Runs `fn` with the CPU stopped and the disk quiet; resumes unless it was stopped before. */
  private async stopped<T>(fn: () => Promise<T>): Promise<T> {
    const wasStopped = this.machine.stopped;
    await this.machine.stop();
    try {
      return await fn();
    } finally {
      if (!wasStopped) await this.machine.cont();
    }
  }
}

/** By id first, then by name (QEMU's bdrv_snapshot_find). */
export function findSnapshot(list: readonly SnapshotInfo[], idOrName: string): SnapshotInfo | undefined {
  return list.find((s) => s.id === idOrName) ?? list.find((s) => s.name === idOrName);
}

/**
 * Opens the image in the worker. Right after a reload the previous page's worker may still hold the file's
 * access handle for a moment: that one error is retried for up to 15 s.
 */
async function openRetrying(o: OsSessionOptions): Promise<DiskClient> {
  const client = emulatorRingClientOptions(o.diskType);
  for (let attempt = 0; ; attempt++) {
    try {
      return await o.host.open(o.file, { scheme: o.scheme ?? "eager", cache: o.cache ?? "writeback", client, httpCacheBytes: o.httpCacheBytes });
    } catch (e) {
      const busy = /open elsewhere|holds its lock|access handle|NoModificationAllowed/i.test(String((e as Error)?.message ?? e));
      if (!busy || attempt >= 60) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
