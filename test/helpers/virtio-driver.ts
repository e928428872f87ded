/**
 * A minimal legacy virtio driver for tests: a fake guest RAM, one virtqueue at QUEUE_AT set up through the
 * device's registers, and requests built as the Linux driver builds them (header, data, status byte).
 */
import { expect } from "vitest";
import { RequestRecorder } from "../../src/guest/request-recorder.js";
import type { AsyncDisk } from "../../src/disk/async-disk.js";
import { REG } from "../../src/v86/virtio-blk-pci.js";
import { VirtioBlk, type VirtioBlkOptions } from "../../src/v86/virtio-blk.js";
import { DESC_F_NEXT, DESC_F_WRITE, QUEUE_ALIGN, QUEUE_SIZE, type GuestMemory } from "../../src/v86/virtqueue.js";

const MiB = 1 << 20;
export const RAM = 4 * MiB;
export const QUEUE_AT = 0x100000;

export class FakeRam implements GuestMemory {
  readonly bytes = new Uint8Array(RAM);
  get size() {
    return RAM;
  }
  read(addr: number, length: number) {
    if (addr < 0 || addr + length > RAM) throw new Error("read outside RAM");
    return this.bytes.subarray(addr, addr + length);
  }
  write(addr: number, data: Uint8Array) {
    if (addr < 0 || addr + data.length > RAM) throw new Error("write outside RAM");
    this.bytes.set(data, addr);
  }
}

/** A minimal legacy virtio driver over FakeRam. */
export class Driver {
  readonly ram = new FakeRam();
  readonly dev: VirtioBlk;
  /** What the device reports of its requests (the harness's recorder). */
  readonly rec = new RequestRecorder({ virtio: true });
  irqs = 0;
  private availIdx = 0;
  private usedSeen = 0;
  private nextDesc = 0;
  private heap = 0x200000;
  /** `features`: the feature bits the driver accepts (default: every one offered); `options`: the device's. */
  constructor(
    readonly disk: AsyncDisk,
    features = 0xffffffff,
    options: VirtioBlkOptions = {},
  ) {
    this.dev = new VirtioBlk(disk, { ...options, observer: this.rec });
    this.dev.memory = this.ram;
    this.dev.irq = { raise: () => this.irqs++, lower: () => undefined };
    this.dev.ioWrite(REG.STATUS, 1, 1 | 2);
    this.dev.ioWrite(REG.DRIVER_FEATURES, 4, this.dev.ioRead(REG.DEVICE_FEATURES, 4) & features);
    this.dev.ioWrite(REG.QUEUE_SELECT, 2, 0);
    expect(this.dev.ioRead(REG.QUEUE_SIZE, 2)).toBe(QUEUE_SIZE);
    this.dev.ioWrite(REG.QUEUE_PFN, 4, QUEUE_AT / QUEUE_ALIGN);
    this.dev.ioWrite(REG.STATUS, 1, 1 | 2 | 4);
  }
  get availAddr() {
    return QUEUE_AT + 16 * QUEUE_SIZE;
  }
  get usedAddr() {
    return Math.ceil((this.availAddr + 6 + 2 * QUEUE_SIZE) / QUEUE_ALIGN) * QUEUE_ALIGN;
  }
  alloc(n: number): number {
    const a = this.heap;
    this.heap += Math.ceil(n / 16) * 16;
    return a;
  }
  /** Writes descriptors for `bufs` and makes the chain available; returns the head index. */
  submit(bufs: Array<{ addr: number; len: number; write?: boolean }>, kick = true): number {
    const dv = new DataView(this.ram.bytes.buffer);
    const head = this.nextDesc % QUEUE_SIZE;
    bufs.forEach((b, k) => {
      const i = (this.nextDesc + k) % QUEUE_SIZE;
      const at = QUEUE_AT + 16 * i;
      dv.setUint32(at, b.addr % 2 ** 32, true);
      dv.setUint32(at + 4, Math.floor(b.addr / 2 ** 32), true);
      dv.setUint32(at + 8, b.len, true);
      const last = k === bufs.length - 1;
      dv.setUint16(at + 12, (last ? 0 : DESC_F_NEXT) | (b.write ? DESC_F_WRITE : 0), true);
      dv.setUint16(at + 14, (i + 1) % QUEUE_SIZE, true);
    });
    this.nextDesc += bufs.length;
    dv.setUint16(this.availAddr + 4 + 2 * (this.availIdx % QUEUE_SIZE), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    dv.setUint16(this.availAddr + 2, this.availIdx, true);
    if (kick) this.kick();
    return head;
  }
  kick() {
    this.dev.ioWrite(REG.QUEUE_NOTIFY, 2, 0);
  }
  header(type: number, sector: number): number {
    const a = this.alloc(16);
    const dv = new DataView(this.ram.bytes.buffer, a, 16);
    dv.setUint32(0, type, true);
    dv.setUint32(8, sector % 2 ** 32, true);
    dv.setUint32(12, Math.floor(sector / 2 ** 32), true);
    return a;
  }
  /** A full request: header, data, status; returns the status address and head. */
  request(type: number, sector: number, data?: { addr: number; len: number; write?: boolean }[]) {
    const hdr = this.header(type, sector);
    const status = this.alloc(1);
    this.ram.bytes[status] = 0xee;
    const head = this.submit([{ addr: hdr, len: 16 }, ...(data ?? []), { addr: status, len: 1, write: true }]);
    return { head, status };
  }
  /** Used elements published since the last call. */
  reap(): Array<{ id: number; len: number }> {
    const dv = new DataView(this.ram.bytes.buffer);
    const idx = dv.getUint16(this.usedAddr + 2, true);
    const out: Array<{ id: number; len: number }> = [];
    while (this.usedSeen !== idx) {
      const e = this.usedAddr + 4 + 8 * (this.usedSeen % QUEUE_SIZE);
      out.push({ id: dv.getUint32(e, true), len: dv.getUint32(e + 4, true) });
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
    }
    return out;
  }
  /** Avail ring flags (NO_INTERRUPT). */
  set availFlags(v: number) {
    new DataView(this.ram.bytes.buffer).setUint16(this.availAddr, v, true);
  }
  /** EVENT_IDX: the driver's used_event (after avail.ring) and the device's avail_event (after used.ring). */
  set usedEvent(v: number) {
    new DataView(this.ram.bytes.buffer).setUint16(this.availAddr + 4 + 2 * QUEUE_SIZE, v, true);
  }
  get availEvent(): number {
    return new DataView(this.ram.bytes.buffer).getUint16(this.usedAddr + 4 + 8 * QUEUE_SIZE, true);
  }
  get usedIdx(): number {
    return new DataView(this.ram.bytes.buffer).getUint16(this.usedAddr + 2, true);
  }
  fill(n: number, byte: number): { addr: number; len: number } {
    const a = this.alloc(n);
    this.ram.bytes.fill(byte, a, a + n);
    return { addr: a, len: n };
  }
}

