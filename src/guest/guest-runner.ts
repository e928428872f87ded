/**
 * GuestRunner: boots the refcow test guest (guest-images/) headless in Node with v86, its IDE disk on an
 * `AsyncDisk` through the hda adapter, and drives it over the serial console. The emulator control itself
 * is GuestMachine's (guest-machine.ts, shared with the browser page); this module adds what is Node's: the
 * guest files read from disk, boot progress and time limits, warm starts.
 *
 *   const g = await GuestRunner.boot({ disk, onProgress: (m) => console.error(m) });
 *   const { exitCode, output } = await g.run("dd if=/tmp/p of=/dev/sda bs=4k seek=8 oflag=direct conv=fsync");
 *   const state = await g.saveState();        // warm-start image (the disk is not in it)
 *   await g.destroy();
 *   const g2 = await GuestRunner.boot({ disk, initialState: state }); // resumes at the command prompt
 *
 * Time: v86's guest clock is host wall-clock time, so the latencies the recorder keeps (submit→complete of
 * each disk request) are real host latencies; `phase` labels them.
 *
 * Warm start: v86's state holds CPU, RAM and devices but no disk data; restore it over a disk in the same
 * state as when it was saved (the guest's page cache may hold blocks of it). `saveState` stops the
 * emulator and drains the disk queue first, because `save_state` calls the adapter's `get_state`
 * synchronously and a pending completion would be lost.
 */
import { readFileSync } from "node:fs";
import { chooseWasmTiering, wasmTieringLoaded } from "../v86/wasm-tiering.js";
import type { V86, V86Image } from "v86";
import type { AsyncDisk } from "../disk/async-disk.js";
import { guestImagePaths, v86WasmPath, type GuestImagePaths } from "./guest-image.js";
import { GuestMachine, type GuestDiskType, type RunOptions, type RunResult } from "./guest-machine.js";
import type { HdaAdapterOptions } from "../v86/hda-adapter.js";
import type { GuestDiskDevice } from "./guest-disk-device.js";
import type { VirtioBlkOptions } from "../v86/virtio-blk.js";
import { DONE_LINE, READY_LINE, type SerialConsole } from "./serial-console.js";

export { MACHINE_SETTINGS_ID, type RunResult } from "./guest-machine.js";

/**
 * Default kernel command line.
 *  - `console=ttyS0`: the control channel. `quiet loglevel=3`: kernel chatter off it (dmesg keeps it).
 *  - `tsc=reliable`: no clocksource watchdog (v86's TSC is host time at a nominal 1 GHz).
 *  - `lpj=4000000`: the delay-loop value for that TSC at HZ=250, so no calibration.
 *  - `cryptomgr.notests`: skips the crypto self-tests (about 3.6 s of boot under v86).
 *  - `noisapnp`: skips the ISA PnP scan (0.5 s). `nr_cpus=1`: v86 has one CPU.
 *  - `mitigations=off nowatchdog nmi_watchdog=0`: a test rig, not a security boundary; no lockup timers.
 */
export const DEFAULT_CMDLINE =
  "console=ttyS0 quiet loglevel=3 tsc=reliable lpj=4000000 cryptomgr.notests noisapnp nr_cpus=1 mitigations=off nowatchdog nmi_watchdog=0";

/** Guest RAM in MiB unless told otherwise. */
export const DEFAULT_MEMORY_MIB = 128;

export interface GuestRunnerOptions {
  disk: AsyncDisk;
  /** Guest image files (default: .cache/guest of the checkout, or $REFCOW_GUEST_DIR). */
  image?: GuestImagePaths;
  /** Guest RAM in MiB (default 128). A state saved with one size restores only with the same size. */
  memoryMiB?: number;
  /** Kernel command line (default DEFAULT_CMDLINE). */
  cmdline?: string;
  /** Patch FLUSH CACHE to reach the disk (default true; see ide-flush.ts). */
  honestFlush?: boolean;
  /** Reap disk completions from inside v86's run loop (default true; GuestMachine.pollFromRunLoop). */
  pollFromRunLoop?: boolean;
  /** A state from `saveState()`: resume it instead of booting. */
  initialState?: ArrayBuffer;
  /** Time allowed to reach the command prompt, in ms (default 120 s). */
  bootTimeoutMs?: number;
  /** Progress messages while booting (a line each). */
  onProgress?: (message: string) => void;
  /** Every complete console line, as it arrives. */
  onConsoleLine?: (line: string) => void;
  adapter?: HdaAdapterOptions;
  /** The guest's disk device: v86's IDE (default) or refcow's virtio-blk (guest-machine.ts). */
  diskType?: GuestDiskType;
  virtio?: VirtioBlkOptions;
}


