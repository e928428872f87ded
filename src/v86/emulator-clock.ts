/**
 * EmulatorClock: where the emulator's thread spends its time, charged to exclusive categories with the host's
 * clock (performance.now) around v86's own entry points and the disk device's. Every instant of the thread
 * belongs to exactly one category, so the categories add up to the wall time between two `take()` calls.
 *
 *   guest        inside v86's `cpu.main_loop` and in none of the categories below: emulated guest code, its
 *                JIT, v86's timers and interrupt controller
 *   device       port and MMIO handlers (`cpu.io.port_*`, `cpu.mmap_*`): device emulation, every device
 *   submit       the disk device handing a request to its disk (`disk.read/write/flush`): the ring hand-off
 *   poll         the device reaping completions from v86's run loop (`pollFromEmulator`), its spin included
 *   completion   the disk's completion callbacks: the device completing the request to the guest
 *   irq          `cpu.device_raise_irq` / `device_lower_irq` (any device): the interrupt's delivery
 *   waiting      outside main_loop, the guest halted, a disk request in flight: waiting for the disk
 *   idle         outside main_loop, the guest halted, no disk request in flight: the guest has nothing to do
 *   between      outside main_loop, the guest not halted: v86 yielded to the event loop between two slices
 *
 * v86 (src/main.js) runs `cpu.main_loop()` from setImmediate/setTimeout; main_loop returns 0 after a slice of
 * about 1 ms, or the ms to the next timer once the guest halts (HLT with interrupts on). A device raising an
 * interrupt while v86 sleeps calls its `stop_idling`, which reschedules the loop at once.
 *
 * Counts kept alongside: main_loop calls, those that returned halted, interrupts raised, polls, submissions,
 * completions, and category switches (each costs two clock reads: the instrumentation's own overhead).
 */
import type { AsyncDisk } from "../disk/async-disk.js";
import type { DiskDevice } from "./disk-device.js";

export const EMULATOR_TIME_CATEGORIES = ["guest", "device", "submit", "poll", "completion", "irq", "waiting", "idle", "between"] as const;
export type EmulatorTimeCategory = (typeof EMULATOR_TIME_CATEGORIES)[number];

export interface EmulatorTime {
  /** Wall time covered, ms. */
  wallMs: number;
  /** Exclusive ms per category (they sum to wallMs). */
  ms: Record<EmulatorTimeCategory, number>;
  mainLoops: number;
  /** main_loop calls that returned with the guest halted. */
  halts: number;
  irqs: number;
  polls: number;
  submits: number;
  completions: number;
  switches: number;
}

const PORT_METHODS = ["port_read8", "port_read16", "port_read32", "port_write8", "port_write16", "port_write32"] as const;
const MMIO_METHODS = ["mmap_read8", "mmap_read16", "mmap_read32", "mmap_write8", "mmap_write16", "mmap_write32", "mmap_write64", "mmap_write128"] as const;

type AnyFn = (...args: unknown[]) => unknown;
interface V86Cpu {
  main_loop: AnyFn;
  in_hlt: ArrayLike<number>;
  io: Record<string, unknown>;
  device_raise_irq: AnyFn;
  device_lower_irq: AnyFn;
  [k: string]: unknown;
}

function zeroTotals(): Record<EmulatorTimeCategory, number> {
  return Object.fromEntries(EMULATOR_TIME_CATEGORIES.map((c) => [c, 0])) as Record<EmulatorTimeCategory, number>;
}

export class EmulatorClock {
  private totals = zeroTotals();
  private current: EmulatorTimeCategory = "between";
  private since: number;
  private started: number;
  private counts = { mainLoops: 0, halts: 0, irqs: 0, polls: 0, submits: 0, completions: 0, switches: 0 };
  private readonly restores: (() => void)[] = [];

