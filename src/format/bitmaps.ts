/**
 * Persistent dirty bitmaps, as QEMU's docs/interop/qcow2.txt ("Bitmaps extension", "Bitmap directory",
 * "Bitmap table") defines them. All integers big-endian.
 *
 * Header extension 0x23852875 (exactly 24 bytes of data), trusted only while autoclear bit 0 is set:
 *   0  u32 nb_bitmaps (1..65535)     4  u32 reserved, zero
 *   8  u64 bitmap_directory_size     16 u64 bitmap_directory_offset (cluster aligned)
 *
 * Bitmap directory: nb_bitmaps entries back to back, exactly bitmap_directory_size bytes (at most
 * 65535 * 1024). One entry:
 *   0  u64 bitmap_table_offset (cluster aligned, not 0)
 *   8  u32 bitmap_table_size (entries, 1..0x8000000)
 *   12 u32 flags: bit 0 in_use (not saved cleanly: contents unusable), bit 1 auto (enabled: records every
 *      write), bit 2 extra_data_compatible; bits 3-31 reserved, zero
 *   16 u8  type (1: dirty tracking; others reserved)
 *   17 u8  granularity_bits (QEMU: 9..31; granularity = 1 << bits bytes of disk per bit)
 *   18 u16 name_size (1..1023)
 *   20 u32 extra_data_size
 *   24 extra_data, then the name (not NUL-terminated, unique in the directory), then zero padding to 8.
 *
 * Bitmap table: bitmap_table_size u64 entries, contiguous in the file. One entry:
 *   bits 9-55 host offset of a data cluster (cluster aligned); 0: no cluster, and then bit 0 says how the
 *   cluster reads (0 all zeroes, 1 all ones); bit 0 must be 0 when there is an offset; bits 1-8 and 56-63
 *   reserved, zero.
 *
 * Bitmap data: bit n covers disk bytes [n * granularity, (n + 1) * granularity), stored in byte n / 8 at bit
 * n % 8 (least significant first); data cluster i holds bytes [i * cluster_size, (i + 1) * cluster_size) of
 * the bitmap. A consistent bitmap's table has exactly ceil(ceil(ceil(disk_size / granularity) / 8) /
 * cluster_size) entries; the unused tail bits of its last cluster are zero.
 */
import { alignUp, readU64, viewOf, writeU64 } from "./bytes.js";
import { ImageFormatError } from "./errors.js";

export const BITMAPS_EXTENSION_BYTES = 24;
/** QEMU's limits (block/qcow2.h, block/qcow2-bitmap.c). */
export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_DIRECTORY_BYTES = 1024 * MAX_BITMAPS;
export const MAX_BITMAP_NAME_BYTES = 1023;
export const MIN_GRANULARITY_BITS = 9;
export const MAX_GRANULARITY_BITS = 31;
export const MAX_BITMAP_TABLE_ENTRIES = 0x8000000;
/** Largest bitmap (bytes of bitmap data) QEMU loads. */
export const MAX_BITMAP_DATA_BYTES = 0x20000000;

export const BITMAP_IN_USE = 1 << 0;
export const BITMAP_AUTO = 1 << 1;
export const BITMAP_EXTRA_DATA_COMPATIBLE = 1 << 2;
const RESERVED_FLAGS = ~(BITMAP_IN_USE | BITMAP_AUTO | BITMAP_EXTRA_DATA_COMPATIBLE) >>> 0;
export const BITMAP_TYPE_DIRTY_TRACKING = 1;

const ENTRY_FIXED_BYTES = 24;
const TABLE_RESERVED_MASK = 0xff000000000001fen;
const TABLE_OFFSET_MASK = 0x00fffffffffffe00n;

export interface BitmapsExtension {
  count: number;
  directorySize: number;
  directoryOffset: number;
}

export interface BitmapDirectoryEntry {
  tableOffset: number;
  tableSize: number;
  /** BITMAP_IN_USE | BITMAP_AUTO | BITMAP_EXTRA_DATA_COMPATIBLE. */
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraData: Uint8Array;
}

/** One bitmap table entry: a data cluster, or none (reads as zeroes, or as ones with `allOnes`). */
export interface BitmapTableEntry {
  offset: number;
  allOnes: boolean;
}

/** What the directory's entries are checked against. */
export interface BitmapGeometry {
  clusterSize: number;
  /** Virtual disk size in bytes. */
  diskSize: number;
}

