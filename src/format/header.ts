/**
 * qcow2 header (cluster 0), per QEMU's docs/interop/qcow2.txt. All fields big-endian.
 *
 *   0  u32 magic "QFI\xfb"            4  u32 version (2 or 3)
 *   8  u64 backing_file_offset        16 u32 backing_file_size
 *   20 u32 cluster_bits               24 u64 size (virtual, bytes)
 *   32 u32 crypt_method               36 u32 l1_size (entries)
 *   40 u64 l1_table_offset            48 u64 refcount_table_offset
 *   56 u32 refcount_table_clusters    60 u32 nb_snapshots
 *   64 u64 snapshots_offset           -- a version 2 header ends here (72 bytes)
 *   72 u64 incompatible_features      80 u64 compatible_features
 *   88 u64 autoclear_features         96 u32 refcount_order
 *   100 u32 header_length             104 u8 compression_type (+7 bytes padding; present when header_length >= 112)
 *
 * Header extensions follow at header_length (72 for v2), each `u32 type, u32 length, data, zero padding to 8`,
 * ending with type 0. The backing file name (not NUL-terminated) sits at backing_file_offset, after them.
 * Fields past 112 that refcow does not know are kept verbatim and written back.
 */
import { ImageFormatError, UnsupportedFeatureError } from "./errors.js";
import { alignUp, readU64, viewOf, writeU64 } from "./bytes.js";
import { bitsOf, type FeatureName, INCOMPAT_STANDARD, QEMU_FEATURE_NAMES } from "./features.js";

export const QCOW_MAGIC = 0x514649fb;
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
export const V3_HEADER_LENGTH = 112;

export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** QEMU limits (block/qcow2.h). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;

export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** Header bytes past the fields refcow knows (header_length > 112), kept verbatim. */
  unknownTail: Uint8Array;
  /** Extensions other than backing format and feature table, kept in order. */
  extensions: HeaderExtension[];
  backingFormat?: string;
  backingFile?: string;
  featureNames: FeatureName[];
}

/**
 * Parses and validates a header from the first cluster (or at least the first bytes) of an image. An incompatible bit outside `knownIncompatible` (the
 * standard ones, unless the caller adds its schemes': SchemeCatalog.knownIncompatible) refuses the image.
 */
export function parseHeader(buf: Uint8Array, fileSize: number, knownIncompatible: bigint = INCOMPAT_STANDARD): Qcow2Header {
  if (buf.length < V2_HEADER_LENGTH || fileSize < V2_HEADER_LENGTH) {
    throw new ImageFormatError(`file is too short for a qcow2 header (${fileSize} bytes)`);
  }
  const v = viewOf(buf);
  const magic = v.getUint32(0);
  if (magic !== QCOW_MAGIC) throw new ImageFormatError("not a qcow2 image (bad magic)");
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) throw new UnsupportedFeatureError(`unsupported qcow2 version ${version}`);
  const u64 = (pos: number, what: string) => {
    try {
      return readU64(v, pos, what);
    } catch {
      throw new ImageFormatError(`header field ${what} is out of range`);
    }
  };
  const h: Qcow2Header = {
    version: version as 2 | 3,
    backingFileOffset: u64(8, "backing_file_offset"),
    backingFileSize: v.getUint32(16),
    clusterBits: v.getUint32(20),
    size: u64(24, "size"),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: u64(40, "l1_table_offset"),
    refcountTableOffset: u64(48, "refcount_table_offset"),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    snapshotsOffset: u64(64, "snapshots_offset"),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: 0,
    unknownTail: new Uint8Array(0),
    extensions: [],
    featureNames: [],
  };
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS) {
    throw new ImageFormatError(`unsupported cluster size: 2^${h.clusterBits} (must be 512 B to 2 MiB)`);
  }
  const clusterSize = 2 ** h.clusterBits;
  if (version === 3) {
    if (buf.length < V3_MIN_HEADER_LENGTH) throw new ImageFormatError("qcow2 v3 header is truncated");
    h.incompatibleFeatures = v.getBigUint64(72);
    h.compatibleFeatures = v.getBigUint64(80);
    h.autoclearFeatures = v.getBigUint64(88);
    h.refcountOrder = v.getUint32(96);
    h.headerLength = v.getUint32(100);
    if (h.headerLength < V3_MIN_HEADER_LENGTH) throw new ImageFormatError(`qcow2 header too short (header_length ${h.headerLength})`);
    if (h.headerLength > clusterSize) throw new ImageFormatError(`qcow2 header exceeds cluster size (header_length ${h.headerLength})`);
    if (h.headerLength % 8 !== 0) throw new ImageFormatError(`header_length ${h.headerLength} is not a multiple of 8`);
    if (h.headerLength > buf.length) throw new ImageFormatError("qcow2 header is truncated");
    if (h.headerLength >= 105) h.compressionType = buf[104];
    if (h.headerLength > V3_HEADER_LENGTH) h.unknownTail = buf.slice(V3_HEADER_LENGTH, h.headerLength);
  }
  if (h.refcountOrder > 6) throw new ImageFormatError(`refcount width can be at most 64 bits (refcount_order ${h.refcountOrder})`);

  // Extensions.
  const extEnd = h.backingFileOffset ? Math.min(h.backingFileOffset, clusterSize) : clusterSize;
  let pos = h.headerLength;
  const seen = new Set<number>();
  while (pos + 8 <= Math.min(extEnd, buf.length)) {
    const type = v.getUint32(pos);
    const len = v.getUint32(pos + 4);
    pos += 8;
    if (type === EXT_END) break;
    if (len > extEnd - pos || pos + len > buf.length) {
      throw new ImageFormatError(`header extension 0x${type.toString(16)} is too large (${len} bytes)`);
    }
    if (seen.has(type)) throw new ImageFormatError(`duplicate header extension 0x${type.toString(16)}`);
    seen.add(type);
    const data = buf.slice(pos, pos + len);
    pos += alignUp(len, 8);
    if (type === EXT_BACKING_FORMAT) {
      h.backingFormat = new TextDecoder().decode(data);
    } else if (type === EXT_FEATURE_TABLE) {
      for (let i = 0; i + 48 <= data.length; i += 48) {
        const name = new TextDecoder().decode(data.subarray(i + 2, i + 48)).replace(/\0.*$/s, "");
        h.featureNames.push({ type: data[i] as 0 | 1 | 2, bit: data[i + 1], name });
      }
    } else {
      h.extensions.push({ type, data });
    }
  }

  if (h.backingFileOffset) {
    if (h.backingFileSize > 1023 || h.backingFileOffset + h.backingFileSize > clusterSize) {
      throw new ImageFormatError("backing file name is too long or lies outside the header cluster");
    }
    if (h.backingFileOffset + h.backingFileSize > buf.length) throw new ImageFormatError("header cluster is truncated");
    h.backingFile = new TextDecoder().decode(buf.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize));
  }

  const unknownIncompat = h.incompatibleFeatures & ~knownIncompatible;
  if (unknownIncompat) {
    const names = bitsOf(unknownIncompat).map((bit) => {
      const f = h.featureNames.find((n) => n.type === 0 && n.bit === bit);
      return f ? `${f.name} (bit ${bit})` : `Unknown incompatible feature: bit ${bit}`;
    });
    throw new UnsupportedFeatureError(`image uses unsupported incompatible features: ${names.join(", ")}`);
  }
  return h;
}

