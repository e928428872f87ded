/**
 * Structure-aware mutations of qcow2 images for the fuzzer: the layout of a valid image (header fields,
 * header extensions, L1/L2 entries, refcount table and block entries, snapshot table entries and their L1
 * tables, refcow journal records, data log records and owner table extension) is parsed once; a mutation then sets one of those
 * fields to an interesting value (0, off by one, unaligned, past the end of the file, pointing at another
 * structure, flag bits, huge, random), flips bits in a metadata cluster, or truncates / extends the file.
 * Mutations are plain numbers so that fast-check can shrink them.
 */
import fc from "fast-check";
import { crc32 } from "node:zlib";

export type FieldKind = "header" | "extension" | "l1" | "l2" | "reftable" | "refblock" | "snapshot" | "journal" | "owner" | "datalog";
export const FIELD_KINDS: FieldKind[] = ["header", "extension", "l1", "l2", "reftable", "refblock", "snapshot", "journal", "owner", "datalog"];

export interface Field {
  kind: FieldKind;
  at: number;
  width: 1 | 2 | 4 | 8;
  what: string;
  /** A journal transaction whose checksum must be recomputed after the change (start, payload length). */
  txn?: { start: number; payload: number };
  /** A data log record whose header checksum must be recomputed after the change (its start). */
  logRecord?: number;
}

export interface Layout {
  clusterSize: number;
  fileSize: number;
  fields: Field[];
  byKind: Map<FieldKind, Field[]>;
  /** Metadata clusters (bit flips go there). */
  metadata: number[];
  /** Host offsets worth pointing at: the structures themselves. */
  landmarks: number[];
}

const MASK_OFFSET = 0x00ff_ffff_ffff_fe00n;

