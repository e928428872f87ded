/**
 * The device side of one legacy split virtqueue in guest memory (virtio 1.2 §2.7): where its parts lie,
 * taking the driver's available buffers, reading their descriptor chains, writing used elements and
 * deciding whether the driver wants an interrupt. Which requests the chains carry and when completions are
 * published are the device's (virtio-blk.ts).
 *
 * Legacy queue layout (§2.7, alignment 4096) for a queue of N descriptors at address A = pfn << 12:
 *
 *   A                  descriptor table  N × { addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16 }
 *   A + 16N            available ring    { flags u16 (NO_INTERRUPT 1), idx u16, ring[N] u16, used_event u16 }
 *   align4096(A+16N+6+2N) used ring      { flags u16, idx u16, ring[N] { id u32, len u32 }, avail_event u16 }
 *
 * All fields little-endian. Indices are free-running u16: the device takes every head from
 * avail.ring[last_avail % N] while last_avail != avail.idx, and completes a chain by writing
 * used.ring[used.idx % N] = { head, bytes written } before advancing used.idx. With EVENT_IDX negotiated
 * the driver wants an interrupt only when used.idx passes its used_event (vring_need_event, §2.7.10), and
 * the device tells the driver which buffer to notify for through avail_event; without it, unless
 * NO_INTERRUPT is set in avail.flags.
 *
 * A chain is device-readable descriptors then device-writable ones. INDIRECT is not offered: a chain that
 * uses it, loops, is longer than the queue, puts a readable descriptor after a writable one or points
 * outside guest RAM (or into the VGA hole) is marked bad, for the device to fail the request.
 */

export const QUEUE_SIZE = 128;
export const QUEUE_ALIGN = 4096;

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const AVAIL_F_NO_INTERRUPT = 1;

const RAM_HOLE_START = 0xa0000;
const RAM_HOLE_END = 0xc0000;

/** Guest-physical memory, as the device sees it. */
export interface GuestMemory {
  /** Bytes of RAM: addresses [0, size) except `holes` are RAM. */
  readonly size: number;
  /** A view (or copy) of [addr, addr + length); called only for ranges `inRam` accepted. */
  read(addr: number, length: number): Uint8Array;
  /** Copies `data` to addr; called only for ranges `inRam` accepted. */
  write(addr: number, data: Uint8Array): void;
}

export interface Segment {
  addr: number;
  len: number;
}

export interface Chain {
  head: number;
  readable: Segment[];
  writable: Segment[];
  bad: boolean;
}

export class Virtqueue {
  /** Guest page frame number of the queue (address >> 12); 0: no queue. */
  pfn = 0;
  /** The free-running index of the next available entry to take. */
  lastAvail = 0;
  memory: GuestMemory | undefined;

  get base(): number {
    return this.pfn * QUEUE_ALIGN;
  }
  get availAddr(): number {
    return this.base + 16 * QUEUE_SIZE;
  }
  get usedAddr(): number {
    const end = this.availAddr + 6 + 2 * QUEUE_SIZE;
    return Math.ceil(end / QUEUE_ALIGN) * QUEUE_ALIGN;
  }

  /** The whole queue lies in guest RAM. */
  inRam(): boolean {
    return this.ramAt(this.base, this.usedAddr + 6 + 8 * QUEUE_SIZE - this.base);
  }

  /** True when [addr, addr + len) is guest RAM the device may touch. */
  ramAt(addr: number, len: number): boolean {
    const m = this.memory;
    if (!m || !Number.isSafeInteger(addr) || addr < 0 || len < 0) return false;
    const end = addr + len;
    if (end > m.size) return false;
    if (len > 0 && addr < RAM_HOLE_END && end > RAM_HOLE_START) return false;
    return true;
  }

  /** avail.idx: the driver's count of buffers made available. */
  availIdx(): number {
    return this.u16(this.availAddr + 2);
  }

  /** Takes the next available head (avail.ring[last_avail % N]). */
  nextHead(): number {
    const head = this.u16(this.availAddr + 4 + 2 * (this.lastAvail % QUEUE_SIZE));
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return head;
  }

  /** avail_event = last_avail: the driver notifies for buffers added after the ones taken (EVENT_IDX). */
  writeAvailEvent(): void {
    this.setU16(this.usedAddr + 4 + 8 * QUEUE_SIZE, this.lastAvail);
  }

  /** used.idx as the driver sees it. */
  usedIdx(): number {
    return this.u16(this.usedAddr + 2);
  }

