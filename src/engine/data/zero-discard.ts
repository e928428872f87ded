/**
 * Zeroes and discards: whole clusters get the zero flag (v3) or become unallocated, partial ones are written
 * as zeroes through the write path; what an entry referenced is released to the scheme.
 */
import { alignUp, viewOf } from "../../format/bytes.js";
import { ClusterType, type L2Entry } from "../../format/l1l2.js";
import type { ImageState } from "../image-state.js";
import type { WritePath } from "./write-path.js";

export class ZeroDiscard {
  constructor(
    private readonly img: ImageState,
    private readonly writer: WritePath,
  ) {}

  zeroRange(offset: number, length: number, unmap: boolean): void {
    const img = this.img;
    img.settleScheme(); // nothing deferred under the clusters that change
    const cs = img.clusterSize;
    const end = offset + length;
    // The last cluster of a disk whose size is not cluster aligned counts as whole.
    const fullEnd = end === img.size ? alignUp(end, cs) : end;
    const a = alignUp(offset, cs);
    const b = Math.floor(fullEnd / cs) * cs;
    const canFlag = img.header.version === 3;
    if (a >= b) {
      if (length) this.writer.writeGuest(offset, new Uint8Array(length));
    } else {
      if (offset < a) this.writer.writeGuest(offset, new Uint8Array(a - offset));
      for (let pos = a; pos < b; pos += cs) this.zeroCluster(pos / cs, unmap, canFlag);
      if (b < end) this.writer.writeGuest(b, new Uint8Array(end - b));
    }
    if (img.cacheMode === "writethrough") img.flushMetadata();
  }

  private zeroCluster(gc: number, unmap: boolean, canFlag: boolean): void {
    const img = this.img;
    const cs = img.clusterSize;
    if (!canFlag) {
      // v2 has no zero flag: deallocate when nothing shows through, else write zeroes.
      if (img.backing) this.writer.writeGuest(gc * cs, new Uint8Array(cs));
      else this.unmapCluster(gc, false);
      return;
    }
    const m = this.writer.l2ForWrite(gc);
    const e = m.entry;
    const l2Cache = img.tables.l2Cache;
    const buf = l2Cache.get(m.slice);
    const v = viewOf(buf);
    if (img.l2.extended) {
      img.l2.encodeStandard(v, m.index, 0);
      img.l2.setBitmap(v, m.index, 0, 0xffffffff);
    } else {
      const keep = !unmap && (e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && e.copied;
      img.l2.encodeStandard(v, m.index, keep ? e.offset : 0, { copied: keep, zero: true });
      if (keep) {
        l2Cache.markDirty(m.slice);
        return;
      }
    }
    l2Cache.markDirty(m.slice);
    this.releaseEntry(e);
  }

  /** Drops the host clusters an (old) entry referenced. */
  private releaseEntry(e: L2Entry): void {
    const img = this.img;
    if (e.type === ClusterType.Compressed) {
      const [a, b] = img.l2.compressedClusters(e);
      for (let c = a; c <= b; c++) img.scheme.release(c, "data");
    } else if (e.offset) {
      img.scheme.release(e.offset / img.clusterSize, "data");
    }
  }

  /** Discards whole clusters [start, end) (byte offsets, cluster aligned). */
  discard(start: number, end: number): void {
    this.img.settleScheme();
    const cs = this.img.clusterSize;
    for (let pos = start; pos < end; pos += cs) this.unmapCluster(pos / cs, true);
  }

  /**
   * Discards one cluster. As a discard (QEMU's rule): when a backing file could show through or the cluster
   * was allocated, a v3 image gets the zero flag; otherwise the entry becomes unallocated. Not as a discard
   * (v2 write-zeroes without backing): the entry becomes unallocated.
   */
  private unmapCluster(gc: number, asDiscard: boolean): void {
    const img = this.img;
    const pre = img.tables.lookup(gc);
    const e0 = pre.entry;
    const allocated = e0.offset !== 0;
    let zeroFlag = false;
    if (asDiscard) {
      if (!img.backing && !allocated) return;
      zeroFlag = img.header.version === 3;
    } else if (!allocated && e0.type === ClusterType.Unallocated) {
      return;
    }
    const m = this.writer.l2ForWrite(gc);
    const e = m.entry;
    const buf = img.tables.l2Cache.get(m.slice);
    const v = viewOf(buf);
    img.l2.encodeStandard(v, m.index, 0, { zero: zeroFlag && !img.l2.extended });
    if (img.l2.extended) img.l2.setBitmap(v, m.index, 0, zeroFlag ? 0xffffffff : 0);
    img.tables.l2Cache.markDirty(m.slice);
    this.releaseEntry(e);
  }

  /** Makes guest cluster `gc` unallocated (no zero flag), dropping what it referenced (a shrinking resize). */
  cropCluster(gc: number): void {
    const img = this.img;
    const tables = img.tables;
    const l1i = Math.floor(gc / tables.l2Entries);
    if (l1i >= tables.l1.length || !tables.l1[l1i]) return;
    const pre = tables.lookup(gc);
    if (pre.entry.type === ClusterType.Unallocated && !pre.entry.offset && !pre.alloc && !pre.zero) return;
    const m = this.writer.l2ForWrite(gc);
    const e = m.entry;
    const v = viewOf(tables.l2Cache.get(m.slice));
    img.l2.encodeStandard(v, m.index, 0);
    if (img.l2.extended) img.l2.setBitmap(v, m.index, 0, 0);
    tables.l2Cache.markDirty(m.slice);
    this.releaseEntry(e);
  }
}
