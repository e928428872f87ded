/**
 * A refcow-served qcow2 image as the disk of any v86 emulator: its IDE disk (`hda`, with honest flushes)
 * or refcow's virtio-blk PCI device (virtio-blk.ts), for every v86 embedder — v86 itself reads raw images
 * only. Platform-neutral (no node: imports): `openV86Disk` (v86-disk-node.ts) opens an image file in Node,
 * `openV86DiskOpfs` (v86-disk-web.ts) an OPFS file in the browser; both end here.
 *
 *     const disk = await openV86Disk("disk.qcow2", { type: "virtio" });
 *     const emulator = new V86({ ...disk.v86Options, wasm_path, bios, bzimage, initrd, cmdline, autostart: true });
 *     disk.attach(emulator);          // at once, before v86 has loaded
 *     ...
 *     await disk.quiesce(emulator);   // stop the CPU, wait for the disk's requests
 *     await disk.close();             // flush and close the image (qemu-img check clean)
 *
 * What `attach` does, in v86's `emulator-ready` event (before the BIOS runs and before an `initial_state`
 * is restored): for IDE, the honest-flush patch (ide-flush.ts: FLUSH CACHE reaches the engine and
 * completes after it) and PIO/DMA detection; for virtio, puts the device on the PCI bus
 * (virtio-blk-v86.ts). In both cases it wraps the CPU's `run_hardware_timers` so the disk's completions are
 * reaped from inside v86's run loop (no trip through the event loop per request).
 *
 * Saved states: v86's `save_state()` has no room for a device it does not know, so with the virtio disk use
 * `saveState(emulator)` / `restoreState(emulator, state)` here (v86's state plus the device's registers,
 * machine-state.ts); for IDE they are v86's own. The guest sees the disk as /dev/sda (IDE) or /dev/vda
 * (virtio: Linux's virtio_pci — legacy interface — and virtio_blk drivers).
 *
 * Measurement: the devices keep none. Give an `observer` (disk-device.ts) to be told of each request —
 * the package root's RequestRecorder (src/guest/request-recorder.ts) keeps records and per-phase sums.
 */
import type { V86, V86Image } from "v86";
import type { AsyncDisk } from "../disk/async-disk.js";
import type { CacheMode } from "../engine/types.js";
import type { DiskDevice, DiskRequestObserver } from "./disk-device.js";
import { HdaAdapter, type HdaAdapterOptions } from "./hda-adapter.js";
import { hdaDrive, installHonestFlush } from "./ide-flush.js";
import { joinMachineState, splitMachineState } from "./machine-state.js";
import { DEFAULT_READ_AHEAD_BYTES } from "./read-ahead.js";
import { VirtioBlk, type VirtioBlkOptions, type VirtioBlkState } from "./virtio-blk.js";
import { attachVirtioBlk, type VirtioAttachOptions } from "./virtio-blk-v86.js";

export type V86DiskType = "ide" | "virtio";

export interface V86DiskOptions {
  /** "ide" (default): v86's IDE primary master; "virtio": refcow's virtio-blk PCI device. */
  type?: V86DiskType;
  /** Reap completions from inside v86's run loop (default true). */
  pollFromRunLoop?: boolean;
  /** virtio-blk device options (feature limits, serial). */
  virtio?: VirtioBlkOptions & VirtioAttachOptions;
  /** IDE adapter options. */
  ide?: HdaAdapterOptions;
  /** Told of every guest request (disk-device.ts); none by default. */
  observer?: DiskRequestObserver;
}

/**
 * The devices' caches for an image served in cache mode `cache`, as `refcow boot`, the page and
 * `openV86Disk` set them:
 *  - the write cache (hda-adapter.ts, virtio-blk.ts): on in writeback (and unsafe), where a write completes
 *    before it is durable anyway; off in writethrough, where completed means durable. 8 MiB bounds the
 *    writes the guest may be ahead of the engine by;
 *  - read-ahead (read-ahead.ts), 2 MiB past a sequential reader, in every cache mode (it holds no write):
 *    a guest reading front to back has one request in flight, on IDE (one command per drive) as on
 *    virtio-blk (`dd` with O_DIRECT).
 * The research harness (src/guest) leaves both off: it measures what each guest request costs. Options the
 * caller gives win.
 */
export function withDeviceCaches(options: V86DiskOptions, cache: CacheMode): V86DiskOptions {
  const writeCache = cache === "writethrough" ? 0 : 8 * 2 ** 20;
  const readAhead = DEFAULT_READ_AHEAD_BYTES;
  return { ...options, ide: { writeCache, readAhead, ...options.ide }, virtio: { writeCache, readAhead, ...options.virtio } };
}

/** One disk for one emulator. */
export class RefcowV86Disk {
  readonly type: V86DiskType;
  /** The device: its idle state and errors; set `device.observer` to be told of the guest's requests. */
  readonly device: DiskDevice;
  /** Spread into `new V86({...})`: `{ hda }` for IDE, nothing for virtio (the device is added by `attach`). */
  readonly v86Options: { hda?: V86Image };
  private attached: unknown;

