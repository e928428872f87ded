/**
 * GuestMachine: one v86 emulator running the refcow test guest, its IDE disk on an `AsyncDisk` through the
 * hda adapter (with honest flushes, ide-flush.ts), and the serial-console protocol that drives it
 * (serial-console.ts): commands one at a time, each ended by `REFCOW-DONE <code>`; stop and drain before
 * `save_state`; restore.
 *
 * Platform-neutral on purpose: it imports no node: module, so Node's GuestRunner (guest files read from
 * disk) and the page's BrowserGuest (guest files fetched by v86 from URLs) share it; src/web is bundled for
 * the browser. Where the guest files come from, how long a boot may take and what a caller does with a
 * restore are theirs.
 *
 * Saving: v86's `save_state()` calls the adapter's `get_state()` synchronously, so a disk completion still
 * pending would be lost; `stop()` stops the CPU and waits for the disk queue to empty first, and
 * `saveState()` refuses a machine whose disk is not idle. v86's state holds CPU, RAM and devices, no disk
 * data: restore it over a disk in the state it had when the state was saved.
 */
import { V86, type V86Image, type V86Options } from "v86";
import type { AsyncDisk } from "../disk/async-disk.js";
import { HdaAdapter, type HdaAdapterOptions } from "../v86/hda-adapter.js";
import { hdaDrive, installHonestFlush, type HonestFlushHandle } from "../v86/ide-flush.js";
import { DONE_LINE, SerialConsole } from "./serial-console.js";
import { VirtioBlk, type VirtioBlkOptions } from "../v86/virtio-blk.js";
import { attachVirtioBlk } from "../v86/virtio-blk-v86.js";
import { hookDiskPolling } from "../v86/v86-disk.js";
import { joinMachineState, splitMachineState } from "../v86/machine-state.js";
import { GuestDiskDevice } from "./guest-disk-device.js";
import { RequestRecorder } from "./request-recorder.js";

/** The guest's disk: v86's IDE (primary master, over HdaAdapter) or refcow's virtio-blk PCI device. */
export type GuestDiskType = "ide" | "virtio";
export const GUEST_DISK_TYPES: readonly GuestDiskType[] = ["ide", "virtio"];

/**
 * Names the emulator settings GuestMachine fixes (VGA RAM, ACPI, devices, the honest-flush IDENTIFY bits).
 * A saved state restores only into an emulator built the same way: change this string whenever those
 * settings change, so that cached warm-start states (warm-state.ts) are not reused across the change.
 */
export const MACHINE_SETTINGS_ID = "v86 headless: vga 2 MiB, acpi off, no keyboard/mouse/speaker, hda = HdaAdapter [byteLength]";

/** MACHINE_SETTINGS_ID for a disk type (the IDE one is unchanged, so that existing warm states stay valid). */
export function machineSettingsId(disk: GuestDiskType = "ide"): string {
  return disk === "ide" ? MACHINE_SETTINGS_ID : "v86 headless: vga 2 MiB, acpi off, no keyboard/mouse/speaker, no hda, virtio-blk legacy PCI (VirtioBlk v1 state, EVENT_IDX offered)";
}

/** The guest's boot files: buffers the caller read, or URLs v86 fetches. */
export interface GuestBootFiles {
  bios: V86Image;
  vgaBios: V86Image;
  bzImage: V86Image;
  initrd: V86Image;
}

export interface GuestMachineOptions {
  disk: AsyncDisk;
  /** The guest's disk device (default "ide"). */
  diskType?: GuestDiskType;
  adapter?: HdaAdapterOptions;
  /** Options of the virtio-blk device (diskType "virtio"). */
  virtio?: VirtioBlkOptions;
  /** v86's wasm: a file path in Node, a URL in the page. */
  wasmPath: string;
  files: GuestBootFiles;
  memoryMiB: number;
  cmdline: string;
  /** Patch FLUSH CACHE to reach the disk (ide-flush.ts). */
  honestFlush: boolean;
  /**
   * Let the hda adapter reap disk completions from inside v86's run loop (see `hookDiskPolling`, v86-disk.ts). Default true;
   * it matters only over a pollable disk (the worker-served image).
   */
  pollFromRunLoop?: boolean;
  /** A state from `saveState()`: v86 restores it at load instead of booting. */
  initialState?: ArrayBuffer;
  /** Label of the disk requests until a command or the caller sets another. */
  phase: string;
  /** Time a command may take to print its REFCOW-DONE, unless `run` is told otherwise (ms). */
  commandTimeoutMs: number;
  /** Every byte the guest writes to its serial console. */
  onConsoleByte?: (byte: number) => void;
  /** Every complete console line, as it arrives. */
  onConsoleLine?: (line: string) => void;
}

