/**
 * BrowserGuest: the refcow test guest (guest-images/) booted by v86 in the page, its IDE disk on an
 * `AsyncDisk` through the same hda adapter and honest-flush patch as in Node (src/vm), and driven over the
 * same serial-console protocol (REFCOW-READY, one command line, REFCOW-DONE <code>).
 *
 * What differs from the Node runner (src/vm/guest-runner.ts) is only how the emulator is built: the kernel,
 * initramfs and BIOS come from URLs of the dev server, and v86's browser scheduling is used.
 *
 * Workload phases (src/vm/workloads.ts): a command announces each phase with `REFCOW-PHASE <name>` and waits
 * for an empty line; the guest labels the disk requests that follow with `phaseLabel(name)`, runs `onPhase`
 * (a snapshot before the phase, say) and then answers, as the Node session does (src/vm/guest-session.ts).
 *
 * Snapshots with VM state: `pause()` stops the CPU and drains the disk queue, `saveState()` / `restoreState()`
 * then work between or in the middle of commands. A restore interrupts the command the host was waiting for
 * (its promise rejects) and re-synchronises the console: the restored guest may still finish a command it was
 * running when the state was saved (or wait in a phase announcement), so the host sends an empty line and a
 * marker command, and waits for the marker's echo before the next command goes out.
 */
import { V86, type V86Image, type V86Options } from "v86";
import type { AsyncDisk } from "../vm/async-disk.js";
import { HdaAdapter } from "../vm/hda-adapter.js";
import { installHonestFlush, type HonestFlushHandle } from "../vm/ide-flush.js";
import { DONE_LINE, PHASE_LINE, READY_LINE, SerialConsole } from "../vm/serial-console.js";

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
  files: GuestFiles;
  cmdline: string;
  memoryMiB: number;
  /** Time allowed to reach the command prompt, in ms (default 180 s). */
  bootTimeoutMs?: number;
  /** Every byte the guest writes to its serial console. */
  onConsoleByte?: (byte: number) => void;
}

export interface GuestRunResult {
  exitCode: number;
  output: string;
  ms: number;
}

/** A command's wait ended because the guest was restored to another state. */
export class GuestRestoredError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GuestRestoredError";
  }
}

export class BrowserGuest {
  readonly adapter: HdaAdapter;
  readonly console = new SerialConsole();
  /** ms from building the emulator to the command prompt. */
  readyMs = 0;
  private readonly emulator: V86;
  private readonly loaded: Promise<void>;
  private flushHandle: HonestFlushHandle | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private interrupt: ((e: Error) => void) | undefined;
  private paused = false;
  private syncCounter = 0;
  private phaseChain: Promise<void> = Promise.resolve();

  /** Label of the disk requests of an announced phase (default: the phase's name). */
  phaseLabel: (phase: string) => string = (phase) => phase;
  /** Runs when the guest announces a phase, before it goes on; the guest waits for the promise. */
  onPhase: ((phase: string) => Promise<void> | void) | undefined;
  /** The first error `onPhase` raised (the guest was let go on anyway). */
  phaseError: Error | undefined;

  private constructor(private readonly opts: BrowserGuestOptions) {
    this.adapter = new HdaAdapter(opts.disk);
    this.adapter.phase = "boot";
    this.adapter.onError = (err) => this.console.close(new Error(`guest disk error: ${err.message}`));
    const settings: V86Options = {
      wasm_path: opts.files.wasm,
      memory_size: opts.memoryMiB << 20,
      vga_memory_size: 2 << 20,
      bios: { url: opts.files.bios },
      vga_bios: { url: opts.files.vgaBios },
      bzimage: { url: opts.files.bzImage },
      initrd: { url: opts.files.initrd },
      cmdline: opts.cmdline,
      hda: this.adapter as unknown as V86Image,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      acpi: false,
    };
    const emulator = new V86(settings);
    this.emulator = emulator;
    emulator.add_listener("serial0-output-byte", (b: number) => {
      this.console.push(b);
      opts.onConsoleByte?.(b);
    });
    this.console.onLine = (line) => this.consoleLine(line);
    emulator.add_listener("emulator-ready", () => {
      this.flushHandle = installHonestFlush(emulator, this.adapter);
    });
    this.loaded = new Promise<void>((resolve) => emulator.add_listener("emulator-loaded", () => resolve()));
  }