  constructor(
    readonly disk: AsyncDisk,
    private readonly options: V86DiskOptions = {},
    private readonly onClose: () => Promise<void> = async () => undefined,
  ) {
    this.type = options.type ?? "ide";
    if (this.type !== "ide" && this.type !== "virtio") throw new RangeError(`disk type must be ide or virtio, got '${String(this.type)}'`);
    const observer = options.observer ? { observer: options.observer } : {};
    if (this.type === "virtio") {
      this.device = new VirtioBlk(disk, { ...options.virtio, ...observer });
      this.v86Options = {};
    } else {
      const hda = new HdaAdapter(disk, { ...options.ide, ...observer });
      this.device = hda;
      this.v86Options = { hda: hda as unknown as V86Image };
    }
  }

  /** Hooks the disk into `emulator` (one emulator per disk). Call right after `new V86(...)`. */
  attach(emulator: V86): void {
    if (this.attached) throw new Error("this disk is attached to an emulator already");
    this.attached = emulator;
    emulator.add_listener("emulator-ready", () => {
      if (this.device instanceof HdaAdapter) {
        const hda = this.device;
        installHonestFlush(emulator, hda);
        const drive = hdaDrive(emulator, hda);
        hda.reusedBuffer = (data) => data.buffer === drive.data.buffer;
      } else {
        attachVirtioBlk(emulator, this.device as VirtioBlk, this.options.virtio);
        if (this.pendingState) (this.device as VirtioBlk).setState(this.pendingState);
        this.pendingState = undefined;
      }
      if (this.options.pollFromRunLoop ?? true) hookDiskPolling(emulator, this.device);
    });
    // After v86 has restored an `initial_state`: it normally restores into the same IDE drive object, but an
    // old-format state makes it build a new controller; registering the drive again is idempotent.
    emulator.add_listener("emulator-loaded", () => {
      if (this.device instanceof HdaAdapter) {
        const hda = this.device;
        installHonestFlush(emulator, hda);
        const drive = hdaDrive(emulator, hda);
        hda.reusedBuffer = (data) => data.buffer === drive.data.buffer;
      }
    });
  }

  private pendingState: VirtioBlkState | undefined;

  /**
   * For `new V86({ initial_state })` with a state from `saveState`: returns v86's part to give as
   * `initial_state: { buffer }`, and keeps the device's part for `attach` to restore.
   */
  initialState(state: ArrayBuffer): ArrayBuffer {
    const st = splitMachineState(state);
    if ((st.device !== undefined) !== (this.type === "virtio")) throw new Error(`the state is not one of an emulator with a ${this.type} refcow disk`);
    this.pendingState = st.device as VirtioBlkState | undefined;
    return st.v86;
  }

  /** Stops the emulator's CPU and waits until the disk has no request in flight. */
  async quiesce(emulator: V86): Promise<void> {
    await emulator.stop();
    await this.device.whenIdle();
  }

  /** The machine state with this disk's device (quiesce first). The disk's data stays in the image. */
  async saveState(emulator: V86): Promise<ArrayBuffer> {
    if (!this.device.idle) throw new Error("saveState with disk requests in flight: quiesce(emulator) first");
    const dev = this.device instanceof VirtioBlk ? this.device.getState() : undefined;
    const v86 = await emulator.save_state();
    return dev ? joinMachineState(v86, dev) : v86;
  }

  /** Restores a state from `saveState` into the stopped emulator (the caller runs it again). */
  async restoreState(emulator: V86, state: ArrayBuffer): Promise<void> {
    const st = splitMachineState(state);
    if ((st.device !== undefined) !== (this.type === "virtio")) throw new Error(`the state is not one of an emulator with a ${this.type} refcow disk`);
    await emulator.restore_state(st.v86);
    this.device.invalidateCallbacks();
    if (this.device instanceof VirtioBlk) this.device.setState(st.device as VirtioBlkState);
    else {
      installHonestFlush(emulator, this.device as HdaAdapter);
    }
  }

  /** Waits for the device's requests, then flushes and closes the image. Destroy or stop the emulator first. */
  async close(): Promise<void> {
    await this.device.whenIdle();
    await this.onClose();
  }
}

/**
 * Wraps the CPU's `run_hardware_timers` (v86's main loop calls it after every batch of instructions and as
 * soon as the guest halts) so that `device.pollFromEmulator` reaps the disk's completions there.
 */
export function hookDiskPolling(emulator: unknown, device: Pick<DiskDevice, "pollFromEmulator">): void {
  const cpu = (emulator as { v86?: { cpu?: { run_hardware_timers?: unknown; in_hlt?: ArrayLike<number> } } }).v86?.cpu;
  const original = cpu?.run_hardware_timers;
  if (!cpu || typeof original !== "function" || typeof cpu.in_hlt !== "object" || cpu.in_hlt === null) {
    throw new Error("v86 internals changed: cpu.run_hardware_timers / cpu.in_hlt not found");
  }
  const halted = cpu.in_hlt;
  cpu.run_hardware_timers = function (this: unknown, acpi: boolean, now: number): number {
    device.pollFromEmulator(halted[0] !== 0);
    return (original as (a: boolean, n: number) => number).call(this, acpi, now);
  };
}
