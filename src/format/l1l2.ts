/**
 * L1 and L2 table entries (qcow2.txt, "Cluster mapping").
 *
 * L1 entry (u64): bits 9-55 offset of the L2 table (cluster aligned); bits 56-62 and 0-8 reserved;
 *   bit 63 COPIED: the L2 table's refcount is exactly 1 (meaningful only in the active L1).
 *
 * L2 entry (u64): bit 63 COPIED (data cluster refcount is exactly 1), bit 62 compressed, bits 0-61 descriptor.
 *   Standard descriptor: bit 0 "reads as zero" (v3), bits 1-8 and 56-61 reserved, bits 9-55 host offset.
 *   Compressed descriptor, with x = 62 - (cluster_bits - 8): bits 0..x-1 host byte offset of the compressed data
 *   (not aligned), bits x..61 number of additional 512-byte sectors it occupies.
 *
 * Extended L2 (incompatible bit 4): each entry is 128 bits: the u64 above, then a u64 subcluster bitmap:
 *   bits 0-31 "subcluster x is allocated", bits 32-63 "subcluster x reads as zero"; never both for one x.
 *
 * Entries are decoded from two u32 halves so the hot path never needs BigInt.
 */

const TWO32 = 0x1_0000_0000;

export const L1E_OFFSET_HI_MASK = 0x00ffffff; // bits 32-55
export const L1E_RESERVED_HI = 0x7f000000; // bits 56-62
export const L1E_RESERVED_LO = 0x1ff; // bits 0-8

export const L2E_COPIED_HI = 0x80000000;
export const L2E_COMPRESSED_HI = 0x40000000;
export const L2E_STD_RESERVED_HI = 0x3f000000; // bits 56-61
export const L2E_STD_RESERVED_LO = 0x1fe; // bits 1-8
export const L2E_ZERO_LO = 0x1;

export interface L1Entry {
  l2Offset: number;
  copied: boolean;
  reservedBits: boolean;
}

export function decodeL1(view: DataView, pos: number): L1Entry {
  const hi = view.getUint32(pos);
  const lo = view.getUint32(pos + 4);
  return {
    l2Offset: (hi & L1E_OFFSET_HI_MASK) * TWO32 + ((lo & ~0x1ff) >>> 0),
    copied: (hi & 0x80000000) !== 0,
    reservedBits: (hi & L1E_RESERVED_HI) !== 0 || (lo & L1E_RESERVED_LO) !== 0,
  };
}

export function encodeL1(view: DataView, pos: number, l2Offset: number, copied: boolean): void {
  const hi = Math.floor(l2Offset / TWO32);
  view.setUint32(pos, (hi | (copied && l2Offset ? 0x80000000 : 0)) >>> 0);
  view.setUint32(pos + 4, l2Offset >>> 0);
}

export const enum ClusterType {
  Unallocated = 0,
  ZeroPlain = 1,
  ZeroAlloc = 2,
  Normal = 3,
  Compressed = 4,
}

/** Decoded standard (non-compressed) or compressed L2 entry. */
export interface L2Entry {
  type: ClusterType;
  copied: boolean;
  /** Host offset of the data cluster (Normal / ZeroAlloc). For Compressed: the compressed data's byte offset. */
  offset: number;
  /** Compressed only: bytes the compressed data may occupy (from the sector count). */
  compressedSize: number;
  reservedBits: boolean;
}

export class L2Codec {
  readonly entryBytes: number;
  private readonly csizeShift: number;
  private readonly clusterBits: number;

  constructor(
    clusterBits: number,
    readonly extended: boolean,
  ) {
    this.clusterBits = clusterBits;
    this.entryBytes = extended ? 16 : 8;
    this.csizeShift = 62 - (clusterBits - 8);
  }

  decode(view: DataView, index: number): L2Entry {
    const pos = index * this.entryBytes;
    const hi = view.getUint32(pos);
    const lo = view.getUint32(pos + 4);
    const copied = (hi & L2E_COPIED_HI) !== 0;
    if (hi & L2E_COMPRESSED_HI) {
      const desc = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo);
      const shift = BigInt(this.csizeShift);
      const offset = Number(desc & ((1n << shift) - 1n));
      const sectors = Number(desc >> shift);
      return {
        type: ClusterType.Compressed,
        copied,
        offset,
        compressedSize: (sectors + 1) * 512 - (offset & 511),
        reservedBits: false,
      };
    }
    const offset = (hi & L1E_OFFSET_HI_MASK) * TWO32 + ((lo & ~0x1ff) >>> 0);
    const zero = (lo & L2E_ZERO_LO) !== 0;
    const reservedBits = (hi & L2E_STD_RESERVED_HI) !== 0 || (lo & L2E_STD_RESERVED_LO) !== 0;
    let type: ClusterType;
    if (zero && !this.extended) type = offset ? ClusterType.ZeroAlloc : ClusterType.ZeroPlain;
    else if (offset) type = ClusterType.Normal;
    else type = ClusterType.Unallocated;
    return { type, copied, offset, compressedSize: 0, reservedBits: reservedBits || (zero && this.extended) };
  }

  /** Subcluster bitmap of an extended entry: [allocated bits, zero bits]. */
  bitmap(view: DataView, index: number): [number, number] {
    const pos = index * this.entryBytes + 8;
    return [view.getUint32(pos + 4), view.getUint32(pos)];
  }

  setBitmap(view: DataView, index: number, alloc: number, zero: number): void {
    const pos = index * this.entryBytes + 8;
    view.setUint32(pos, zero >>> 0);
    view.setUint32(pos + 4, alloc >>> 0);
  }

  /** Writes a standard entry (Normal, ZeroPlain, ZeroAlloc or Unallocated). */
  encodeStandard(view: DataView, index: number, offset: number, opts: { copied?: boolean; zero?: boolean } = {}): void {
    const pos = index * this.entryBytes;
    const hi = Math.floor(offset / TWO32) | (opts.copied && offset ? L2E_COPIED_HI : 0);
    view.setUint32(pos, hi >>> 0);
    view.setUint32(pos + 4, ((offset >>> 0) | (opts.zero ? L2E_ZERO_LO : 0)) >>> 0);
  }

  /** Sets or clears the COPIED flag of an entry in place. */
  setCopied(view: DataView, index: number, copied: boolean): void {
    const pos = index * this.entryBytes;
    const hi = view.getUint32(pos);
    view.setUint32(pos, (copied ? hi | L2E_COPIED_HI : hi & ~L2E_COPIED_HI) >>> 0);
  }

  isZeroRaw(view: DataView, index: number): boolean {
    const pos = index * this.entryBytes;
    return view.getUint32(pos) === 0 && view.getUint32(pos + 4) === 0 && (!this.extended || (view.getUint32(pos + 8) === 0 && view.getUint32(pos + 12) === 0));
  }

  /** Host clusters touched by a compressed entry (each gets one reference). */
  compressedClusters(e: L2Entry): [first: number, last: number] {
    const first = Math.floor(e.offset / 2 ** this.clusterBits);
    const last = Math.floor((e.offset + e.compressedSize - 1) / 2 ** this.clusterBits);
    return [first, last];
  }
}
