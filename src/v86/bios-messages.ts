/**
 * SeaBIOS's messages, for a machine that boots from its disk: SeaBIOS writes every line it prints (on the
 * VGA screen and its debug lines) to QEMU's debug console port, 0x402, when a read of that port answers
 * 0xE9 (QEMU's debugcon read-back value; SeaBIOS checks it once at start and stays silent otherwise).
 * v86 has no such device: `attachBiosMessages` puts one on the emulator's I/O port table.
 *
 * Of those lines, the ones SeaBIOS also shows on the screen (its banner, "Booting from ...", "Boot failed:
 * ...", "No bootable device.") are passed to `onScreenLine`, so that they reach the console of a headless
 * machine; "No bootable device" — every boot device tried and failed; SeaBIOS would wait 60 s and
 * reboot — goes to `onNoBootableDevice` too. The debug-only lines are dropped.
 */
import { v86Cpu } from "./virtio-blk-v86.js";

export const BIOS_DEBUG_PORT = 0x402;
const DEBUGCON_READBACK = 0xe9;

/** Lines SeaBIOS prints on the screen as well (printf rather than dprintf), as they start. */
const SCREEN_LINE = /^(SeaBIOS \(version|Booting from (?![0-9a-f]{4}:)|Boot failed|No bootable device|Select boot device)/;
export const NO_BOOTABLE_DEVICE = /^No bootable device/;

export interface BiosMessageHandlers {
  onScreenLine?: (line: string) => void;
  onNoBootableDevice?: (line: string) => void;
}

/** Collects the debug port's bytes into lines and sorts them. */
export class BiosMessages {
  private line = "";
  private lastScreenLine: string | undefined;
  /** The last lines, screen and debug alike (for error messages). */
  readonly recent: string[] = [];

  constructor(private readonly handlers: BiosMessageHandlers = {}) {}

  push(byte: number): void {
    if (byte === 0x0a) {
      const line = this.line.replace(/\r$/, "");
      this.line = "";
      this.recent.push(line);
      if (this.recent.length > 50) this.recent.shift();
      // SeaBIOS logs its banner once early and prints it again on the screen: shown once.
      if (SCREEN_LINE.test(line) && line !== this.lastScreenLine) this.handlers.onScreenLine?.(line);
      if (SCREEN_LINE.test(line)) this.lastScreenLine = line;
      if (NO_BOOTABLE_DEVICE.test(line)) this.handlers.onNoBootableDevice?.(line);
    } else if (this.line.length < 4096) {
      this.line += String.fromCharCode(byte);
    }
  }
}

/** Registers the debug port on `emulator` (in its `emulator-ready` event, before the BIOS runs). */
export function attachBiosMessages(emulator: unknown, messages: BiosMessages): void {
  const io = v86Cpu(emulator).io;
  const owner = { name: "bios-debugcon" };
  io.register_read(BIOS_DEBUG_PORT, owner, () => DEBUGCON_READBACK);
  io.register_write(BIOS_DEBUG_PORT, owner, (b: number) => messages.push(b & 0xff));
}
