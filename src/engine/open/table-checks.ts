/**
 * Validation of the tables as they are read: an L1 table (every entry, or for check the bad ones noted as
 * qemu-img check words them) and each L2 slice the cache loads.
 */
import type { BlockFile } from "../../io/block-file.js";
import { viewOf } from "../../format/bytes.js";
import { ImageFormatError } from "../../format/errors.js";
import { ClusterType, decodeL1, type L2Codec } from "../../format/l1l2.js";

/**
 * Reads and validates an L1 table. With `problems` (an open for check), an invalid entry is noted there, as
 * qemu-img check words it, and reads as empty instead of failing the whole table.
 */
export function readL1Table(file: BlockFile, clusterSize: number, offset: number, entries: number, fileSize: number, what: string, problems?: string[]): { offsets: number[]; copied: boolean[] } {
  const raw = new Uint8Array(entries * 8);
  if (entries) file.read(raw, offset, "l1");
  const v = viewOf(raw);
  const offsets: number[] = new Array(entries);
  const copied: boolean[] = new Array(entries);
  const cs = clusterSize;
  for (let i = 0; i < entries; i++) {
    const e = decodeL1(v, i * 8);
    offsets[i] = 0;
    copied[i] = false;
    const bad = (message: string, forCheck: string) => {
      if (!problems) throw new ImageFormatError(message);
      problems.push(forCheck);
    };
    const hex = e.l2Offset.toString(16);
    if (e.reservedBits) bad(`${what} entry ${i} has reserved bits set`, `ERROR found L1 entry with reserved bits set: ${viewOf(raw).getBigUint64(i * 8).toString(16)}`);
    else if (e.l2Offset % cs) bad(`${what} entry ${i}: L2 table offset 0x${hex} is not cluster aligned`, `ERROR l2_offset=${hex}: Table is not cluster aligned; L1 entry corrupted`);
    else if (e.l2Offset && e.l2Offset + cs > fileSize) {
      bad(`${what} entry ${i}: L2 table offset 0x${hex} is past the end of the image`, `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex} size 0x${cs.toString(16)}`);
    } else if (e.l2Offset === 0 && e.copied) bad(`${what} entry ${i} has the COPIED flag without an L2 table`, `ERROR ${what} entry ${i} has the COPIED flag without an L2 table`);
    else {
      offsets[i] = e.l2Offset;
      copied[i] = e.copied;
    }
  }
  return { offsets, copied };
}

/** Validates an L2 slice as the cache loads it. */
export function validateL2Slice(l2: L2Codec, clusterSize: number, sliceEntries: number, offset: number, buf: Uint8Array): void {
  const v = viewOf(buf);
  for (let i = 0; i < sliceEntries; i++) {
    const e = l2.decode(v, i);
    if (e.reservedBits) throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * l2.entryBytes).toString(16)} has reserved bits set`);
    if ((e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && e.offset % clusterSize) {
      throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * l2.entryBytes).toString(16)} points to unaligned host offset 0x${e.offset.toString(16)}`);
    }
    if (e.type === ClusterType.Unallocated && e.copied && !l2.extended) {
      throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * l2.entryBytes).toString(16)} has the COPIED flag without a cluster`);
    }
    if (e.type === ClusterType.Compressed && e.copied) {
      throw new ImageFormatError(`compressed L2 entry at host offset 0x${(offset + i * l2.entryBytes).toString(16)} has the COPIED flag`);
    }
    if (l2.extended && e.type !== ClusterType.Compressed) {
      const [alloc, zero] = l2.bitmap(v, i);
      if (alloc & zero) throw new ImageFormatError(`extended L2 entry at host offset 0x${(offset + i * 16).toString(16)} has subclusters both allocated and zero`);
      if (alloc && !e.offset) throw new ImageFormatError(`extended L2 entry at host offset 0x${(offset + i * 16).toString(16)} has allocated subclusters without a host cluster`);
    }
  }
}
