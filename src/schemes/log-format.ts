/**
 * refcow data log (scheme `log`): on-disk format, and the scan that finds the records a replay applies.
 *
 * Header extension 0x5243444c ("RCDL"), 16 bytes, big-endian:
 *   0 u64 log area offset (cluster aligned, not 0)     8 u32 log area size in clusters     12 u32 reserved (0)
 * Incompatible feature bit 33 ("refcow data log") is set while the log may hold records whose data is not in
 * place yet: QEMU then refuses the image (it would read the snapshot's old bytes where the guest wrote new
 * ones); refcow replays it. The extension is durable before the bit is set, and the bit is cleared before
 * the extension goes (a rewrite of the header cluster may tear; the 8-byte feature field cannot). Bit 32 is
 * the metadata journal's; QEMU defines bits 0-4.
 *
 * The log area is counted in the refcount table like any metadata (one reference per cluster), so `qemu-img
 * check` finds nothing wrong with an image whose log is empty, and a crash leaves it at worst leaked.
 *
 * Log area, all integers big-endian:
 *   0    area header, one 512-byte sector:
 *          0 u32 magic 0x52434c48 ("RCLH")  4 u32 version (1)  8 u64 sequence number of the first record
 *          16 u32 CRC-32 of bytes 0-15      rest zero
 *   512  records, back to back, each starting on a 512-byte boundary:
 *          0  u32 magic 0x52434c52 ("RCLR")      4  u32 data length in bytes (1 .. 16 MiB)
 *          8  u64 sequence number                 16 u64 guest offset of the data
 *          24 u32 CRC-32 of the data              28 u32 CRC-32 of bytes 0-27 (the record header)
 *          32 .. 511 zero
 *          512 the data, zero padding to a 512-byte boundary
 * A record says "the guest wrote these bytes at this guest offset"; it is a guest write, not a host write, so
 * a replay carries it out through the engine's ordinary write path (allocating, copying on write) after the
 * tables are loaded, in sequence order. Applying a record twice leaves what applying it once does, so a crash
 * in the middle of an apply or a replay is replayed again from the start.
 *
 * Torn records: a record is committed by the flush after it. A scan accepts the records whose sequence
 * numbers follow on from the area header's, one after the other, each only if its header checksum and its
 * data checksum hold, and stops at the first that does not: a record torn at any sector (its header sector
 * or any data sector old) fails one of the two checksums. The first sequence number is random per log, so
 * bytes an earlier log left in these clusters never pass as records of this one. A record whose checksums
 * hold but whose guest range lies past the disk means the image is corrupt: nothing is replayed.
 */
import { crc32 } from "node:zlib";
import { ImageFormatError } from "../engine/errors.js";
import type { Qcow2Header } from "../format/header.js";
/** Incompatible bit 33: the data log holds guest writes not yet in place, so QEMU must refuse the image. */
export const INCOMPAT_REFCOW_DATA_LOG = 1n << 33n;

export const EXT_REFCOW_DATA_LOG = 0x5243444c;
export const LOG_MAGIC = 0x52434c48;
export const RECORD_MAGIC = 0x52434c52;
export const SECTOR = 512;
/** Where the first record starts. */
export const LOG_DATA_START = SECTOR;
/** Bytes before a record's data. */
export const RECORD_HEADER = SECTOR;
/** The longest record's data (a guest write is split into records no longer than this). */
export const MAX_RECORD_DATA = 16 * 1024 * 1024;
/** The largest log area refcow reads. */
export const MAX_LOG_BYTES = 256 * 1024 * 1024;

export interface LogLocation {
  offset: number;
  clusters: number;
}

export interface LogRecord {
  seq: bigint;
  guestOffset: number;
  data: Uint8Array;
}

/** A record found by a scan: where its data lies in the file (for reads that do not copy it). */
export interface ScannedRecord extends LogRecord {
  /** Host offset of the record's first byte (its header). */
  at: number;
}

export function encodeLogExtension(loc: LogLocation): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(loc.offset));
  v.setUint32(8, loc.clusters);
  return b;
}

/** The log's location from the header extension; undefined without one. Throws on a malformed extension. */
export function findLog(h: Qcow2Header): LogLocation | undefined {
  const ext = h.extensions.find((e) => e.type === EXT_REFCOW_DATA_LOG);
  if (!ext) return undefined;
  if (ext.data.length < 16) throw new ImageFormatError("refcow data log header extension is truncated");
  const v = new DataView(ext.data.buffer, ext.data.byteOffset, ext.data.byteLength);
  const big = v.getBigUint64(0);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageFormatError(`refcow data log offset 0x${big.toString(16)} is invalid`);
  return { offset: Number(big), clusters: v.getUint32(8) };
}

