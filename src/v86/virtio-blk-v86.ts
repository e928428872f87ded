/**
 * Plugs a VirtioBlk (virtio-blk.ts) into a v86 emulator's PCI bus, at runtime, without changing v86.
 *
 * v86 0.5.462 internals used (names kept in its release build; each is checked, and a clear error is
 * thrown if v86 changed shape):
 *  - `emulator.v86.cpu`: `memory_size[0]` (RAM bytes), `mem8` (a view of RAM, re-read on every access
 *    because v86 may replace it), `write_blob(data, addr)` (writes RAM and invalidates JIT-compiled code
 *    on those pages), `io.ports[port]` and `io.register_read(port, device, r8, r16, r32)` /
 *    `io.register_write(port, device, w8, w16, w32)` (the I/O port table),
 *  - `cpu.devices.pci`: `register_device({ pci_id, pci_space, pci_bars, name })` (PCI config space; the
 *    ports of an I/O BAR are those registered at the BAR's initial address: when the guest moves the BAR,
 *    v86 moves the port entries), `device_spaces[pci_id]`, `raise_irq(pci_id)` / `lower_irq(pci_id)`
 *    (INTA# through the PIIX3's PIRQ routing),
 *  - `emulator.v86`: `running`, `idle` (true while a tick is scheduled: the CPU loop has yielded) and
 *    `next_tick(ms)` (schedules the loop's next turn; a later call supersedes the pending one).
 *
 * Attach in the `emulator-ready` event (before the BIOS enumerates PCI, and before v86 restores an
 * `initial_state`: v86 saves and restores the device's PCI config space with its own, so BARs and the
 * interrupt line come back; the device's registers are `VirtioBlk.getState()` and go next to v86's state).
 */
import type { VirtioBlk } from "./virtio-blk.js";
import { IO_BAR_SIZE, VIRTIO_BLK_LEGACY_DEVICE, VIRTIO_ID_BLOCK, VIRTIO_VENDOR } from "./virtio-blk-pci.js";

interface PortEntry {
  device?: unknown;
}
interface V86Cpu {
  memory_size: ArrayLike<number>;
  mem8: Uint8Array;
  write_blob(data: Uint8Array, addr: number): void;
  io: {
    ports: PortEntry[];
    register_read(port: number, dev: object, r8?: () => number, r16?: () => number, r32?: () => number): void;
    register_write(port: number, dev: object, w8?: (v: number) => void, w16?: (v: number) => void, w32?: (v: number) => void): void;
  };
  devices: {
    pci: {
      register_device(d: object): unknown;
      device_spaces: Array<unknown>;
      raise_irq(id: number): void;
      lower_irq(id: number): void;
    };
  };
}

export interface VirtioAttachOptions {
  /** PCI slot (device number) 1-31; default: the first free one from 13. */
  slot?: number;
  /** Initial I/O port of BAR0 (the BIOS may move it); default 0xE800. */
  port?: number;
}

export interface VirtioAttachment {
  pciId: number;
  port: number;
}

/** The emulator's CPU object, checked. */
export function v86Cpu(emulator: unknown): V86Cpu {
  const cpu = (emulator as { v86?: { cpu?: V86Cpu } }).v86?.cpu;
  if (!cpu) throw new Error("v86 internals changed: emulator.v86.cpu not found");
  const pci = cpu.devices?.pci;
  const checks: Array<[string, boolean]> = [
    ["cpu.write_blob", typeof cpu.write_blob === "function"],
    ["cpu.mem8", typeof cpu.mem8?.subarray === "function"],
    ["cpu.memory_size", typeof cpu.memory_size?.[0] === "number"],
    ["cpu.io.register_read", typeof cpu.io?.register_read === "function"],
    ["cpu.io.register_write", typeof cpu.io?.register_write === "function"],
    ["cpu.io.ports", typeof cpu.io?.ports?.length === "number"],
    ["pci.register_device", typeof pci?.register_device === "function"],
    ["pci.raise_irq", typeof pci?.raise_irq === "function"],
    ["pci.lower_irq", typeof pci?.lower_irq === "function"],
    ["pci.device_spaces", typeof pci?.device_spaces?.length === "number"],
  ];
  const missing = checks.filter(([, ok]) => !ok).map(([n]) => n);
  if (missing.length) throw new Error(`v86 internals changed: ${missing.join(", ")} not as expected`);
  return cpu;
}

