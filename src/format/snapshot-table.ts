/**
 * Snapshot table (qcow2.txt, "Snapshots"): nb_snapshots entries starting at snapshots_offset (cluster aligned),
 * each padded to a multiple of 8 bytes:
 *
 *   0  u64 l1_table_offset       8  u32 l1_size           12 u16 id_str_size     14 u16 name_size
 *   16 u32 date_sec              20 u32 date_nsec         24 u64 vm_clock_nsec   32 u32 vm_state_size
 *   36 u32 extra_data_size       40 extra data:
 *        +0 u64 vm_state_size_large   +8 u64 disk_size   +16 u64 icount (-1: not recorded)
 *   then the id string, then the name string (neither NUL-terminated), then zero padding to 8.
 *
 * Version 3 images need extra data up to icount's start at least (16 bytes); QEMU writes 24 and keeps unknown
 * extra data (up to 1024 bytes) verbatim.
 */
import { ImageFormatError } from "./errors.js";
import { alignUp, readU64, viewOf, writeU64 } from "./bytes.js";

export const SNAPSHOT_EXTRA_SIZE = 24;
export const MAX_SNAPSHOT_EXTRA = 1024;

export interface SnapshotEntry {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** VM state size in bytes (the large field when present, else the 32-bit one). */
  vmStateSize: number;
  diskSize?: number;
  /** Guest instruction count; undefined when not recorded. */
  icount?: number;
  /** Extra data bytes past the fields refcow knows, kept verbatim. */
  unknownExtra: Uint8Array;
}

export function parseSnapshotTable(buf: Uint8Array, count: number): SnapshotEntry[] {
  const v = viewOf(buf);
  const out: SnapshotEntry[] = [];
  let pos = 0;
  const need = (n: number, i: number) => {
    if (pos + n > buf.length) throw new ImageFormatError(`snapshot table entry ${i} runs past the end of the table`);
  };
  const dec = new TextDecoder("utf-8", { fatal: false });
  for (let i = 0; i < count; i++) {
    need(40, i);
    let l1TableOffset: number;
    let vmClockNsec: number;
    try {
      l1TableOffset = readU64(v, pos, "l1_table_offset");
      vmClockNsec = readU64(v, pos + 24, "vm_clock_nsec");
    } catch {
      throw new ImageFormatError(`snapshot table entry ${i} has an out-of-range field`);
    }
    const l1Size = v.getUint32(pos + 8);
    const idLen = v.getUint16(pos + 12);
    const nameLen = v.getUint16(pos + 14);
    const dateSec = v.getUint32(pos + 16);
    const dateNsec = v.getUint32(pos + 20);
    let vmStateSize = v.getUint32(pos + 32);
    const extraSize = v.getUint32(pos + 36);
    if (extraSize > MAX_SNAPSHOT_EXTRA) throw new ImageFormatError(`snapshot table entry ${i}: extra data too large (${extraSize} bytes)`);
    pos += 40;
    need(extraSize, i);
    let diskSize: number | undefined;
    let icount: number | undefined;
    let unknownExtra = new Uint8Array(0);
    if (extraSize >= 8) {
      const big = v.getBigUint64(pos);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageFormatError(`snapshot table entry ${i}: VM state size out of range`);
      vmStateSize = Number(big);
    }
    if (extraSize >= 16) {
      const big = v.getBigUint64(pos + 8);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageFormatError(`snapshot table entry ${i}: disk size out of range`);
      diskSize = Number(big);
    }
    if (extraSize >= 24) {
      const ic = v.getBigInt64(pos + 16);
      icount = ic < 0n ? undefined : Number(ic);
    }
    if (extraSize > SNAPSHOT_EXTRA_SIZE) unknownExtra = buf.slice(pos + SNAPSHOT_EXTRA_SIZE, pos + extraSize);
    pos += extraSize;
    need(idLen + nameLen, i);
    const id = dec.decode(buf.subarray(pos, pos + idLen));
    pos += idLen;
    const name = dec.decode(buf.subarray(pos, pos + nameLen));
    pos += nameLen;
    pos = alignUp(pos, 8);
    out.push({ l1TableOffset, l1Size, id, name, dateSec, dateNsec, vmClockNsec, vmStateSize, diskSize, icount, unknownExtra });
  }
  return out;
}

/** Size in bytes of the serialized table. */
export function snapshotTableSize(entries: readonly SnapshotEntry[]): number {
  const enc = new TextEncoder();
  let size = 0;
  for (const e of entries) {
    size += 40 + SNAPSHOT_EXTRA_SIZE + e.unknownExtra.length + enc.encode(e.id).length + enc.encode(e.name).length;
    size = alignUp(size, 8);
  }
  return size;
}

export function serializeSnapshotTable(entries: SnapshotEntry[]): Uint8Array {
  const enc = new TextEncoder();
  const buf = new Uint8Array(snapshotTableSize(entries));
  const v = viewOf(buf);
  let pos = 0;
  for (const e of entries) {
    const id = enc.encode(e.id);
    const name = enc.encode(e.name);
    if (id.length > 0xffff || name.length > 0xffff) throw new ImageFormatError("snapshot id or name is too long");
    writeU64(v, pos, e.l1TableOffset);
    v.setUint32(pos + 8, e.l1Size);
    v.setUint16(pos + 12, id.length);
    v.setUint16(pos + 14, name.length);
    v.setUint32(pos + 16, e.dateSec);
    v.setUint32(pos + 20, e.dateNsec);
    writeU64(v, pos + 24, e.vmClockNsec);
    // The 32-bit field is 0 when the state does not fit (QEMU does the same).
    v.setUint32(pos + 32, e.vmStateSize > 0xffffffff ? 0 : e.vmStateSize);
    const extra = SNAPSHOT_EXTRA_SIZE + e.unknownExtra.length;
    v.setUint32(pos + 36, extra);
    pos += 40;
    writeU64(v, pos, e.vmStateSize);
    writeU64(v, pos + 8, e.diskSize ?? 0);
    v.setBigInt64(pos + 16, e.icount === undefined ? -1n : BigInt(e.icount));
    buf.set(e.unknownExtra, pos + SNAPSHOT_EXTRA_SIZE);
    pos += extra;
    buf.set(id, pos);
    pos += id.length;
    buf.set(name, pos);
    pos += name.length;
    pos = alignUp(pos, 8);
  }
  return buf;
}