export function parseBitmapsExtension(data: Uint8Array, clusterSize: number): BitmapsExtension {
  if (data.length !== BITMAPS_EXTENSION_BYTES) throw new ImageFormatError(`bitmaps extension has ${data.length} bytes of data (must be ${BITMAPS_EXTENSION_BYTES})`);
  const v = viewOf(data);
  const count = v.getUint32(0);
  if (v.getUint32(4) !== 0) throw new ImageFormatError("bitmaps extension: reserved field is not zero");
  const u64 = (pos: number, what: string) => {
    try {
      return readU64(v, pos, what);
    } catch {
      throw new ImageFormatError(`bitmaps extension: ${what} is out of range`);
    }
  };
  const directorySize = u64(8, "bitmap directory size");
  const directoryOffset = u64(16, "bitmap directory offset");
  if (count === 0) throw new ImageFormatError("bitmaps extension with zero bitmaps");
  if (count > MAX_BITMAPS) throw new ImageFormatError(`bitmaps extension: ${count} bitmaps, more than the ${MAX_BITMAPS} supported`);
  if (directoryOffset === 0 || directoryOffset % clusterSize) throw new ImageFormatError(`bitmaps extension: invalid bitmap directory offset 0x${directoryOffset.toString(16)}`);
  if (directorySize > MAX_BITMAP_DIRECTORY_BYTES) {
    throw new ImageFormatError(`bitmaps extension: bitmap directory size (${directorySize}) exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_BYTES})`);
  }
  if (directorySize < count * ENTRY_FIXED_BYTES) throw new ImageFormatError(`bitmaps extension: a ${directorySize}-byte directory cannot hold ${count} bitmaps`);
  return { count, directorySize, directoryOffset };
}

export function serializeBitmapsExtension(ext: BitmapsExtension): Uint8Array {
  const out = new Uint8Array(BITMAPS_EXTENSION_BYTES);
  const v = viewOf(out);
  v.setUint32(0, ext.count);
  writeU64(v, 8, ext.directorySize);
  writeU64(v, 16, ext.directoryOffset);
  return out;
}

/** Bytes of bitmap data for a disk of `diskSize` bytes at `granularity` bytes per bit. */
export function bitmapDataBytes(diskSize: number, granularity: number): number {
  return Math.ceil(Math.ceil(diskSize / granularity) / 8);
}

/** Entries of a consistent bitmap's table. */
export function bitmapTableEntries(diskSize: number, granularity: number, clusterSize: number): number {
  return Math.ceil(bitmapDataBytes(diskSize, granularity) / clusterSize);
}

/** Size in bytes of one directory entry (padded to 8). */
export function directoryEntryBytes(name: string, extraBytes = 0): number {
  return alignUp(ENTRY_FIXED_BYTES + extraBytes + new TextEncoder().encode(name).length, 8);
}

/** Checks a bitmap name as a new entry would need it (non-empty, at most 1023 bytes, no NUL). */
export function checkBitmapName(name: string): void {
  const bytes = new TextEncoder().encode(name).length;
  if (bytes === 0) throw new ImageFormatError("bitmap name is empty", { corruption: false });
  if (bytes > MAX_BITMAP_NAME_BYTES) throw new ImageFormatError(`Name length exceeds maximum (${MAX_BITMAP_NAME_BYTES} characters)`, { corruption: false });
  if (name.includes("\0")) throw new ImageFormatError("bitmap name contains a NUL character", { corruption: false });
}

/**
 * Parses and validates a bitmap directory of exactly `buf.length` bytes holding `count` entries: every field
 * bounded, names unique, padding zero, and each consistent (not in-use) bitmap's table sized for the disk.
 */