  /** Writes used.ring[idx % N] = { head, len } (used.idx unchanged). */
  writeUsed(idx: number, head: number, len: number): void {
    const e = this.usedAddr + 4 + 8 * (idx % QUEUE_SIZE);
    this.setU32(e, head);
    this.setU32(e + 4, len);
  }

  /** Advances used.idx by `k` elements written already; returns the old and new values. */
  advanceUsed(k: number): { old: number; now: number } {
    const old = this.usedIdx();
    const now = (old + k) & 0xffff;
    this.setU16(this.usedAddr + 2, now);
    return { old, now };
  }

  /** Whether the driver wants an interrupt for used.idx moving from `old` to `now`. */
  wantsInterrupt(old: number, now: number, eventIdx: boolean): boolean {
    if (eventIdx) {
      const usedEvent = this.u16(this.availAddr + 4 + 2 * QUEUE_SIZE);
      // vring_need_event(event, new, old): the driver asked for an interrupt once used.idx passes event.
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.u16(this.availAddr) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** The descriptor chain starting at `head`, its segments split into device-readable and -writable. */
  readChain(head: number): Chain {
    const chain: Chain = { head, readable: [], writable: [], bad: false };
    if (head >= QUEUE_SIZE) {
      chain.bad = true;
      return chain;
    }
    const mem = this.memory!;
    let i = head;
    for (let count = 0; ; count++) {
      if (count >= QUEUE_SIZE || i >= QUEUE_SIZE) {
        chain.bad = true; // a loop, or a next index past the table
        return chain;
      }
      const d = mem.read(this.base + 16 * i, 16);
      const dv = new DataView(d.buffer, d.byteOffset, 16);
      const lo = dv.getUint32(0, true);
      const hi = dv.getUint32(4, true);
      const len = dv.getUint32(8, true);
      const flags = dv.getUint16(12, true);
      const next = dv.getUint16(14, true);
      const addr = hi * 2 ** 32 + lo;
      if (flags & DESC_F_INDIRECT || !this.ramAt(addr, len)) chain.bad = true;
      else if (flags & DESC_F_WRITE) chain.writable.push({ addr, len });
      else if (chain.writable.length > 0) chain.bad = true; // readable after writable
      else chain.readable.push({ addr, len });
      if (!(flags & DESC_F_NEXT)) return chain;
      i = next;
    }
  }

  private u16(addr: number): number {
    const b = this.memory!.read(addr, 2);
    return b[0]! | (b[1]! << 8);
  }
  private setU16(addr: number, v: number): void {
    this.memory!.write(addr, new Uint8Array([v & 0xff, (v >>> 8) & 0xff]));
  }
  private setU32(addr: number, v: number): void {
    this.memory!.write(addr, new Uint8Array([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff]));
  }
}

export function segmentBytes(segs: Segment[]): number {
  let n = 0;
  for (const s of segs) n += s.len;
  return n;
}

/** The readable segments as one array (a copy). */
export function gather(mem: GuestMemory, segs: Segment[]): Uint8Array {
  if (segs.length === 1) return mem.read(segs[0]!.addr, segs[0]!.len).slice();
  const out = new Uint8Array(segmentBytes(segs));
  let o = 0;
  for (const s of segs) {
    out.set(mem.read(s.addr, s.len), o);
    o += s.len;
  }
  return out;
}

/**
 * The first `n` bytes of the segments (a request's header): a view when the first segment holds them all,
 * else a gathered copy; undefined when the segments hold fewer.
 */
export function readPrefix(mem: GuestMemory, segs: Segment[], n: number): Uint8Array | undefined {
  if (segs.length > 0 && segs[0]!.len >= n) return mem.read(segs[0]!.addr, n);
  if (segmentBytes(segs) < n) return undefined;
  return gather(mem, segs).subarray(0, n);
}

/** The segments less their first `skip` bytes, as views of guest memory (no copy): a write's data. */
export function viewSegments(mem: GuestMemory, segs: Segment[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const s of segs) {
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    out.push(mem.read(s.addr + skip, s.len - skip));
    skip = 0;
  }
  return out;
}

/** Copies `data` over the segments in order; returns the bytes written. */
export function scatter(mem: GuestMemory, segs: Segment[], data: Uint8Array): number {
  let o = 0;
  for (const s of segs) {
    if (o >= data.length) break;
    const n = Math.min(s.len, data.length - o);
    mem.write(s.addr, data.subarray(o, o + n));
    o += n;
  }
  return o;
}
