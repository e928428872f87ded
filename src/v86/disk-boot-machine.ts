/**
 * DiskBootMachine: a v86 PC that boots from its disk, as a real one does — SeaBIOS, then the boot sector of
 * the disk (IDE primary master, or refcow's virtio-blk device, which SeaBIOS's virtio-blk driver boots),
 * with no kernel handed to the emulator. Its serial port (COM1) is the machine's console.
 *
 *   const m = new DiskBootMachine({ disk, firmware, wasmPath, memoryMiB: 128, onSerial, ... });
 *   m.sendSerial(bytes);                 // keys to the guest
 *   await m.stop();                      // CPU stopped, no disk request in flight
 *   const state = await m.saveState();   // machine state (RAM, CPU, devices; no disk data)
 *   await m.restoreState(state); await m.cont();
 *   await m.destroy();                   // the disk stays open: its owner closes it
 *
 * It reports what ends a machine from the inside: the kernel's last line on the console when the guest
 * powers off — "reboot: Power down", or "reboot: System halted", which is what a poweroff becomes on a PC
 * without ACPI (kernel/reboot.c turns LINUX_REBOOT_CMD_POWER_OFF into a halt when nothing can cut the
 * power; v86 is run without ACPI), once the CPU has then stopped for good (halted with interrupts off: a
 * program printing that line does not end the machine) — and SeaBIOS's "No bootable device"
 * (bios-messages.ts), whose screen lines reach the console through `onBiosLine`.
 *
 * Saved states are wrapped with what the emulator was built with (machine-state.ts): RAM size and disk
 * type, so that a state is restored only into a machine built the same way.
 */
import { V86, type V86Image, type V86Options } from "v86";
import { attachBiosMessages, BiosMessages } from "./bios-messages.js";
import { joinMachineState, splitMachineState } from "./machine-state.js";
import type { RefcowV86Disk } from "./v86-disk.js";

/** The kernel's last line when the guest powers off or halts (kernel/reboot.c, pr_emerg, prefixed "reboot: "). */
export const POWER_DOWN_LINE = /(^|\s)reboot: (Power down|System halted)\s*$/;
/** EFLAGS.IF. */
const FLAG_INTERRUPT = 0x200;
/** VGA RAM: text consoles and SeaBIOS's modes need little; a smaller one keeps the saved states smaller. */
const VGA_MEMORY_MIB = 8;
/** v86's boot order word: hard disk first, then CD, then floppy (CMOS 0x3D/0x38 nibbles 2, 3, 1). */
const BOOT_HARDDISK_CD_FLOPPY = 0x132;

export interface MachineSettings {
  memoryMiB: number;
  disk: "ide" | "virtio";
  vgaMiB: number;
}

/**
 * What the machine needs of its disk: a RefcowV86Disk, or anything shaped like one (a benchmark hands v86
 * a raw image in its own buffer through `v86Options.hda`, with `attach` doing nothing).
 */
export type BootDisk = Pick<RefcowV86Disk, "type" | "v86Options" | "attach" | "initialState" | "quiesce" | "saveState" | "restoreState">;

export interface DiskBootMachineOptions {
  disk: BootDisk;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  /** v86's wasm file. */
  wasmPath: string;
  memoryMiB: number;
  /** A state from `saveState()`: the machine resumes it instead of booting. */
  initialState?: ArrayBuffer;
  /** Bytes the guest writes to its serial console, a burst at a time. */
  onSerial?: (bytes: Uint8Array) => void;
  /** SeaBIOS's screen lines. */
  onBiosLine?: (line: string) => void;
  /** SeaBIOS found nothing to boot. */
  onNoBootableDevice?: (line: string) => void;
  /** The guest powered off. */
  onPowerOff?: () => void;
  /** More v86 settings, over the ones above (in a page: `screen_container`, `disable_keyboard: false`). */
  v86Options?: Partial<V86Options>;
}

export class DiskBootMachine {
  readonly emulator: V86;
  readonly settings: MachineSettings;
  /** Resolves when v86 has loaded (and restored the initial state); the CPU runs from then on. */
  readonly loaded: Promise<void>;
  readonly bios: BiosMessages;
  private paused = false;
  private destroyed = false;
  private line = "";
  private out: number[] = [];
  private outScheduled = false;
  /** Host ms the CPU ran (QEMU's "VM clock" of a snapshot). */
  private ranMs = 0;
  private runningSince: number | undefined;

  constructor(private readonly opts: DiskBootMachineOptions) {
    this.settings = { memoryMiB: opts.memoryMiB, disk: opts.disk.type, vgaMiB: VGA_MEMORY_MIB };
    const settings: V86Options = {
      wasm_path: opts.wasmPath,
      memory_size: opts.memoryMiB << 20,
      vga_memory_size: VGA_MEMORY_MIB << 20,
      bios: { buffer: opts.firmware.bios },
      vga_bios: { buffer: opts.firmware.vgaBios },
      boot_order: BOOT_HARDDISK_CD_FLOPPY as V86Options["boot_order"],
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      acpi: false,
      ...opts.v86Options,
      ...opts.disk.v86Options,
    };
    if (opts.initialState) {
      const st = splitMachineState(opts.initialState);
      checkSettings(st.machine, this.settings);
      settings.initial_state = { buffer: opts.disk.initialState(opts.initialState) } as V86Image;
    }
    this.bios = new BiosMessages({ onScreenLine: opts.onBiosLine, onNoBootableDevice: opts.onNoBootableDevice });
    const emulator = new V86(settings);
    this.emulator = emulator;
    opts.disk.attach(emulator);
    emulator.add_listener("emulator-ready", () => attachBiosMessages(emulator, this.bios));
    emulator.add_listener("serial0-output-byte", (b: number) => this.serialByte(b));
    this.loaded = new Promise<void>((resolve) =>
      emulator.add_listener("emulator-loaded", () => {
        this.runningSince = performance.now();
        resolve();
      }),
    );
  }