export class GuestRunner {
  readonly adapter: GuestDiskDevice;
  readonly console: SerialConsole;
  /** Host ms from constructing the emulator to the command prompt (cold boot or warm start). */
  readyMs = 0;
  readonly warm: boolean;
  private readonly machine: GuestMachine;
  /** Set once the emulator has been destroyed and freed. */
  private freed = false;
  private readonly opts: GuestRunnerOptions;
  private readonly t0: number;

  /** Boots (or resumes `initialState`) and resolves at the command prompt. */
  static async boot(options: GuestRunnerOptions): Promise<GuestRunner> {
    chooseWasmTiering();
    const g = new GuestRunner(options);
    try {
      await g.ready();
    } catch (e) {
      await g.destroy().catch(() => undefined);
      throw e;
    }
    return g;
  }

  private constructor(options: GuestRunnerOptions) {
    this.opts = options;
    this.warm = options.initialState !== undefined;
    const img = options.image ?? guestImagePaths();
    const file = (p: string): V86Image => {
      const b = readFileSync(p);
      return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
    };
    const files = { bios: file(img.bios), vgaBios: file(img.vgaBios), bzImage: file(img.bzImage), initrd: file(img.initrd) };
    this.progress(this.warm ? "resuming saved guest state..." : "booting guest (v86, Debian i386 kernel, busybox initramfs)...");
    this.t0 = performance.now();
    this.machine = new GuestMachine({
      disk: options.disk,
      adapter: options.adapter,
      diskType: options.diskType,
      virtio: options.virtio,
      wasmPath: v86WasmPath(),
      files,
      memoryMiB: options.memoryMiB ?? DEFAULT_MEMORY_MIB,
      cmdline: options.cmdline ?? DEFAULT_CMDLINE,
      honestFlush: options.honestFlush ?? true,
      pollFromRunLoop: options.pollFromRunLoop,
      initialState: options.initialState,
      phase: this.warm ? "resume" : "boot",
      commandTimeoutMs: 60_000,
      onConsoleLine: options.onConsoleLine,
    });
    this.adapter = this.machine.adapter;
    this.console = this.machine.console;
  }

  private progress(msg: string): void {
    this.opts.onProgress?.(`[guest] ${msg}`);
  }