export function parseLayout(b: Uint8Array): Layout {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u32 = (o: number) => (o + 4 <= b.length ? v.getUint32(o) : 0);
  const u64 = (o: number) => (o + 8 <= b.length ? v.getBigUint64(o) : 0n);
  const cs = 2 ** u32(20);
  const version = u32(4);
  const fields: Field[] = [];
  const metadata = new Set<number>([0]);
  const landmarks = new Set<number>([0]);
  const add = (kind: FieldKind, at: number, width: Field["width"], what: string, txn?: Field["txn"], logRecord?: number) => {
    if (at + width <= b.length) fields.push({ kind, at, width, what, txn, logRecord });
  };
  const meta = (off: number, bytes: number) => {
    for (let c = Math.floor(off / cs); c < Math.ceil((off + bytes) / cs) && c * cs < b.length; c++) metadata.add(c);
  };
  const header: [number, Field["width"], string][] = [
    [4, 4, "version"], [8, 8, "backing_file_offset"], [16, 4, "backing_file_size"], [20, 4, "cluster_bits"], [24, 8, "size"],
    [32, 4, "crypt_method"], [36, 4, "l1_size"], [40, 8, "l1_table_offset"], [48, 8, "refcount_table_offset"],
    [56, 4, "refcount_table_clusters"], [60, 4, "nb_snapshots"], [64, 8, "snapshots_offset"],
  ];
  if (version === 3) header.push([72, 8, "incompatible_features"], [80, 8, "compatible_features"], [88, 8, "autoclear_features"], [96, 4, "refcount_order"], [100, 4, "header_length"], [104, 1, "compression_type"]);
  for (const [at, w, what] of header) add("header", at, w, what);

  // Header extensions.
  let pos = version === 3 ? u32(100) : 72;
  let journal: { offset: number; clusters: number } | undefined;
  let dataLog: { offset: number; clusters: number } | undefined;
  for (let n = 0; n < 16 && pos + 8 <= Math.min(cs, b.length); n++) {
    const type = u32(pos);
    const len = u32(pos + 4);
    add("extension", pos, 4, `extension ${n} type`);
    add("extension", pos + 4, 4, `extension 0x${type.toString(16)} length`);
    if (type === 0) break;
    if (len >= 8) add("extension", pos + 8, 8, `extension 0x${type.toString(16)} data`);
    if (type === 0x52434a4c && len >= 12) journal = { offset: Number(u64(pos + 8)), clusters: u32(pos + 16) };
    if (type === 0x5243444c && len >= 12) dataLog = { offset: Number(u64(pos + 8)), clusters: u32(pos + 16) };
    if (type === 0x52434f57 && len >= 20) {
      add("owner", pos + 8, 8, "owner table offset");
      add("owner", pos + 16, 4, "owner table entries");
      add("owner", pos + 20, 4, "owner active node");
      add("owner", pos + 24, 4, "owner node count");
      for (let p = pos + 28; p + 14 <= pos + 8 + len && p < pos + 28 + 4 * 16; p += 16) {
        add("owner", p, 4, "owner node id");
        add("owner", p + 4, 4, "owner node parent");
      }
      const tableAt = Number(u64(pos + 8));
      meta(tableAt, u32(pos + 16) * 4);
      landmarks.add(tableAt);
    }
    pos += 8 + Math.ceil(len / 8) * 8;
  }

  const extended = version === 3 && (u64(72) & 16n) !== 0n;
  const entryBytes = extended ? 16 : 8;
  // L1 table and the L2 tables it points to; the same for snapshots.
  const walkL1 = (l1: number, size: number, label: string) => {
    meta(l1, size * 8);
    landmarks.add(l1);
    for (let i = 0; i < Math.min(size, 64); i++) {
      const e = u64(l1 + i * 8);
      if (e || i < 2) add("l1", l1 + i * 8, 8, `${label} L1 entry ${i}`);
      const l2 = Number(e & MASK_OFFSET);
      if (!l2 || l2 + cs > b.length) continue;
      meta(l2, cs);
      landmarks.add(l2);
      let zeros = 0;
      for (let j = 0; j < cs / entryBytes; j++) {
        const le = u64(l2 + j * entryBytes);
        if (!le && zeros++ > 2) continue;
        add("l2", l2 + j * entryBytes, 8, `${label} L2 entry ${i}/${j}`);
        if (extended) add("l2", l2 + j * entryBytes + 8, 8, `${label} L2 bitmap ${i}/${j}`);
      }
    }
  };
  walkL1(Number(u64(40)), u32(36), "active");

  // Refcount table and blocks.
  const rt = Number(u64(48));
  const rtClusters = u32(56);
  meta(rt, rtClusters * cs);
  landmarks.add(rt);
  const order = version === 3 ? u32(96) : 4;
  const bits = 2 ** order;
  for (let i = 0; i < Math.min((rtClusters * cs) / 8, 512); i++) {
    const e = u64(rt + i * 8);
    if (!e && i > 1) continue;
    add("reftable", rt + i * 8, 8, `refcount table entry ${i}`);
    const block = Number(e & MASK_OFFSET);
    if (!block || block + cs > b.length) continue;
    meta(block, cs);
    landmarks.add(block);
    const width = Math.max(1, bits / 8) as Field["width"];
    for (let j = 0, seen = 0; j < (cs * 8) / bits && seen < 64; j++) {
      const at = block + Math.floor((j * bits) / 8);
      if (b[at] === 0 && j > 2) continue;
      seen++;
      add("refblock", at, width, `refcount of cluster ${i * ((cs * 8) / bits) + j}`);
    }
  }

  // Snapshot table entries.
  const nb = u32(60);
  let sp = Number(u64(64));
  if (nb) landmarks.add(sp);
  for (let i = 0; i < Math.min(nb, 16) && sp + 40 <= b.length; i++) {
    meta(sp, 40);
    add("snapshot", sp, 8, `snapshot ${i} l1_table_offset`);
    add("snapshot", sp + 8, 4, `snapshot ${i} l1_size`);
    add("snapshot", sp + 12, 2, `snapshot ${i} id_str_size`);
    add("snapshot", sp + 14, 2, `snapshot ${i} name_size`);
    add("snapshot", sp + 32, 4, `snapshot ${i} vm_state_size`);
    add("snapshot", sp + 36, 4, `snapshot ${i} extra_data_size`);
    const extra = u32(sp + 36);
    if (extra >= 16) {
      add("snapshot", sp + 40, 8, `snapshot ${i} vm_state_size_large`);
      add("snapshot", sp + 48, 8, `snapshot ${i} disk_size`);
    }
    walkL1(Number(u64(sp)), u32(sp + 8), `snapshot ${i}`);
    const idLen = v.getUint16(sp + 12);
    const nameLen = v.getUint16(sp + 14);
    sp = sp + Math.ceil((40 + extra + idLen + nameLen) / 8) * 8;
  }

  // refcow journal: record offsets and lengths of committed transactions (checksums fixed after a change).
  if (journal && journal.offset + 512 <= b.length) {
    meta(journal.offset, journal.clusters * cs);
    landmarks.add(journal.offset);
    add("journal", journal.offset + 8, 8, "journal first sequence number");
    let p = journal.offset + 512;
    const end = Math.min(b.length, journal.offset + journal.clusters * cs);
    for (let t = 0; t < 32 && p + 24 <= end && u32(p) === 0x52435458; t++) {
      const payload = u32(p + 4);
      const count = u32(p + 16);
      const txn = { start: p, payload };
      add("journal", p + 4, 4, `journal transaction ${t} payload length`, txn);
      add("journal", p + 16, 4, `journal transaction ${t} record count`, txn);
      let r = p + 24;
      for (let k = 0; k < count && r + 16 <= end; k++) {
        const len = u32(r + 8);
        add("journal", r, 8, `journal transaction ${t} record ${k} offset`, txn);
        add("journal", r + 8, 4, `journal transaction ${t} record ${k} length`, txn);
        r += 16 + Math.ceil(len / 8) * 8;
      }
      p += Math.ceil((24 + payload) / 512) * 512;
    }
  }

  // refcow data log (scheme log): the area header's sequence number, each record's length, sequence number
  // and guest offset (its header checksum fixed after a change, so the record still passes it).
  if (dataLog && dataLog.offset + 512 <= b.length) {
    meta(dataLog.offset, dataLog.clusters * cs);
    landmarks.add(dataLog.offset);
    add("datalog", dataLog.offset + 8, 8, "data log first sequence number");
    let p = dataLog.offset + 512;
    const end = Math.min(b.length, dataLog.offset + dataLog.clusters * cs);
    for (let r = 0; r < 32 && p + 512 <= end && u32(p) === 0x52434c52; r++) {
      const len = u32(p + 4);
      add("datalog", p + 4, 4, `data log record ${r} length`, undefined, p);
      add("datalog", p + 8, 8, `data log record ${r} sequence number`, undefined, p);
      add("datalog", p + 16, 8, `data log record ${r} guest offset`, undefined, p);
      p += 512 + Math.ceil(len / 512) * 512;
    }
  }

  const byKind = new Map<FieldKind, Field[]>();
  for (const f of fields) byKind.set(f.kind, [...(byKind.get(f.kind) ?? []), f]);
  return { clusterSize: cs, fileSize: b.length, fields, byKind, metadata: [...metadata].sort((a, c) => a - c), landmarks: [...landmarks] };
}