export interface RunResult {
  exitCode: number;
  /** What the command printed (stdout and stderr), "\r" removed. */
  output: string;
  /** Host time from sending the command to its REFCOW-DONE line, in ms. */
  ms: number;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Labels the disk requests issued while the command runs. */
  phase?: string;
}

export class GuestMachine {
  /** The disk device (the IDE's hda adapter, or the virtio-blk device) with its recorder: records, phases, idle. */
  readonly adapter: GuestDiskDevice;
  readonly diskType: GuestDiskType;
  /** The IDE disk's adapter (diskType "ide"). */
  readonly hda: HdaAdapter | undefined;
  /** The virtio-blk device (diskType "virtio"). */
  readonly virtio: VirtioBlk | undefined;
  readonly console = new SerialConsole();
  readonly emulator: V86;
  /** Resolves when v86 has loaded (and restored `initialState`); the CPU runs from then on. */
  readonly loaded: Promise<void>;
  private flushHandle: HonestFlushHandle | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private abandon: ((e: Error) => void) | undefined;
  private closedFlag = false;
  private readonly commandTimeoutMs: number;

  constructor(opts: GuestMachineOptions) {
    this.commandTimeoutMs = opts.commandTimeoutMs;
    this.diskType = opts.diskType ?? "ide";
    if (this.diskType === "virtio") this.virtio = new VirtioBlk(opts.disk, opts.virtio);
    else this.hda = new HdaAdapter(opts.disk, opts.adapter);
    this.adapter = new GuestDiskDevice(this.virtio ?? this.hda!, new RequestRecorder({ virtio: this.diskType === "virtio" }));
    this.adapter.phase = opts.phase;
    this.adapter.onError = (err) => this.console.close(new Error(`guest disk error: ${err.message}`));
    if (opts.onConsoleLine) this.console.onLine = opts.onConsoleLine;
    const settings: V86Options = {
      wasm_path: opts.wasmPath,
      memory_size: opts.memoryMiB << 20,
      vga_memory_size: 2 << 20, // headless: no screen; a smaller VGA RAM keeps the saved state smaller
      bios: opts.files.bios,
      vga_bios: opts.files.vgaBios,
      bzimage: opts.files.bzImage,
      initrd: opts.files.initrd,
      cmdline: opts.cmdline,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      acpi: false,
    };
    if (this.hda) settings.hda = this.hda as unknown as V86Image;
    let deviceState: unknown;
    if (opts.initialState) {
      const st = splitMachineState(opts.initialState);
      settings.initial_state = { buffer: st.v86 };
      deviceState = st.device;
      if ((deviceState !== undefined) !== (this.diskType === "virtio")) throw new Error(`saved state is not one of a guest with a ${this.diskType} disk`);
    }
    const emulator = new V86(settings);
    this.emulator = emulator;
    emulator.add_listener("serial0-output-byte", (b: number) => {
      this.console.push(b);
      opts.onConsoleByte?.(b);
    });
    emulator.add_listener("emulator-ready", () => {
      // Before the CPU runs its first instruction (and before a state restore).
      if (this.hda) {
        if (opts.honestFlush) this.flushHandle = installHonestFlush(emulator, this.hda);
        this.attachDrive();
      } else {
        attachVirtioBlk(emulator, this.virtio!);
        if (deviceState !== undefined) this.virtio!.setState(deviceState as Parameters<VirtioBlk["setState"]>[0]);
      }
      if (opts.pollFromRunLoop ?? true) hookDiskPolling(this.emulator, this.adapter.device);
    });
    this.loaded = new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  }

  /** FLUSH CACHE commands (IDE; 0 when honest flushes are off) or virtio-blk FLUSH requests the guest sent. */
  get guestFlushes(): number {
    return this.virtio ? this.virtio.guestFlushes : (this.flushHandle?.guestFlushes ?? 0);
  }

  /** True while a command is running. */
  get busy(): boolean {
    return this.abandon !== undefined;
  }

  /** True once `close()` was called: no more commands. */
  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Registers the honest flush again (idempotent). After a restore: v86 normally restores into the same
   * drive object, but an old-format state makes it build a new IDE controller.
   */
  reattachFlush(): void {
    if (!this.hda) return;
    if (this.flushHandle) installHonestFlush(this.emulator, this.hda);
    this.attachDrive();
  }