  /**
   * Instruments `emulator` (a V86 instance: its `v86.cpu`), the disk `device` and its `disk` (none: a disk
   * v86 serves itself, whose time is the device's; halted time is then all `idle`). Throws when v86's
   * internals are not where this expects them.
   */
  constructor(
    emulator: unknown,
    device: DiskDevice | undefined,
    /** The clock, ms (default performance.now; tests step their own). */
    private readonly now: () => number = () => performance.now(),
  ) {
    this.since = this.started = now();
    const cpu = (emulator as { v86?: { cpu?: V86Cpu } }).v86?.cpu;
    if (!cpu || typeof cpu.main_loop !== "function" || typeof cpu.io !== "object" || typeof cpu.device_raise_irq !== "function" || typeof cpu.in_hlt !== "object") {
      throw new Error("v86 internals changed: cpu.main_loop / cpu.io / cpu.device_raise_irq / cpu.in_hlt not found");
    }
    const halted = cpu.in_hlt;
    const clock = this;
    const mainLoop = cpu.main_loop;
    this.replace(cpu as unknown as Record<string, unknown>, "main_loop", function (this: unknown, ...args: unknown[]) {
      clock.switchTo("guest");
      clock.counts.mainLoops++;
      try {
        return mainLoop.apply(this, args);
      } finally {
        const isHalted = halted[0] !== 0;
        if (isHalted) clock.counts.halts++;
        clock.switchTo(isHalted ? ((device?.pending ?? 0) > 0 ? "waiting" : "idle") : "between");
      }
    });
    for (const m of PORT_METHODS) this.wrap(cpu.io, m, "device");
    for (const m of MMIO_METHODS) if (typeof cpu[m] === "function") this.wrap(cpu as unknown as Record<string, unknown>, m, "device");
    this.wrap(cpu as unknown as Record<string, unknown>, "device_raise_irq", "irq", () => clock.counts.irqs++);
    this.wrap(cpu as unknown as Record<string, unknown>, "device_lower_irq", "irq");
    if (device) this.wrapDevice(device);
  }

  private wrapDevice(device: DiskDevice): void {
    const clock = this;
    this.wrap(device as unknown as Record<string, unknown>, "pollFromEmulator", "poll", () => clock.counts.polls++);
    const disk = (device as { disk?: AsyncDisk }).disk as unknown as Record<string, unknown> | undefined;
    if (!disk) throw new Error("EmulatorClock: the device has no disk");
    for (const m of ["read", "write", "flush"] as const) {
      const original = disk[m] as AnyFn;
      this.replace(disk, m, function (this: unknown, ...args: unknown[]) {
        // The completion callback is the last argument of each AsyncDisk method.
        const done = args[args.length - 1] as AnyFn;
        args[args.length - 1] = function (this: unknown, ...res: unknown[]) {
          clock.counts.completions++;
          return clock.within("completion", () => done.apply(this, res));
        };
        clock.counts.submits++;
        return clock.within("submit", () => original.apply(this, args));
      });
    }
  }

  /** The time since the last take (or the construction), and starts the next interval. */
  take(): EmulatorTime {
    const now = this.now();
    this.totals[this.current] += now - this.since;
    this.since = now;
    const out: EmulatorTime = { wallMs: now - this.started, ms: this.totals, ...this.counts };
    this.totals = zeroTotals();
    this.started = now;
    this.counts = { mainLoops: 0, halts: 0, irqs: 0, polls: 0, submits: 0, completions: 0, switches: 0 };
    return out;
  }

  /** Puts every instrumented method back. */
  uninstall(): void {
    for (const r of this.restores.splice(0).reverse()) r();
  }

  private switchTo(c: EmulatorTimeCategory): EmulatorTimeCategory {
    const now = this.now();
    this.totals[this.current] += now - this.since;
    this.since = now;
    const previous = this.current;
    this.current = c;
    this.counts.switches++;
    return previous;
  }

  private within<T>(c: EmulatorTimeCategory, fn: () => T): T {
    const previous = this.switchTo(c);
    try {
      return fn();
    } finally {
      this.switchTo(previous);
    }
  }

  private wrap(obj: Record<string, unknown>, name: string, c: EmulatorTimeCategory, count?: () => void): void {
    const original = obj[name] as AnyFn;
    if (typeof original !== "function") throw new Error(`v86 internals changed: ${name} not found`);
    const clock = this;
    this.replace(obj, name, function (this: unknown, ...args: unknown[]) {
      count?.();
      return clock.within(c, () => original.apply(this, args));
    });
  }

  private replace(obj: Record<string, unknown>, name: string, fn: AnyFn): void {
    const own = Object.prototype.hasOwnProperty.call(obj, name);
    const before = obj[name];
    obj[name] = fn;
    this.restores.push(() => {
      if (own) obj[name] = before;
      else delete obj[name];
    });
  }
}