/** Serializes the whole header cluster, as QEMU's qcow2_update_header does (zero-filled after the content). */
export function serializeHeader(h: Qcow2Header, clusterSize: number, opts: { writeFeatureTable?: boolean; featureNames?: readonly FeatureName[] } = {}): Uint8Array {
  const buf = new Uint8Array(clusterSize);
  const v = viewOf(buf);
  v.setUint32(0, QCOW_MAGIC);
  v.setUint32(4, h.version);
  v.setUint32(16, 0);
  v.setUint32(20, h.clusterBits);
  writeU64(v, 24, h.size);
  v.setUint32(32, h.cryptMethod);
  v.setUint32(36, h.l1Size);
  writeU64(v, 40, h.l1TableOffset);
  writeU64(v, 48, h.refcountTableOffset);
  v.setUint32(56, h.refcountTableClusters);
  v.setUint32(60, h.nbSnapshots);
  writeU64(v, 64, h.snapshotsOffset);
  let pos: number;
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatibleFeatures);
    v.setBigUint64(80, h.compatibleFeatures);
    v.setBigUint64(88, h.autoclearFeatures);
    v.setUint32(96, h.refcountOrder);
    const headerLength = Math.max(V3_HEADER_LENGTH, V3_HEADER_LENGTH + h.unknownTail.length);
    v.setUint32(100, headerLength);
    buf[104] = h.compressionType;
    buf.set(h.unknownTail, V3_HEADER_LENGTH);
    pos = headerLength;
  } else {
    pos = V2_HEADER_LENGTH;
  }
  const putExt = (type: number, data: Uint8Array) => {
    if (pos + 8 + alignUp(data.length, 8) > clusterSize) throw new ImageFormatError("header extensions do not fit in the header cluster");
    v.setUint32(pos, type);
    v.setUint32(pos + 4, data.length);
    buf.set(data, pos + 8);
    pos += 8 + alignUp(data.length, 8);
  };
  if (h.backingFile && h.backingFormat) putExt(EXT_BACKING_FORMAT, new TextEncoder().encode(h.backingFormat));
  const dataFile = h.extensions.find((e) => e.type === EXT_DATA_FILE);
  if (dataFile) putExt(dataFile.type, dataFile.data);
  const crypto = h.extensions.find((e) => e.type === EXT_CRYPTO);
  if (crypto) putExt(crypto.type, crypto.data);
  if (h.version === 3 && (opts.writeFeatureTable ?? clusterSize > 4096)) {
    // QEMU always writes its own standard table, whatever the image had; refcow adds its schemes' bits.
    const names = opts.featureNames ?? QEMU_FEATURE_NAMES;
    const table = new Uint8Array(48 * names.length);
    names.forEach((f, i) => {
      table[i * 48] = f.type;
      table[i * 48 + 1] = f.bit;
      table.set(new TextEncoder().encode(f.name).subarray(0, 46), i * 48 + 2);
    });
    putExt(EXT_FEATURE_TABLE, table);
  }
  for (const e of h.extensions) {
    if (e.type === EXT_DATA_FILE || e.type === EXT_CRYPTO) continue;
    putExt(e.type, e.data);
  }
  // End of extensions marker (8 zero bytes) is already zero; reserve its room.
  if (pos + 8 > clusterSize) throw new ImageFormatError("header extensions do not fit in the header cluster");
  pos += 8;
  if (h.backingFile) {
    const name = new TextEncoder().encode(h.backingFile);
    if (name.length > 1023 || pos + name.length > clusterSize) throw new ImageFormatError("backing file name is too long");
    buf.set(name, pos);
    writeU64(v, 8, pos);
    v.setUint32(16, name.length);
  } else {
    writeU64(v, 8, 0);
  }
  return buf;
}