  /** Lets the adapter tell PIO writes (data in the drive's reusable buffer) from DMA ones. */
  private attachDrive(): void {
    const hda = this.hda!;
    const drive = hdaDrive(this.emulator, hda);
    hda.reusedBuffer = (data) => data.buffer === drive.data.buffer;
  }

  /** Sends raw text to the guest's serial console. */
  send(text: string): void {
    this.emulator.serial0_send(text);
  }

  /** Runs `task` after every task queued before it has settled: commands reach the guest one at a time. */
  enqueue<T>(task: () => Promise<T>): Promise<T> {
    const p = this.queue.then(task);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Resolves when every task queued so far has settled. */
  async queueSettled(): Promise<void> {
    await this.queue;
  }

  /**
   * Runs one shell command line in the guest (a subshell of /init's loop; stdin is /dev/null), after the
   * commands queued before it. Rejects when the command is abandoned (`abandonCommand`) or the console closes.
   */
  run(command: string, options: RunOptions = {}): Promise<RunResult> {
    if (command.includes("\n")) return Promise.reject(new Error("one command line, without newlines"));
    return this.enqueue(() => this.runNow(command, options));
  }

  /** Runs `command` and throws when it exits non-zero. Returns its output. */
  async check(command: string, options: RunOptions = {}): Promise<string> {
    const r = await this.run(command, options);
    if (r.exitCode !== 0) throw new Error(`guest command failed (exit ${r.exitCode}): ${command}\n${r.output}`);
    return r.output;
  }

  private async runNow(command: string, options: RunOptions): Promise<RunResult> {
    if (this.closedFlag) throw new Error("guest destroyed");
    const prevPhase = this.adapter.phase;
    if (options.phase) this.adapter.phase = options.phase;
    const from = this.console.position;
    const t = performance.now();
    const abandoned = new Promise<never>((_, reject) => (this.abandon = reject));
    try {
      this.emulator.serial0_send(command + "\n");
      const m = await Promise.race([this.console.waitFor(DONE_LINE, from, options.timeoutMs ?? this.commandTimeoutMs), abandoned]);
      // The marker's leading "\n" ends the command's last line of output.
      const end = m.match[0].startsWith("\n") ? m.start + 1 : m.start;
      const output = this.console.textBetween(from, end).replace(/\r/g, "");
      return { exitCode: Number(m.match[1]), output, ms: performance.now() - t };
    } finally {
      this.abandon = undefined;
      if (options.phase) this.adapter.phase = prevPhase;
    }
  }

  /** Makes the running command's promise reject with `err` at once (the guest is not told). */
  abandonCommand(err: Error): void {
    this.abandon?.(err);
    this.abandon = undefined;
  }

  /** Stops the CPU (at its next slice) and waits until no disk request is pending. */
  async stop(): Promise<void> {
    await this.loaded;
    await this.emulator.stop();
    await this.adapter.whenIdle();
  }

  /** Lets the CPU run again. */
  async resume(): Promise<void> {
    await this.emulator.run();
  }

  /**
   * v86's machine state (CPU, RAM, devices; no disk data), with the virtio-blk device's registers when the
   * disk is virtio (machine-state.ts). Only with no disk request pending: see `stop()`.
   */
  async saveState(): Promise<ArrayBuffer> {
    if (!this.adapter.idle) throw new Error("save_state with disk requests in flight: stop the guest first");
    const device = this.virtio?.getState();
    const v86 = await this.emulator.save_state();
    return device ? joinMachineState(v86, device) : v86;
  }

  /**
   * Restores a state from `saveState()` into the stopped emulator, drops the completions of requests from
   * before it, and registers the honest flush again. The caller resumes.
   */
  async restoreState(state: ArrayBuffer): Promise<void> {
    const st = splitMachineState(state);
    if ((st.device !== undefined) !== (this.diskType === "virtio")) throw new Error(`saved state is not one of a guest with a ${this.diskType} disk`);
    await this.emulator.restore_state(st.v86);
    this.adapter.invalidateCallbacks();
    if (this.virtio) this.virtio.setState(st.device as Parameters<VirtioBlk["setState"]>[0]);
    this.reattachFlush();
  }

  /** Refuses further commands and rejects every wait on the console (the running command's too). */
  close(): void {
    this.closedFlag = true;
    const err = new Error("guest destroyed");
    this.console.close(err);
    this.abandonCommand(err);
  }

  /** Stops and frees the emulator once loaded (see `loaded`), and waits for the disk queue to empty. */
  async destroy(): Promise<void> {
    await this.emulator.destroy();
    await this.adapter.whenIdle();
  }
}