export function parseBitmapDirectory(buf: Uint8Array, count: number, geometry: BitmapGeometry): BitmapDirectoryEntry[] {
  const v = viewOf(buf);
  const entries: BitmapDirectoryEntry[] = [];
  const names = new Set<string>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  while (pos < buf.length) {
    const i = entries.length;
    if (i >= count) throw new ImageFormatError(`bitmap directory holds more bitmaps than the ${count} the header extension says`);
    if (pos + ENTRY_FIXED_BYTES > buf.length) throw new ImageFormatError(`bitmap directory entry ${i} runs past the end of the directory`);
    let tableOffset: number;
    try {
      tableOffset = readU64(v, pos, "bitmap table offset");
    } catch {
      throw new ImageFormatError(`bitmap directory entry ${i}: bitmap table offset is out of range`);
    }
    const tableSize = v.getUint32(pos + 8);
    const flags = v.getUint32(pos + 12);
    const type = v.getUint8(pos + 16);
    const granularityBits = v.getUint8(pos + 17);
    const nameSize = v.getUint16(pos + 18);
    const extraSize = v.getUint32(pos + 20);
    const end = pos + alignUp(ENTRY_FIXED_BYTES + extraSize + nameSize, 8);
    if (end > buf.length) throw new ImageFormatError(`bitmap directory entry ${i} runs past the end of the directory`);
    const nameStart = pos + ENTRY_FIXED_BYTES + extraSize;
    let name: string;
    try {
      name = decoder.decode(buf.subarray(nameStart, nameStart + nameSize));
    } catch {
      throw new ImageFormatError(`bitmap directory entry ${i}: name is not valid UTF-8`);
    }
    const what = `bitmap '${name}'`;
    if (nameSize === 0) throw new ImageFormatError(`bitmap directory entry ${i} has an empty name`);
    if (nameSize > MAX_BITMAP_NAME_BYTES) throw new ImageFormatError(`${what}: name is ${nameSize} bytes long (at most ${MAX_BITMAP_NAME_BYTES})`);
    if (name.includes("\0")) throw new ImageFormatError(`bitmap directory entry ${i}: name contains a NUL byte`);
    if (names.has(name)) throw new ImageFormatError(`bitmap directory has two bitmaps named '${name}'`);
    names.add(name);
    for (let p = nameStart + nameSize; p < end; p++) if (buf[p] !== 0) throw new ImageFormatError(`${what}: directory entry padding is not zero`);
    if (type !== BITMAP_TYPE_DIRTY_TRACKING) throw new ImageFormatError(`${what} has unknown type ${type}`);
    if (flags & RESERVED_FLAGS) throw new ImageFormatError(`${what} has reserved flags set (0x${flags.toString(16)})`);
    if (granularityBits < MIN_GRANULARITY_BITS || granularityBits > MAX_GRANULARITY_BITS) {
      throw new ImageFormatError(`${what}: granularity 2^${granularityBits} is outside 2^${MIN_GRANULARITY_BITS}..2^${MAX_GRANULARITY_BITS}`);
    }
    if (tableOffset === 0 || tableOffset % geometry.clusterSize) throw new ImageFormatError(`${what}: bitmap table offset 0x${tableOffset.toString(16)} is not a cluster-aligned offset`);
    if (tableSize === 0 || tableSize > MAX_BITMAP_TABLE_ENTRIES) throw new ImageFormatError(`${what}: bitmap table size ${tableSize} is out of range`);
    if (tableSize * geometry.clusterSize > MAX_BITMAP_DATA_BYTES) throw new ImageFormatError(`${what} is too large (${tableSize} clusters of bitmap data)`);
    if (!(flags & BITMAP_IN_USE)) {
      // An in-use bitmap may have any size (it may predate a resize); a consistent one covers the disk exactly.
      const needed = bitmapTableEntries(geometry.diskSize, 2 ** granularityBits, geometry.clusterSize);
      if (tableSize !== needed) throw new ImageFormatError(`${what}: bitmap table has ${tableSize} entries, the disk needs ${needed}`);
    }
    entries.push({ tableOffset, tableSize, flags, type, granularityBits, name, extraData: buf.slice(pos + ENTRY_FIXED_BYTES, nameStart) });
    pos = end;
  }
  if (entries.length !== count) throw new ImageFormatError(`bitmap directory holds ${entries.length} bitmaps, the header extension says ${count}`);
  return entries;
}

export function serializeBitmapDirectory(entries: readonly BitmapDirectoryEntry[]): Uint8Array {
  const size = entries.reduce((n, e) => n + directoryEntryBytes(e.name, e.extraData.length), 0);
  const out = new Uint8Array(size);
  const v = viewOf(out);
  let pos = 0;
  for (const e of entries) {
    const name = new TextEncoder().encode(e.name);
    writeU64(v, pos, e.tableOffset);
    v.setUint32(pos + 8, e.tableSize);
    v.setUint32(pos + 12, e.flags);
    v.setUint8(pos + 16, e.type);
    v.setUint8(pos + 17, e.granularityBits);
    v.setUint16(pos + 18, name.length);
    v.setUint32(pos + 20, e.extraData.length);
    out.set(e.extraData, pos + ENTRY_FIXED_BYTES);
    out.set(name, pos + ENTRY_FIXED_BYTES + e.extraData.length);
    pos += alignUp(ENTRY_FIXED_BYTES + e.extraData.length + name.length, 8);
  }
  return out;
}

/** Parses and validates a bitmap table (`buf` holds its entries). */
export function parseBitmapTable(buf: Uint8Array, clusterSize: number, what = "bitmap table"): BitmapTableEntry[] {
  const v = viewOf(buf);
  const out: BitmapTableEntry[] = [];
  for (let i = 0; i < buf.length / 8; i++) {
    const raw = v.getBigUint64(i * 8);
    if (raw & TABLE_RESERVED_MASK) throw new ImageFormatError(`${what} entry ${i} has reserved bits set (0x${raw.toString(16)})`);
    const offset = Number(raw & TABLE_OFFSET_MASK);
    const allOnes = (raw & 1n) !== 0n;
    if (offset && allOnes) throw new ImageFormatError(`${what} entry ${i} has both a cluster and the all-ones flag`);
    if (offset % clusterSize) throw new ImageFormatError(`${what} entry ${i}: data cluster offset 0x${offset.toString(16)} is not cluster aligned`);
    out.push({ offset, allOnes });
  }
  return out;
}

export function serializeBitmapTable(entries: readonly BitmapTableEntry[]): Uint8Array {
  const out = new Uint8Array(entries.length * 8);
  const v = viewOf(out);
  entries.forEach((e, i) => {
    if (e.offset) writeU64(v, i * 8, e.offset);
    else if (e.allOnes) v.setUint32(i * 8 + 4, 1);
  });
  return out;
}
