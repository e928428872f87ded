/**
 * BrowserGuest: the refcow test guest (guest-images/) booted by v86 in the page, its IDE disk on an
 * `AsyncDisk` through the same hda adapter and honest-flush patch as in Node (src/v86), and driven over the
 * same serial-console protocol (REFCOW-READY, one command line, REFCOW-DONE <code>).
 *
 * The emulator control is shared with the Node runner (src/guest/guest-machine.ts); what differs is how the
 * emulator is built (the kernel, initramfs and BIOS come from URLs of the dev server, v86's browser
 * scheduling is used) and the pause/restore rules below.
 *
 * Workload phases (src/guest/workloads.ts): a command announces each phase with `REFCOW-PHASE <name>` and waits
 * for an empty line; the guest labels the disk requests that follow with `phaseLabel(name)`, runs `onPhase`
 * (a snapshot before the phase, say) and then answers, as the Node session does (src/guest/guest-session.ts).
 *
 * Snapshots with VM state: `pause()` stops the CPU and drains the disk queue, `saveState()` / `restoreState()`
 * then work between or in the middle of commands. A restore interrupts the command the host was waiting for
 * (its promise rejects) and re-synchronises the console: the restored guest may still finish a command it was
 * running when the state was saved (or wait in a phase announcement), so the host sends an empty line and a
 * marker command, and waits for the marker's echo before the next command goes out.
 */
import type { AsyncDisk } from "../disk/async-disk.js";
import { GuestMachine, type GuestDiskType, type RunOptions, type RunResult } from "../guest/guest-machine.js";
import type { GuestDiskDevice } from "../guest/guest-disk-device.js";
import { DONE_LINE, PHASE_LINE, READY_LINE, type SerialConsole } from "../guest/serial-console.js";

export interface GuestFiles {
  bios: string;
  vgaBios: string;
  bzImage: string;
  initrd: string;
  /** v86's release wasm. */
  wasm: string;
}

export interface BrowserGuestOptions {
  disk: AsyncDisk;
  /** The guest's disk device (default "ide"). */
  diskType?: GuestDiskType;
  files: GuestFiles;
  cmdline: string;
  memoryMiB: number;
  /** Time allowed to reach the command prompt, in ms (default 180 s). */
  bootTimeoutMs?: number;
  /** Every byte the guest writes to its serial console. */
  onConsoleByte?: (byte: number) => void;
}

/** A command's wait ended because the guest was restored to another state. */
export class GuestRestoredError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GuestRestoredError";
  }
}

export class BrowserGuest {
  readonly adapter: GuestDiskDevice;
  readonly console: SerialConsole;
  /** ms from building the emulator to the command prompt. */
  readyMs = 0;
  private readonly machine: GuestMachine;
  private paused = false;
  private syncCounter = 0;
  private phaseChain: Promise<void> = Promise.resolve();

  /** Label of the disk requests of an announced phase (default: the phase's name). */
  phaseLabel: (phase: string) => string = (phase) => phase;
  /** Runs when the guest announces a phase, before it goes on; the guest waits for the promise. */
  onPhase: ((phase: string) => Promise<void> | void) | undefined;
  /** The first error `onPhase` raised (the guest was let go on anyway). */
  phaseError: Error | undefined;

  private constructor(opts: BrowserGuestOptions) {
    this.machine = new GuestMachine({
      disk: opts.disk,
      diskType: opts.diskType,
      wasmPath: opts.files.wasm,
      files: { bios: { url: opts.files.bios }, vgaBios: { url: opts.files.vgaBios }, bzImage: { url: opts.files.bzImage }, initrd: { url: opts.files.initrd } },
      memoryMiB: opts.memoryMiB,
      cmdline: opts.cmdline,
      honestFlush: true,
      phase: "boot",
      commandTimeoutMs: 600_000,
      onConsoleByte: opts.onConsoleByte,
      onConsoleLine: (line) => this.consoleLine(line),
    });
    this.adapter = this.machine.adapter;
    this.console = this.machine.console;
  }