/** Checks a location against the image's geometry (a malformed extension must not aim writes anywhere). */
export function validateLogLocation(loc: LogLocation, clusterSize: number): void {
  if (loc.offset === 0 || loc.offset % clusterSize || !Number.isSafeInteger(loc.offset)) {
    throw new ImageFormatError(`refcow data log offset 0x${loc.offset.toString(16)} is invalid`);
  }
  if (loc.clusters === 0 || loc.clusters * clusterSize > MAX_LOG_BYTES || loc.clusters * clusterSize < 2 * SECTOR) {
    throw new ImageFormatError(`refcow data log size (${loc.clusters} clusters) is invalid`);
  }
}

export function encodeLogHeader(firstSeq: bigint): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  v.setUint32(0, LOG_MAGIC);
  v.setUint32(4, 1);
  v.setBigUint64(8, firstSeq);
  v.setUint32(16, crc32(b.subarray(0, 16)) >>> 0);
  return b;
}

export function decodeLogHeader(b: Uint8Array): bigint {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < SECTOR || v.getUint32(0) !== LOG_MAGIC) throw new ImageFormatError("refcow data log has a bad magic number");
  if (v.getUint32(4) !== 1) throw new ImageFormatError(`refcow data log has an unknown version ${v.getUint32(4)}`);
  if ((crc32(b.subarray(0, 16)) >>> 0) !== v.getUint32(16)) throw new ImageFormatError("refcow data log header fails its checksum");
  return v.getBigUint64(8);
}

/** Bytes a record with `length` bytes of data takes in the log. */
export function recordBytes(length: number): number {
  return RECORD_HEADER + Math.ceil(length / SECTOR) * SECTOR;
}

/** Serializes one record (header sector, data, zero padding), ready to be written with one I/O. */
export function encodeRecord(seq: bigint, guestOffset: number, data: Uint8Array): Uint8Array {
  return encodeRecordInto(new Uint8Array(recordBytes(data.length)), seq, guestOffset, data);
}

/**
 * encodeRecord into `into` (at least recordBytes(data.length) bytes, reused from record to record: only the
 * header's fields, the data and the padding are written, so the rest of the header sector must stay zero).
 * Returns the record's bytes, a view of `into`.
 */
export function encodeRecordInto(into: Uint8Array, seq: bigint, guestOffset: number, data: Uint8Array): Uint8Array {
  if (data.length === 0 || data.length > MAX_RECORD_DATA) throw new RangeError(`log record of ${data.length} bytes`);
  const b = into.subarray(0, recordBytes(data.length));
  const v = new DataView(b.buffer, b.byteOffset, RECORD_HEADER);
  v.setUint32(0, RECORD_MAGIC);
  v.setUint32(4, data.length);
  v.setBigUint64(8, seq);
  v.setBigUint64(16, BigInt(guestOffset));
  v.setUint32(24, crc32(data) >>> 0);
  v.setUint32(28, crc32(b.subarray(0, 28)) >>> 0);
  b.set(data, RECORD_HEADER);
  b.fill(0, RECORD_HEADER + data.length);
  return b;
}

/**
 * Decodes the record at `pos` of `area` if it is the one with sequence number `seq` and both checksums hold;
 * undefined otherwise (the end of the log). `diskSize` bounds its guest range: a record that passes its
 * checksums but lies past the disk is a corruption, thrown.
 */
export function decodeRecord(area: Uint8Array, pos: number, seq: bigint, diskSize: number): LogRecord | undefined {
  if (pos + RECORD_HEADER > area.length) return undefined;
  const v = new DataView(area.buffer, area.byteOffset + pos, RECORD_HEADER);
  if (v.getUint32(0) !== RECORD_MAGIC) return undefined;
  if ((crc32(area.subarray(pos, pos + 28)) >>> 0) !== v.getUint32(28)) return undefined;
  if (v.getBigUint64(8) !== seq) return undefined;
  const length = v.getUint32(4);
  if (length === 0 || length > MAX_RECORD_DATA || pos + recordBytes(length) > area.length) return undefined;
  const data = area.subarray(pos + RECORD_HEADER, pos + RECORD_HEADER + length);
  if ((crc32(data) >>> 0) !== v.getUint32(24)) return undefined;
  const guest = v.getBigUint64(16);
  if (guest + BigInt(length) > BigInt(diskSize)) {
    throw new ImageFormatError(`refcow data log record ${seq} is aimed at guest offset 0x${guest.toString(16)}, past the end of the disk`);
  }
  return { seq, guestOffset: Number(guest), data };
}

/**
 * Scans a log area (its bytes, read whole): the committed records in order, the sequence number the next
 * record takes, and where it goes. A bad area header means the image is corrupt.
 */
export function scanLog(area: Uint8Array, areaOffset: number, diskSize: number): { records: ScannedRecord[]; nextSeq: bigint; end: number } {
  let seq = decodeLogHeader(area.subarray(0, SECTOR));
  let pos = LOG_DATA_START;
  const records: ScannedRecord[] = [];
  for (;;) {
    const r = decodeRecord(area, pos, seq, diskSize);
    if (!r) break;
    records.push({ ...r, at: areaOffset + pos });
    pos += recordBytes(r.data.length);
    seq++;
  }
  return { records, nextSeq: seq, end: pos };
}