export type Mutation =
  | { kind: "field"; fieldKind: number; index: number; choice: number; random: bigint }
  | { kind: "flip"; cluster: number; offset: number; bit: number }
  | { kind: "length"; mode: number; amount: number };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant("field" as const), fieldKind: fc.nat(), index: fc.nat(), choice: fc.nat(), random: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("flip" as const), cluster: fc.nat(), offset: fc.nat(), bit: fc.nat({ max: 7 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("length" as const), mode: fc.nat({ max: 5 }), amount: fc.nat() }) },
);

export const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 3 });

function candidates(f: Field, l: Layout, orig: bigint): bigint[] {
  const cs = BigInt(l.clusterSize);
  const size = BigInt(l.fileSize);
  const max = (1n << BigInt(f.width * 8)) - 1n;
  const common = [0n, 1n, orig + 1n, orig - 1n, orig * 2n, max, max >> 1n, orig ^ 1n];
  if (f.width === 1) return [...common, 2n, 0x80n];
  if (f.width === 2) return [...common, 0x7fffn, 0x100n];
  if (f.width === 4) return [...common, 0x7fff_ffffn, 0x1000_0000n, 0x10000n, orig + 0x100n, 65536n, 65537n];
  const pointers = l.landmarks.map((x) => BigInt(x));
  return [
    ...common,
    orig + 512n,
    orig + cs,
    orig - cs,
    size,
    size - cs,
    size + cs,
    size * 4n,
    1n << 32n,
    1n << 48n,
    (1n << 56n) - cs,
    orig | (1n << 63n),
    orig & ~(1n << 63n),
    orig | (1n << 62n),
    orig | 1n,
    orig | 2n,
    orig ^ (1n << 40n),
    ...pointers,
    ...pointers.map((p) => p | (1n << 63n)),
  ];
}