  private async ready(): Promise<void> {
    const timeout = this.opts.bootTimeoutMs ?? 120_000;
    let lastReport = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      if (now - lastReport >= 5000) {
        lastReport = now;
        const s = this.adapter.summary(this.adapter.phase);
        this.progress(`still ${this.warm ? "resuming" : "booting"}: ${((now - this.t0) / 1000).toFixed(0)} s, ${s.reads} disk reads, ${this.console.position} console bytes`);
      }
    }, 1000);
    ticker.unref?.();
    let loadTimer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.machine.loaded,
        new Promise<never>((_, reject) => {
          loadTimer = setTimeout(() => reject(new Error(`v86 did not finish loading within ${timeout} ms`)), timeout);
        }),
      ]);
      clearTimeout(loadTimer);
      wasmTieringLoaded();
      this.machine.reattachFlush(); // after the restore of `initialState`
      if (this.warm) {
        // The guest sits in `read` at the prompt: an empty line is a ping.
        const from = this.console.position;
        this.machine.send("\n");
        await this.console.waitFor(DONE_LINE, from, timeout);
      } else {
        await this.console.waitFor(READY_LINE, 0, timeout);
      }
    } finally {
      clearInterval(ticker);
      clearTimeout(loadTimer);
    }
    this.readyMs = performance.now() - this.t0;
    this.adapter.phase = "idle";
    this.progress(`${this.warm ? "resumed" : "booted"} to the command prompt in ${(this.readyMs / 1000).toFixed(2)} s`);
  }

  /** FLUSH CACHE commands the guest sent (0 when honest flushes are off). */
  get guestFlushes(): number {
    return this.machine.guestFlushes;
  }

  /** The v86 instance (for instrumentation events such as "ide-write-end"). */
  get v86(): V86 {
    if (this.freed) throw new Error("guest destroyed");
    return this.machine.emulator;
  }

  /** Waits for `pattern` in the console output from `from` (default: now) on. */
  waitFor(pattern: RegExp | string, timeoutMs: number, from = this.console.position) {
    return this.console.waitFor(pattern, from, timeoutMs);
  }

  /**
   * Runs one shell command line in the guest (a subshell of /init's loop; stdin is /dev/null). Commands run
   * one at a time, in call order. `phase` (optional) labels the disk requests issued meanwhile.
   */
  run(command: string, options: RunOptions = {}): Promise<RunResult> {
    return this.machine.run(command, options);
  }

  /** Runs `command` and throws when it exits non-zero. Returns its output. */
  check(command: string, options: RunOptions = {}): Promise<string> {
    return this.machine.check(command, options);
  }

  /** Stops the CPU and waits until no disk request is pending. */
  async stop(): Promise<void> {
    if (this.freed) return;
    await this.machine.stop();
  }

  /** Resumes after `stop()`. */
  async resume(): Promise<void> {
    if (!this.freed) await this.machine.resume();
  }

  /**
   * v86's `save_state()` of a stopped, drained emulator (see `stop()`), without waiting for a running
   * command: for a host that pauses the guest in the middle of a command (a snapshot taken mid-workload).
   */
  async captureState(): Promise<ArrayBuffer> {
    if (this.freed) throw new Error("guest destroyed");
    if (!this.adapter.idle) throw new Error("captureState: disk requests in flight; call stop() first");
    return this.machine.saveState();
  }

  /**
   * Restores `state` into the stopped emulator (see `stop()`) without waiting for a running command, drops
   * the completions of requests from before, and re-registers the honest flush. Call `resume()` after.
   * A command waiting for its REFCOW-DONE keeps waiting: the restored guest decides what it prints next.
   */
  async restoreCapturedState(state: ArrayBuffer): Promise<void> {
    if (this.freed) throw new Error("guest destroyed");
    await this.machine.restoreState(state);
  }

  /** Sends raw text to the guest's serial console (a reply to a prompt the guest printed). */
  sendToConsole(text: string): void {
    if (this.freed) throw new Error("guest destroyed");
    this.machine.send(text);
  }

  /**
   * Saves the machine state for a warm start: stops, drains the disk queue, saves, and resumes unless
   * `resume` is false. Call it between commands (at the prompt).
   */
  async saveState(options: { resume?: boolean } = {}): Promise<ArrayBuffer> {
    await this.machine.queueSettled();
    await this.stop();
    const state = await this.machine.saveState();
    if (options.resume ?? true) await this.resume();
    return state;
  }

  /**
   * Restores a state from `saveState()` into this emulator (same options, same disk contents). Stops and
   * drains first; completions of requests from before the restore are dropped.
   */
  async restoreState(state: ArrayBuffer): Promise<void> {
    await this.machine.queueSettled();
    await this.stop();
    await this.machine.restoreState(state);
    await this.resume();
  }

  /** Stops the emulator, drains the disk and frees the emulator. The AsyncDisk is left open. */
  async destroy(): Promise<void> {
    if (this.machine.closed) return;
    this.machine.close();
    // v86 cannot be destroyed before it finished loading (it has no CPU yet); loading takes well under 10 s.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const loaded = await Promise.race([
      this.machine.loaded.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10_000))),
    ]);
    clearTimeout(timer);
    if (!loaded) throw new Error("v86 did not finish loading; cannot destroy it");
    await this.machine.destroy();
    this.freed = true;
  }
}
