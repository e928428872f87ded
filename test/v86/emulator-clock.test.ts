import { describe, expect, it } from "vitest";
import type { AsyncDisk, DiskDone, WriteData } from "../../src/disk/async-disk.js";
import type { DiskDevice } from "../../src/v86/disk-device.js";
import { EMULATOR_TIME_CATEGORIES, EmulatorClock } from "../../src/v86/emulator-clock.js";

/**
 * A stand-in for v86 and a disk device, on a stepped clock: every function advances the clock by a known
 * amount, so each category's exclusive time is known exactly.
 */
function rig() {
  let t = 0;
  const step = (ms: number) => (t += ms);
  const inHlt = new Uint8Array(1);
  let pendingDone: DiskDone | undefined;
  const disk: AsyncDisk = {
    size: 1 << 20,
    read: () => undefined,
    write(_offset: number, _data: WriteData, done: DiskDone) {
      step(3); // the ring hand-off
      pendingDone = done;
    },
    flush: () => undefined,
  };
  const cpu = {
    in_hlt: inHlt,
    io: {
      port_read8: () => (step(1), 0),
      port_read16: () => 0,
      port_read32: () => 0,
      port_write8(this: unknown) {
        step(2); // the device's own emulation...
        device.disk.write(0, new Uint8Array(512), () => {
          step(4); // ...and its completion, later
          cpu.device_raise_irq(14);
        });
        step(1);
      },
      port_write16: () => undefined,
      port_write32: () => undefined,
    },
    device_raise_irq: (_irq: number) => step(0.5),
    device_lower_irq: () => undefined,
    main_loop() {
      step(10); // guest code
      cpu.io.port_write8();
      step(5);
      inHlt[0] = 1; // the guest halts, the request in flight
      return 1;
    },
  };
  const device = {
    disk,
    pending: 0,
    pollFromEmulator: () => step(0.25),
  } as unknown as DiskDevice & { disk: AsyncDisk; pending: number };
  return { cpu, device, disk, step, now: () => t, complete: () => pendingDone!(undefined, undefined, undefined), inHlt };
}

describe("EmulatorClock", () => {
  it("charges every instant to one category, nested calls exclusively", () => {
    const r = rig();
    const clock = new EmulatorClock({ v86: { cpu: r.cpu } }, r.device, r.now);
    r.step(7); // before the loop runs: between slices
    r.device.pending = 1;
    r.cpu.main_loop();
    r.step(20); // halted with a request in flight
    r.complete(); // the completion arrives in the event loop
    r.device.pending = 0;
    r.step(2); // still halted: nothing in flight now (the completion only runs on the next loop)
    r.device.pollFromEmulator(false);
    const t = clock.take();
    expect(t.ms.between).toBe(7);
    expect(t.ms.guest).toBe(15);
    expect(t.ms.device).toBe(3);
    expect(t.ms.submit).toBe(3);
    expect(t.ms.completion).toBe(4);
    expect(t.ms.irq).toBe(0.5);
    // Charged as "waiting" from main_loop's halted return, while `pending` was 1 then.
    expect(t.ms.waiting).toBe(22);
    expect(t.ms.poll).toBe(0.25);
    expect(t.ms.idle).toBe(0);
    const sum = EMULATOR_TIME_CATEGORIES.reduce((a, c) => a + t.ms[c], 0);
    expect(sum).toBe(t.wallMs);
    expect(t).toMatchObject({ mainLoops: 1, halts: 1, irqs: 1, polls: 1, submits: 1, completions: 1 });
    // The next interval starts empty.
    expect(clock.take().wallMs).toBe(0);
  });

  it("tells halted with nothing in flight (idle) from between slices", () => {
    const r = rig();
    const clock = new EmulatorClock({ v86: { cpu: r.cpu } }, r.device, r.now);
    r.cpu.main_loop(); // pending stays 0: halted idle after it
    r.step(6);
    const t = clock.take();
    expect(t.ms.idle).toBe(6);
    expect(t.ms.waiting).toBe(0);
  });

  it("puts every method back on uninstall", () => {
    const r = rig();
    const before = { loop: r.cpu.main_loop, port: r.cpu.io.port_write8, irq: r.cpu.device_raise_irq, write: r.disk.write };
    const clock = new EmulatorClock({ v86: { cpu: r.cpu } }, r.device, r.now);
    expect(r.cpu.main_loop).not.toBe(before.loop);
    clock.uninstall();
    expect(r.cpu.main_loop).toBe(before.loop);
    expect(r.cpu.io.port_write8).toBe(before.port);
    expect(r.cpu.device_raise_irq).toBe(before.irq);
    expect(r.disk.write).toBe(before.write);
    expect(Object.prototype.hasOwnProperty.call(r.device, "pollFromEmulator")).toBe(true);
  });

  it("refuses an emulator whose internals are not there", () => {
    const r = rig();
    expect(() => new EmulatorClock({ v86: {} }, r.device)).toThrow(/v86 internals changed/);
  });
});