  /** Builds the emulator and resolves when the guest's control loop is at its prompt. */
  static async boot(opts: BrowserGuestOptions): Promise<BrowserGuest> {
    const t0 = performance.now();
    const g = new BrowserGuest(opts);
    try {
      await g.machine.loaded;
      await g.console.waitFor(READY_LINE, 0, opts.bootTimeoutMs ?? 180_000);
    } catch (e) {
      await g.destroy().catch(() => undefined);
      throw e;
    }
    g.readyMs = performance.now() - t0;
    g.adapter.phase = "idle";
    return g;
  }

  private consoleLine(line: string): void {
    const m = PHASE_LINE.exec(line);
    if (!m) return;
    const name = m[1]!;
    // From inside the emulator's serial output: the guest issues nothing of the phase before our answer.
    this.adapter.phase = this.phaseLabel(name);
    this.phaseChain = this.phaseChain.then(async () => {
      try {
        await this.onPhase?.(name);
      } catch (e) {
        this.phaseError ??= e instanceof Error ? e : new Error(String(e));
      }
      this.machine.send("\n");
    });
  }

  /** FLUSH CACHE commands the guest sent. */
  get guestFlushes(): number {
    return this.machine.guestFlushes;
  }

  /** True while a host command is running. */
  get busy(): boolean {
    return this.machine.busy;
  }

  /**
   * Runs one shell command line in the guest; commands run one at a time in call order. `phase` labels the
   * disk requests issued meanwhile (the adapter's records).
   */
  run(command: string, options: RunOptions = {}): Promise<RunResult> {
    return this.machine.run(command, options);
  }

  /** Runs `command` and throws when it exits non-zero; returns its output. */
  check(command: string, options: RunOptions = {}): Promise<string> {
    return this.machine.check(command, options);
  }

  /** Stops the CPU and waits until no disk request is pending (idempotent). */
  async pause(): Promise<void> {
    await this.machine.loaded;
    this.paused = true;
    await this.machine.stop(); // v86's stop does nothing to a stopped CPU
  }

  /** Resumes after `pause()`. */
  async resume(): Promise<void> {
    if (!this.paused) return;
    this.paused = false;
    await this.machine.resume();
  }

  /** v86's machine state (CPU, RAM, devices; no disk data). Call between `pause()` and `resume()`. */
  async saveState(): Promise<ArrayBuffer> {
    if (!this.paused || !this.adapter.idle) throw new Error("saveState: pause the guest first");
    return this.machine.saveState();
  }

  /**
   * Restores a state from `saveState()` (the disk must already hold the matching contents) and resumes. A
   * command in progress is abandoned (its promise rejects); the console is re-synchronised before the next.
   */
  async restoreState(state: ArrayBuffer, why: string): Promise<void> {
    if (!this.paused || !this.adapter.idle) throw new Error("restoreState: pause the guest first");
    await this.machine.restoreState(state);
    this.machine.abandonCommand(new GuestRestoredError(`the guest was restored (${why}) while this command ran`));
    await this.resume();
    // Whatever the restored guest still prints for a command of its past ends before this marker's echo.
    const marker = `REFCOW-SYNC-${++this.syncCounter}-${Math.floor(performance.now())}`;
    await this.machine.enqueue(async () => {
      const from = this.console.position;
      // An empty line first: it answers a phase announcement the state was saved in (the guest then finishes
      // that command), or is a ping at the prompt; either way the marker command is read by the control loop.
      this.machine.send(`\necho ${marker}\n`);
      const m = await this.console.waitFor(new RegExp(`(?:^|\\n)${marker}\\r?\\n`), from, 600_000);
      await this.console.waitFor(DONE_LINE, m.end - 1, 60_000);
    });
  }

  /** Stops and frees the emulator; the disk is left open. */
  async destroy(): Promise<void> {
    this.machine.close();
    await this.machine.loaded;
    await this.machine.destroy();
  }
}
