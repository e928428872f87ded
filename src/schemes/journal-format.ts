/**
 * refcow journal: on-disk format, replay at open, and removal.
 *
 * Header extension 0x52434a4c ("RCJL"), 16 bytes:
 *   0 u64 journal offset (cluster aligned)      8 u32 journal size in clusters      12 u32 reserved (0)
 * Incompatible feature bit 32 ("refcow journal") is set while the journal may hold records that are not
 * written in place yet: QEMU then refuses the image instead of reading stale tables.
 *
 * Journal area, all integers big-endian:
 *   0    u32 magic 0x52434a48 ("RCJH")   4 u32 version (1)   8 u64 first sequence number to replay
 *   512  transactions, each starting on a 512-byte boundary:
 *          0  u32 magic 0x52435458 ("RCTX")    4  u32 payload length in bytes
 *          8  u64 sequence number              16 u32 record count      20 u32 CRC-32 of bytes 0-19 + payload
 *          24 payload: records, each  u64 host offset, u32 length, u32 reserved (0), bytes, zero padding to 8
 * A record says "these bytes belong at this host offset" (an L2 slice, L1 entries, refcount entries).
 * Replay applies the transactions whose sequence numbers follow on from the header's, in order, each only if
 * its checksum holds, and stops at the first that does not: a transaction is committed by the flush after it.
 */
import { crc32 } from "node:zlib";
import type { BlockFile } from "../io/block-file.js";
import { ImageFormatError } from "../engine/errors.js";
import type { Qcow2Header } from "../format/header.js";
/** Incompatible bit 32: the journal holds records not yet written in place, so QEMU must refuse the image. */
export const INCOMPAT_REFCOW_JOURNAL = 1n << 32n;
/** Header extension "RCJL": where the journal lies (u64 offset, u32 clusters). */
export const EXT_REFCOW_JOURNAL = 0x52434a4c;
export const JOURNAL_MAGIC = 0x52434a48;
export const TXN_MAGIC = 0x52435458;
export const TXN_HEADER = 24;
export const JOURNAL_DATA_START = 512;

export interface JournalLocation {
  offset: number;
  clusters: number;
}

export interface JournalRecord {
  offset: number;
  data: Uint8Array;
}

export function encodeJournalExtension(loc: JournalLocation): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(loc.offset));
  v.setUint32(8, loc.clusters);
  return b;
}

export function findJournal(h: Qcow2Header): JournalLocation | undefined {
  const ext = h.extensions.find((e) => e.type === EXT_REFCOW_JOURNAL);
  if (!ext) return undefined;
  if (ext.data.length < 16) throw new ImageFormatError("refcow journal header extension is truncated");
  const v = new DataView(ext.data.buffer, ext.data.byteOffset, ext.data.byteLength);
  return { offset: Number(v.getBigUint64(0)), clusters: v.getUint32(8) };
}

export function journalHeader(firstSeq: bigint): Uint8Array {
  const b = new Uint8Array(JOURNAL_DATA_START);
  const v = new DataView(b.buffer);
  v.setUint32(0, JOURNAL_MAGIC);
  v.setUint32(4, 1);
  v.setBigUint64(8, firstSeq);
  return b;
}

/** Serializes one transaction, padded to a 512-byte boundary. */
export function encodeTransaction(seq: bigint, records: JournalRecord[]): Uint8Array {
  let payload = 0;
  for (const r of records) payload += 16 + Math.ceil(r.data.length / 8) * 8;
  const total = Math.ceil((TXN_HEADER + payload) / 512) * 512;
  const b = new Uint8Array(total);
  const v = new DataView(b.buffer);
  v.setUint32(0, TXN_MAGIC);
  v.setUint32(4, payload);
  v.setBigUint64(8, seq);
  v.setUint32(16, records.length);
  let pos = TXN_HEADER;
  for (const r of records) {
    v.setBigUint64(pos, BigInt(r.offset));
    v.setUint32(pos + 8, r.data.length);
    b.set(r.data, pos + 16);
    pos += 16 + Math.ceil(r.data.length / 8) * 8;
  }
  v.setUint32(20, checksum(b, payload));
  return b;
}

function checksum(txn: Uint8Array, payload: number): number {
  const head = crc32(txn.subarray(0, 20));
  return crc32(txn.subarray(TXN_HEADER, TXN_HEADER + payload), head) >>> 0;
}