/** Puts `dev` on the emulator's PCI bus as a legacy virtio-blk device. Call once, in `emulator-ready`. */
export function attachVirtioBlk(emulator: unknown, dev: VirtioBlk, options: VirtioAttachOptions = {}): VirtioAttachment {
  const cpu = v86Cpu(emulator);
  const pci = cpu.devices.pci;
  let slot = options.slot;
  if (slot === undefined) {
    for (let s = 13; s < 32; s++) if (pci.device_spaces[s << 3] === undefined) { slot = s; break; }
    if (slot === undefined) throw new Error("no free PCI slot for virtio-blk");
  }
  const pciId = slot << 3;
  if (pci.device_spaces[pciId] !== undefined) throw new Error(`PCI slot ${slot} is taken`);
  const port = options.port ?? 0xe800;
  if (port % IO_BAR_SIZE !== 0 || port < 0x1000 || port + IO_BAR_SIZE > 0x10000) throw new Error(`bad virtio-blk port 0x${port.toString(16)}`);
  for (let p = port; p < port + IO_BAR_SIZE; p++) {
    if (cpu.io.ports[p]?.device !== undefined) throw new Error(`I/O port 0x${p.toString(16)} is taken`);
  }

  dev.memory = {
    get size() {
      return cpu.memory_size[0]!;
    },
    read: (addr, length) => cpu.mem8.subarray(addr, addr + length),
    write: (addr, data) => cpu.write_blob(data, addr),
  };
  dev.irq = { raise: () => pci.raise_irq(pciId), lower: () => pci.lower_irq(pciId) };
  dev.wakeEmulator = wakeV86(emulator);

  for (let off = 0; off < IO_BAR_SIZE; off++) {
    cpu.io.register_read(port + off, dev, () => dev.ioRead(off, 1), () => dev.ioRead(off, 2), () => dev.ioRead(off, 4));
    cpu.io.register_write(port + off, dev, (v) => dev.ioWrite(off, 1, v), (v) => dev.ioWrite(off, 2, v), (v) => dev.ioWrite(off, 4, v));
  }

  const space = new Array<number>(256).fill(0);
  const put16 = (o: number, v: number) => ((space[o] = v & 0xff), (space[o + 1] = v >>> 8));
  put16(0x00, VIRTIO_VENDOR);
  put16(0x02, VIRTIO_BLK_LEGACY_DEVICE);
  put16(0x04, 0x0001); // command: I/O space enabled
  put16(0x06, 0x0000); // status: no capability list
  space[0x08] = 0; // revision 0: legacy interface
  space[0x09] = 0; // prog-if
  space[0x0a] = 0x00; // subclass: SCSI storage (as QEMU's virtio-blk-pci)
  space[0x0b] = 0x01; // class: mass storage
  space[0x0e] = 0; // header type 0
  put16(0x10, port | 1); // BAR0: I/O
  put16(0x2c, VIRTIO_VENDOR);
  put16(0x2e, VIRTIO_ID_BLOCK);
  space[0x3c] = 0; // interrupt line (the BIOS assigns it)
  space[0x3d] = 1; // interrupt pin INTA#
  pci.register_device({ pci_id: pciId, pci_space: space, pci_bars: [{ size: IO_BAR_SIZE }], name: dev.name });
  return { pciId, port };
}

/**
 * A function that makes v86's loop run at once when it has yielded (a halted guest waits for its next timer
 * event, up to 100 ms): for an interrupt raised from outside the loop (a completion reaped in the event loop),
 * so the guest takes it now. Does nothing while the loop runs or the emulator is stopped.
 */
export function wakeV86(emulator: unknown): () => void {
  const v = (emulator as { v86?: { running?: boolean; idle?: boolean; next_tick?: (t: number) => void } }).v86;
  if (!v || typeof v.next_tick !== "function" || typeof v.idle !== "boolean") return () => undefined;
  return () => {
    if (v.running && v.idle) v.next_tick!(0);
  };
}