function put(b: Uint8Array, f: Field, value: bigint): void {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const x = value & ((1n << BigInt(f.width * 8)) - 1n);
  if (f.width === 8) v.setBigUint64(f.at, x);
  else if (f.width === 4) v.setUint32(f.at, Number(x));
  else if (f.width === 2) v.setUint16(f.at, Number(x));
  else b[f.at] = Number(x);
}

function get(b: Uint8Array, f: Field): bigint {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (f.width === 8) return v.getBigUint64(f.at);
  if (f.width === 4) return BigInt(v.getUint32(f.at));
  if (f.width === 2) return BigInt(v.getUint16(f.at));
  return BigInt(b[f.at]);
}

/** Recomputes a journal transaction's checksum (as journal-format.ts computes it) so the change is replayed. */
function fixTxnChecksum(b: Uint8Array, txn: { start: number; payload: number }): void {
  const { start, payload } = txn;
  if (start + 24 + payload > b.length) return;
  const head = crc32(b.subarray(start, start + 20));
  const sum = crc32(b.subarray(start + 24, start + 24 + payload), head) >>> 0;
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(start + 20, sum);
}

/** Applies mutations to a copy of `seed`; returns the mutant and a description of each change. */
export function applyMutations(seed: Uint8Array, layout: Layout, muts: Mutation[]): { bytes: Uint8Array; described: string[] } {
  let b = Uint8Array.prototype.slice.call(seed);
  const described: string[] = [];
  for (const m of muts) {
    if (m.kind === "field") {
      const kinds = FIELD_KINDS.filter((k) => layout.byKind.get(k)?.length);
      const list = layout.byKind.get(kinds[m.fieldKind % kinds.length])!;
      const f = list[m.index % list.length];
      if (f.at + f.width > b.length) continue;
      const orig = get(b, f);
      const c = candidates(f, layout, orig);
      const value = m.choice % (c.length + 1) === c.length ? m.random : c[m.choice % (c.length + 1)];
      put(b, f, value < 0n ? 0n : value);
      if (f.txn) fixTxnChecksum(b, f.txn);
      if (f.logRecord !== undefined && f.logRecord + 32 <= b.length) {
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        dv.setUint32(f.logRecord + 28, crc32(b.subarray(f.logRecord, f.logRecord + 28)) >>> 0);
      }
      described.push(`${f.what} (at ${f.at}): ${orig} -> ${get(b, f)}`);
    } else if (m.kind === "flip") {
      const c = layout.metadata[m.cluster % layout.metadata.length];
      const at = c * layout.clusterSize + (m.offset % layout.clusterSize);
      if (at >= b.length) continue;
      b[at] ^= 1 << m.bit;
      described.push(`bit ${m.bit} of byte ${at} flipped`);
    } else {
      const cs = layout.clusterSize;
      const len = b.length;
      let next: number;
      switch (m.mode) {
        case 0:
          next = len ? m.amount % len : 0; // anywhere
          break;
        case 1:
          next = Math.max(0, len - cs * (1 + (m.amount % 4))); // lose the last clusters
          break;
        case 2:
          next = len - 1 - (m.amount % 511); // a torn last sector
          break;
        case 3:
          next = len + cs * (1 + (m.amount % 8)); // zeroes past the end
          break;
        case 4:
          next = len + 1 + (m.amount % 4095); // unaligned end
          break;
        default:
          next = Math.max(72, 72 + (m.amount % 512)); // only a header
      }
      next = Math.max(0, Number.isFinite(next) ? next : 0);
      const out = new Uint8Array(next);
      out.set(b.subarray(0, Math.min(len, next)));
      if (m.mode === 3) for (let i = len; i < next; i += 97) out[i] = 0xa5; // not all zeroes
      b = out;
      described.push(`file length ${len} -> ${next}`);
    }
  }
  return { bytes: b, described };
}