  /** Builds the emulator and resolves when the guest's control loop is at its prompt. */
  static async boot(opts: BrowserGuestOptions): Promise<BrowserGuest> {
    const t0 = performance.now();
    const g = new BrowserGuest(opts);
    try {
      await g.loaded;
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
      this.emulator.serial0_send("\n");
    });
  }

  /** FLUSH CACHE commands the guest sent. */
  get guestFlushes(): number {
    return this.flushHandle?.guestFlushes ?? 0;
  }

  /** True while a host command is running. */
  get busy(): boolean {
    return this.interrupt !== undefined;
  }

  /**
   * Runs one shell command line in the guest; commands run one at a time in call order. `phase` labels the
   * disk requests issued meanwhile (the adapter's records).
   */
  run(command: string, options: { phase?: string; timeoutMs?: number } = {}): Promise<GuestRunResult> {
    if (command.includes("\n")) return Promise.reject(new Error("one command line, without newlines"));
    const p = this.queue.then(() => this.runNow(command, options));
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Runs `command` and throws when it exits non-zero; returns its output. */
  async check(command: string, options: { phase?: string; timeoutMs?: number } = {}): Promise<string> {
    const r = await this.run(command, options);
    if (r.exitCode !== 0) throw new Error(`guest command failed (exit ${r.exitCode}): ${command}\n${r.output}`);
    return r.output;
  }

  private async runNow(command: string, options: { phase?: string; timeoutMs?: number }): Promise<GuestRunResult> {
    const prevPhase = this.adapter.phase;
    if (options.phase) this.adapter.phase = options.phase;
    const from = this.console.position;
    const t = performance.now();
    const interrupted = new Promise<never>((_, reject) => (this.interrupt = reject));
    try {
      this.emulator.serial0_send(command + "\n");
      const m = await Promise.race([this.console.waitFor(DONE_LINE, from, options.timeoutMs ?? 600_000), interrupted]);
      const end = m.match[0].startsWith("\n") ? m.start + 1 : m.start;
      return { exitCode: Number(m.match[1]), output: this.console.textBetween(from, end).replace(/\r/g, ""), ms: performance.now() - t };
    } finally {
      this.interrupt = undefined;
      if (options.phase) this.adapter.phase = prevPhase;
    }
  }

  /** Stops the CPU and waits until no disk request is pending (idempotent). */
  async pause(): Promise<void> {
    await this.loaded;
    if (!this.paused) {
      this.paused = true;
      await this.emulator.stop();
    }
    await this.adapter.whenIdle();
  }

  /** Resumes after `pause()`. */
  async resume(): Promise<void> {
    if (!this.paused) return;
    this.paused = false;
    await this.emulator.run();
  }

  /** v86's machine state (CPU, RAM, devices; no disk data). Call between `pause()` and `resume()`. */
  async saveState(): Promise<ArrayBuffer> {
    if (!this.paused || !this.adapter.idle) throw new Error("saveState: pause the guest first");
    return this.emulator.save_state();
  }

  /**
   * Restores a state from `saveState()` (the disk must already hold the matching contents) and resumes. A
   * command in progress is abandoned (its promise rejects); the console is re-synchronised before the next.
   */
  async restoreState(state: ArrayBuffer, why: string): Promise<void> {
    if (!this.paused || !this.adapter.idle) throw new Error("restoreState: pause the guest first");
    await this.emulator.restore_state(state);
    this.adapter.invalidateCallbacks();
    installHonestFlush(this.emulator, this.adapter);
    this.interrupt?.(new GuestRestoredError(`the guest was restored (${why}) while this command ran`));
    this.interrupt = undefined;
    await this.resume();
    // Whatever the restored guest still prints for a command of its past ends before this marker's echo.
    const marker = `REFCOW-SYNC-${++this.syncCounter}-${Math.floor(performance.now())}`;
    const sync = this.queue.then(async () => {
      const from = this.console.position;
      // An empty line first: it answers a phase announcement the state was saved in (the guest then finishes
      // that command), or is a ping at the prompt; either way the marker command is read by the control loop.
      this.emulator.serial0_send(`\necho ${marker}\n`);
      const m = await this.console.waitFor(new RegExp(`(?:^|\\n)${marker}\\r?\\n`), from, 600_000);
      await this.console.waitFor(DONE_LINE, m.end - 1, 60_000);
    });
    this.queue = sync.catch(() => undefined);
    await sync;
  }

  /** Stops and frees the emulator; the disk is left open. */
  async destroy(): Promise<void> {
    this.console.close(new Error("guest destroyed"));
    this.interrupt?.(new Error("guest destroyed"));
    await this.loaded;
    await this.emulator.destroy();
    await this.adapter.whenIdle();
  }
}