  /** True while stopped by `stop()`. */
  get stopped(): boolean {
    return this.paused;
  }

  /** Host ms the guest's CPU has run so far. */
  get runMs(): number {
    return this.ranMs + (this.runningSince === undefined ? 0 : performance.now() - this.runningSince);
  }

  /** Keys for the guest's serial console (bytes; v86 takes one character code per byte). */
  sendSerial(bytes: Uint8Array): void {
    if (this.destroyed) return;
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    this.emulator.serial0_send(s);
  }

  /** Stops the CPU and waits until the disk has no request in flight (quiesced). */
  async stop(): Promise<void> {
    await this.loaded;
    if (this.runningSince !== undefined) this.ranMs += performance.now() - this.runningSince;
    this.runningSince = undefined;
    this.paused = true;
    await this.opts.disk.quiesce(this.emulator);
  }

  /** Lets the CPU run again. */
  async cont(): Promise<void> {
    if (this.destroyed || !this.paused) return;
    this.paused = false;
    this.runningSince = performance.now();
    await this.emulator.run();
  }

  /** The machine state, stopped (call `stop()` first). */
  async saveState(): Promise<ArrayBuffer> {
    if (!this.paused) throw new Error("the machine must be stopped to save its state");
    const st = splitMachineState(await this.opts.disk.saveState(this.emulator));
    return joinMachineState(st.v86, st.device, this.settings);
  }

  /** Restores a state from `saveState()` into the stopped machine; `cont()` runs it. */
  async restoreState(state: ArrayBuffer): Promise<void> {
    if (!this.paused) throw new Error("the machine must be stopped to restore a state");
    checkSettings(splitMachineState(state).machine, this.settings);
    await this.opts.disk.restoreState(this.emulator, state);
  }

  /** Stops and frees the emulator (the disk stays open; its requests have completed). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await this.loaded;
    if (!this.paused) await this.stop();
    this.destroyed = true;
    this.flushSerial();
    await this.emulator.destroy();
  }

  private serialByte(b: number): void {
    this.out.push(b);
    if (!this.outScheduled) {
      // A burst of output arrives within one emulator slice: hand it on once per burst.
      this.outScheduled = true;
      nextTurn(() => this.flushSerial());
    }
    if (b === 0x0a) {
      const line = this.line.replace(/\r$/, "");
      this.line = "";
      if (POWER_DOWN_LINE.test(line)) this.confirmPowerOff();
    } else if (this.line.length < 256) {
      this.line += String.fromCharCode(b);
    }
  }

  /** Reports the power-off once the CPU is halted with interrupts off (checked for a few seconds). */
  private confirmPowerOff(): void {
    const cpu = (this.emulator as unknown as { v86?: { cpu?: { in_hlt?: ArrayLike<number>; flags?: ArrayLike<number> } } }).v86?.cpu;
    let tries = 0;
    const check = () => {
      if (this.destroyed) return;
      // Without those internals (another v86), the kernel's line is taken at its word.
      const dead = !cpu?.in_hlt || !cpu.flags ? true : cpu.in_hlt[0] !== 0 && (cpu.flags[0]! & FLAG_INTERRUPT) === 0;
      if (dead) {
        this.flushSerial();
        this.opts.onPowerOff?.();
      } else if (++tries < 100) {
        setTimeout(check, 30);
      }
    };
    setTimeout(check, 30);
  }

  private flushSerial(): void {
    this.outScheduled = false;
    if (this.out.length === 0) return;
    const bytes = Uint8Array.from(this.out);
    this.out = [];
    this.opts.onSerial?.(bytes);
  }
}

/** After the current task (Node's setImmediate; a page has none). */
const nextTurn: (fn: () => void) => void = typeof setImmediate === "function" ? (fn) => setImmediate(fn) : (fn) => setTimeout(fn, 0);

/** Refuses a state saved by a machine built otherwise (RAM size, disk type, VGA RAM). */
export function checkSettings(saved: unknown, current: MachineSettings): void {
  if (saved === undefined) throw new Error("the saved state does not say what machine saved it (not a state refcow boot saved)");
  const s = saved as Partial<MachineSettings>;
  const diffs: string[] = [];
  if (s.memoryMiB !== current.memoryMiB) diffs.push(`${s.memoryMiB} MiB of RAM (use -m ${s.memoryMiB})`);
  if (s.disk !== current.disk) diffs.push(`a${s.disk === "ide" ? "n" : ""} ${s.disk} disk (use --disk ${s.disk})`);
  if (s.vgaMiB !== current.vgaMiB) diffs.push(`${s.vgaMiB} MiB of VGA RAM`);
  if (diffs.length) throw new Error(`the state was saved by a machine with ${diffs.join(" and ")}`);
}
