/**
 * The read side of the data path: guest bytes through any L1 view (the active one, a snapshot's), from data
 * clusters, zero clusters, compressed clusters, subclusters (extended L2) and the backing chain.
 */
import { ImageFormatError } from "../../format/errors.js";
import { ClusterType, type L2Entry } from "../../format/l1l2.js";
import type { Mapping } from "../tables/active-tables.js";
import type { StoredRun } from "../../disk/sync-disk.js";
import { decompressCluster } from "./compression.js";
import type { ImageState } from "../image-state.js";
import type { OverlapChecks } from "./overlap.js";

export class ReadPath {
  /** The last compressed cluster read, decompressed (a COW of it reads it again at once). */
  private lastCompressed: { offset: number; data: Uint8Array } | null = null;
  /** Whether the scheme serves reads of the active layer it holds elsewhere (readHeld). */
  held = false;

  constructor(
    private readonly img: ImageState,
    private readonly overlap: OverlapChecks,
  ) {
    img.onFreed((c) => this.forget(c));
  }

  /** Reads guest bytes through the L1 table `l1`. */
  readThrough(l1: number[], buf: Uint8Array, offset: number, useBacking: boolean): void {
    const cs = this.img.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const gc = Math.floor(pos / cs);
      const inCluster = pos - gc * cs;
      const n = Math.min(cs - inCluster, buf.length - done);
      const dst = buf.subarray(done, done + n);
      // Data the scheme holds elsewhere (a pending copy, a log record) for the active layer: guest reads,
      // the NBD export, convert, and every other reader of the active layer come through here.
      if (this.held && l1 === this.img.tables.l1 && this.img.scheme.readHeld!(gc, inCluster, dst)) {
        done += n;
        continue;
      }
      const m = this.img.tables.lookup(gc, l1);
      this.readMapped(m, gc, inCluster, dst, useBacking);
      done += n;
    }
  }

  /** Reads `dst.length` bytes at `inCluster` of guest cluster `gc`, mapped by `m`. */
  readMapped(m: Mapping, gc: number, inCluster: number, dst: Uint8Array, useBacking: boolean): void {
    const img = this.img;
    const e = m.entry;
    const guestPos = gc * img.clusterSize + inCluster;
    switch (e.type) {
      case ClusterType.Unallocated:
        if (img.l2.extended && m.alloc | m.zero) break; // handled below per subcluster
        this.readBacking(dst, guestPos, useBacking);
        return;
      case ClusterType.ZeroPlain:
      case ClusterType.ZeroAlloc:
        dst.fill(0);
        return;
      case ClusterType.Compressed: {
        const data = this.decompressed(e, guestPos);
        dst.set(data.subarray(inCluster, inCluster + dst.length));
        return;
      }
      case ClusterType.Normal:
        if (!img.l2.extended) {
          this.overlap.checkDataCluster(e.offset, guestPos);
          img.file.read(dst, e.offset + inCluster, "guest-data");
          return;
        }
        break;
    }
    // Extended L2: each subcluster is allocated, zero, or unallocated (backing).
    const sc = img.clusterSize / 32;
    if (e.offset) this.overlap.checkDataCluster(e.offset, guestPos);
    let done = 0;
    while (done < dst.length) {
      const p = inCluster + done;
      const i = Math.floor(p / sc);
      const bit = 1 << i;
      // Extend over following subclusters of the same kind.
      const kind = m.alloc & bit ? 1 : m.zero & bit ? 2 : 0;
      let end = (i + 1) * sc;
      for (let j = i + 1; j < 32 && end < inCluster + dst.length; j++) {
        const b = 1 << j;
        const k = m.alloc & b ? 1 : m.zero & b ? 2 : 0;
        if (k !== kind) break;
        end += sc;
      }
      const n = Math.min(end, inCluster + dst.length) - p;
      const part = dst.subarray(done, done + n);
      if (kind === 1) img.file.read(part, e.offset + p, "guest-data");
      else if (kind === 2) part.fill(0);
      else this.readBacking(part, gc * img.clusterSize + p, useBacking);
      done += n;
    }
  }

  /**
   * Where the active layer's bytes at guest offset `pos` lie in the image file as they read, for up to
   * `length` bytes inside one cluster: a data cluster (extended L2: its allocated subclusters) of this
   * image. Nothing for zeroes, compressed data, the backing file's data, or data the scheme holds elsewhere.
   */
  storedAt(pos: number, length: number): StoredRun {
    const img = this.img;
    const cs = img.clusterSize;
    const gc = Math.floor(pos / cs);
    const inCluster = pos - gc * cs;
    let n = Math.min(length, cs - inCluster);
    const m = img.tables.lookup(gc);
    const e = m.entry;
    if (this.held || e.type !== ClusterType.Normal) return { length: n };
    if (img.l2.extended) {
      // The run of subclusters of one kind (allocated or not) from `inCluster`.
      const sc = cs / 32;
      const first = Math.floor(inCluster / sc);
      const allocated = (m.alloc & (1 << first)) !== 0;
      let end = (first + 1) * sc;
      for (let j = first + 1; j < 32 && end < inCluster + n; j++, end += sc) if (((m.alloc & (1 << j)) !== 0) !== allocated) break;
      n = Math.min(n, end - inCluster);
      if (!allocated) return { length: n };
    }
    this.overlap.checkDataCluster(e.offset, pos);
    return { length: n, at: { file: img.file, offset: e.offset + inCluster } };
  }

  readBacking(dst: Uint8Array, guestPos: number, useBacking: boolean): void {
    const b = useBacking ? this.img.backing : null;
    if (!b || guestPos >= b.size) {
      dst.fill(0);
      return;
    }
    const n = Math.min(dst.length, b.size - guestPos);
    b.readInto(n === dst.length ? dst : dst.subarray(0, n), guestPos);
    if (n < dst.length) dst.fill(0, n);
  }

  decompressed(e: L2Entry, guestPos: number): Uint8Array {
    const img = this.img;
    if (this.lastCompressed?.offset === e.offset) return this.lastCompressed.data;
    const raw = new Uint8Array(Math.min(e.compressedSize, Math.max(0, img.file.size() - e.offset)));
    if (raw.length === 0) throw new ImageFormatError(`compressed cluster for guest offset 0x${guestPos.toString(16)} lies past the end of the image`, { corruption: false });
    img.file.read(raw, e.offset, "guest-data");
    const data = decompressCluster(img.header.compressionType, raw, img.clusterSize, `at guest offset 0x${guestPos.toString(16)}`);
    this.lastCompressed = { offset: e.offset, data };
    return data;
  }

  /** A freed cluster's decompressed copy is forgotten (the cluster may be reused). */
  forget(cluster: number): void {
    if (this.lastCompressed && Math.floor(this.lastCompressed.offset / this.img.clusterSize) === cluster) this.lastCompressed = null;
  }
}
