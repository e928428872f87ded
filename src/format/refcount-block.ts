/**
 * Refcount table and refcount blocks (qcow2.txt, "Host cluster management").
 *
 * Refcount table: refcount_table_clusters contiguous clusters of u64 entries; bits 9-63 hold the offset of a
 * refcount block (0 = none: every cluster it would describe has refcount 0); bits 0-8 reserved.
 *
 * Refcount block: one cluster holding cluster_size * 8 / refcount_bits entries of refcount_bits each
 * (refcount_bits = 1 << refcount_order, 1..64), big-endian for widths >= 8; narrower widths are packed into
 * bytes least-significant bits first. Host cluster c is described by table entry c / entries_per_block, at
 * index c % entries_per_block of that block.
 */

export class RefcountCodec {
  readonly bits: number;
  readonly entriesPerBlock: number;
  /** Largest refcount the width can hold (capped at 2^53-1 for 64-bit widths). */
  readonly max: number;

  constructor(
    readonly order: number,
    clusterSize: number,
  ) {
    this.bits = 1 << order;
    this.entriesPerBlock = (clusterSize * 8) / this.bits;
    this.max = this.bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.bits - 1;
  }

  get(block: Uint8Array, index: number): number {
    switch (this.bits) {
      case 1:
      case 2:
      case 4: {
        const perByte = 8 / this.bits;
        const byte = block[Math.floor(index / perByte)];
        const shift = (index % perByte) * this.bits;
        return (byte >> shift) & ((1 << this.bits) - 1);
      }
      case 8:
        return block[index];
      case 16:
        return (block[index * 2] << 8) | block[index * 2 + 1];
      case 32: {
        const p = index * 4;
        return ((block[p] << 24) >>> 0) + ((block[p + 1] << 16) | (block[p + 2] << 8) | block[p + 3]);
      }
      default: {
        const p = index * 8;
        const hi = ((block[p] << 24) >>> 0) + ((block[p + 1] << 16) | (block[p + 2] << 8) | block[p + 3]);
        const lo = ((block[p + 4] << 24) >>> 0) + ((block[p + 5] << 16) | (block[p + 6] << 8) | block[p + 7]);
        if (hi > 0x1fffff) return Number.MAX_SAFE_INTEGER;
        return hi * 0x1_0000_0000 + lo;
      }
    }
  }

  set(block: Uint8Array, index: number, value: number): void {
    if (value < 0 || value > this.max || !Number.isInteger(value)) throw new RangeError(`refcount ${value} does not fit in ${this.bits} bits`);
    switch (this.bits) {
      case 1:
      case 2:
      case 4: {
        const perByte = 8 / this.bits;
        const i = Math.floor(index / perByte);
        const shift = (index % perByte) * this.bits;
        const mask = ((1 << this.bits) - 1) << shift;
        block[i] = (block[i] & ~mask) | (value << shift);
        return;
      }
      case 8:
        block[index] = value;
        return;
      case 16:
        block[index * 2] = value >> 8;
        block[index * 2 + 1] = value & 0xff;
        return;
      case 32: {
        const p = index * 4;
        block[p] = value >>> 24;
        block[p + 1] = (value >>> 16) & 0xff;
        block[p + 2] = (value >>> 8) & 0xff;
        block[p + 3] = value & 0xff;
        return;
      }
      default: {
        const p = index * 8;
        const hi = Math.floor(value / 0x1_0000_0000);
        const lo = value >>> 0;
        block[p] = hi >>> 24;
        block[p + 1] = (hi >>> 16) & 0xff;
        block[p + 2] = (hi >>> 8) & 0xff;
        block[p + 3] = hi & 0xff;
        block[p + 4] = lo >>> 24;
        block[p + 5] = (lo >>> 16) & 0xff;
        block[p + 6] = (lo >>> 8) & 0xff;
        block[p + 7] = lo & 0xff;
      }
    }
  }
}

/** Reftable entry codec. Returns the refblock offset, or throws a descriptive message when reserved bits are set. */
export function decodeReftableEntry(view: DataView, index: number): { offset: number; reservedBits: boolean } {
  const hi = view.getUint32(index * 8);
  const lo = view.getUint32(index * 8 + 4);
  return { offset: hi * 0x1_0000_0000 + ((lo & ~0x1ff) >>> 0), reservedBits: (lo & 0x1ff) !== 0 };
}

export function encodeReftableEntry(view: DataView, index: number, offset: number): void {
  view.setUint32(index * 8, Math.floor(offset / 0x1_0000_0000));
  view.setUint32(index * 8 + 4, offset >>> 0);
}