/** The largest journal refcow reads (it writes 1 MiB ones, 2 clusters at least). */
export const MAX_JOURNAL_BYTES = 64 * 1024 * 1024;

/**
 * Reads the committed transactions of a journal, in order. A transaction whose checksum holds but whose records
 * do not make sense (running past the transaction, aimed at the header, the journal itself, or past the end of
 * the file) means the image is corrupt: nothing of it is replayed.
 */
export function readTransactions(file: BlockFile, loc: JournalLocation, clusterSize: number): { records: JournalRecord[][]; nextSeq: bigint; end: number } {
  const size = loc.clusters * clusterSize;
  if (size > MAX_JOURNAL_BYTES) throw new ImageFormatError(`refcow journal is too large (${size} bytes)`);
  const area = new Uint8Array(size);
  file.read(area, loc.offset, "journal");
  const fileEnd = Math.ceil(file.size() / clusterSize) * clusterSize;
  const v = new DataView(area.buffer);
  if (v.getUint32(0) !== JOURNAL_MAGIC) throw new ImageFormatError("refcow journal has a bad magic number");
  let seq = v.getBigUint64(8);
  let pos = JOURNAL_DATA_START;
  const out: JournalRecord[][] = [];
  while (pos + TXN_HEADER <= size) {
    if (v.getUint32(pos) !== TXN_MAGIC || v.getBigUint64(pos + 8) !== seq) break;
    const payload = v.getUint32(pos + 4);
    if (payload > size - pos - TXN_HEADER) break;
    const txn = area.subarray(pos, pos + TXN_HEADER + payload);
    if (checksum(txn, payload) !== v.getUint32(pos + 20)) break;
    const count = v.getUint32(pos + 16);
    const end = pos + TXN_HEADER + payload;
    const bad = (why: string) => new ImageFormatError(`refcow journal transaction ${seq} is invalid: ${why}`);
    const recs: JournalRecord[] = [];
    let p = pos + TXN_HEADER;
    for (let i = 0; i < count; i++) {
      if (p + 16 > end) throw bad(`record ${i} of ${count} runs past the transaction`);
      const big = v.getBigUint64(p);
      const len = v.getUint32(p + 8);
      if (len > clusterSize || p + 16 + len > end) throw bad(`record ${i} is ${len} bytes long`);
      const offset = Number(big);
      if (big >= BigInt(fileEnd) || offset + len > fileEnd) throw bad(`record ${i} is aimed at offset 0x${big.toString(16)}, past the end of the image`);
      if (offset < clusterSize) throw bad(`record ${i} is aimed at the image header`);
      if (offset + len > loc.offset && offset < loc.offset + size) throw bad(`record ${i} is aimed at the journal itself`);
      recs.push({ offset, data: area.slice(p + 16, p + 16 + len) });
      p += 16 + Math.ceil(len / 8) * 8;
    }
    out.push(recs);
    seq++;
    pos += Math.ceil((TXN_HEADER + payload) / 512) * 512;
  }
  return { records: out, nextSeq: seq, end: pos };
}

/**
 * Replays the journal of an image whose journal bit is set: writes every committed record in place and
 * flushes. Returns the number of transactions replayed. The caller then removes the journal. The caller also
 * decides where the records go: the image file, or a view of it that is never committed (a read-only check).
 */
export function replayJournal(file: BlockFile, header: Qcow2Header, clusterSize: number): number {
  if (!(header.incompatibleFeatures & INCOMPAT_REFCOW_JOURNAL)) return 0;
  const loc = findJournal(header);
  if (!loc) throw new ImageFormatError("the refcow journal bit is set but the image has no journal extension");
  // The area may extend past the end of the file (never written there): it reads as zeroes.
  if (loc.offset % clusterSize || loc.offset === 0 || loc.clusters === 0 || !Number.isSafeInteger(loc.offset)) {
    throw new ImageFormatError(`refcow journal location 0x${loc.offset.toString(16)} is invalid`);
  }
  const { records } = readTransactions(file, loc, clusterSize);
  for (const txn of records) for (const r of txn) file.write(r.data, r.offset, "journal");
  file.flush("journal");
  return records.length;
}
