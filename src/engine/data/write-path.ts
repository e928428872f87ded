/**
 * The write side of the data path: guest writes cluster by cluster, in place or into a new cluster (a fresh
 * one, or a copy-on-write of a shared, compressed or backing-file cluster), subcluster writes (extended L2),
 * the allocation and copy of L2 tables, and the growth of the L1 table. The flush dependencies each step
 * needs are stated through WriteOrder (write-order.ts). Where the file shares extents, the copy of a COW
 * (from the old cluster, its allocated subclusters, or a backing file) is shared and the guest's bytes are
 * written over it (cow-fill.ts, cow-copy.ts).
 */
import { viewOf } from "../../format/bytes.js";
import { RequestError } from "../../format/errors.js";
import { MAX_L1_BYTES } from "../../format/header.js";
import { ClusterType } from "../../format/l1l2.js";
import type { Mapping } from "../tables/active-tables.js";
import type { ImageState } from "../image-state.js";
import type { OverlapChecks } from "./overlap.js";
import type { ReadPath } from "./read-path.js";
import { fillCopy, worthSharing } from "./cow-fill.js";
import type { CowSource, WritePlan } from "./write-plan.js";

export class WritePath {
  /** Whether allocating writes are offered to the scheme as plans (it has carryOut, and no replay runs). */
  plans = false;

  constructor(
    private readonly img: ImageState,
    private readonly overlap: OverlapChecks,
    private readonly reader: ReadPath,
  ) {}

  /** Writes guest bytes (disk or VM-state area) through the active L1. */
  writeGuest(offset: number, data: Uint8Array): void {
    const cs = this.img.clusterSize;
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const gc = Math.floor(pos / cs);
      const inCluster = pos - gc * cs;
      const n = Math.min(cs - inCluster, data.length - done);
      this.writeCluster(gc, inCluster, data.subarray(done, done + n));
      done += n;
    }
  }

  private writeCluster(gc: number, inCluster: number, src: Uint8Array): void {
    const img = this.img;
    const { file, scheme, tables } = img;
    const overlap = this.overlap;
    let m = this.l2ForWrite(gc);
    let e = m.entry;
    const cs = img.clusterSize;
    const guestPos = gc * cs + inCluster;
    if (img.l2.extended && e.type !== ClusterType.Compressed) {
      this.writeSubclusters(gc, inCluster, src, m);
      return;
    }
    let inPlace = (e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && scheme.mayWriteInPlace(e.copied, e.offset / cs, "data");
    if (!inPlace && this.plans) {
      // The scheme may take over the plan of an allocating write (defer the copy and the link, redirect the
      // guest's bytes); else the engine carries it out below.
      const outcome = scheme.carryOut!(this.plan(m, gc, inCluster, src));
      if (outcome === "carried") return;
      if (outcome === "replan") {
        // The scheme changed the tables first (applied what it held): the write is planned again.
        m = this.l2ForWrite(gc);
        e = m.entry;
        inPlace = (e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && scheme.mayWriteInPlace(e.copied, e.offset / cs, "data");
      }
    }
    if (inPlace) {
      overlap.checkDataCluster(e.offset, guestPos);
      overlap.checkInFile(e.offset, guestPos);
      if (e.type === ClusterType.Normal) {
        file.write(src, e.offset + inCluster, "guest-data");
        return;
      }
      // Preallocated zero cluster: fill it, then clear the zero flag (data before the L2 entry).
      this.writeFresh(m, gc, inCluster, src, e.offset, true);
      tables.setEntry(m, e.offset, true);
      img.order.dataBeforeL2();
      return;
    }
    // Allocate a new cluster: a fresh one, or a copy of a shared or compressed one (COW).
    const isCow = e.type === ClusterType.Normal || e.type === ClusterType.Compressed || (e.type === ClusterType.Unallocated && img.backing !== null);
    // Where the old cluster or the backing file's bytes can be shared (cow-fill.ts), nothing of them is read
    // before the allocation: they are cloned below.
    const share = isCow && src.length < cs && worthSharing(img, m, gc, 0, cs);
    if (share && e.type === ClusterType.Normal) overlap.checkDataCluster(e.offset, guestPos);
    const before: Mapping = share ? { ...m } : m;
    // The COW source is read before anything is allocated.
    const full = isCow && !share ? this.buildCluster(m, gc, inCluster, src) : src;
    const oldOffset = e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc ? e.offset : -1;
    const compressedRange = e.type === ClusterType.Compressed ? img.l2.compressedClusters(e) : null;
    const slice = m.slice;
    const index = m.index;
    const newOffset = scheme.allocate(1, "data");
    // The data reaches the disk before the entry that maps it, whatever the cluster: a COW copy or a reused
    // cluster would show stale bytes, and an entry for a cluster past the end of the file that was never
    // extended is a reference past the end, which QEMU's check counts as a corruption it cannot repair.
    // A cluster past the end of the file reads as zeroes until it is written.
    if (share) {
      // The old cluster or the backing file's shared whole (what cannot be shared copied), then the guest's
      // bytes written over it.
      fillCopy(img, this.reader, before, gc, newOffset, 0, cs, inCluster, inCluster + src.length);
      file.write(src, newOffset + inCluster, "guest-data");
    } else if (isCow) file.write(full, newOffset, full !== src ? "cow-write" : "guest-data");
    else this.writeFresh(m, gc, inCluster, src, newOffset, overlap.insideFile(newOffset));
    // The scheme states its ordering before the entry is set (QEMU's set_dependency precedes the link): a
    // dependency flush it makes must not carry this entry to the disk ahead of the new cluster's count.
    scheme.referenced();
    const buf = tables.l2Cache.get(slice);
    img.l2.encodeStandard(viewOf(buf), index, newOffset, { copied: true });
    if (img.l2.extended) img.l2.setBitmap(viewOf(buf), index, 0xffffffff, 0); // was compressed
    tables.l2Cache.markDirty(slice);
    img.order.dataBeforeL2();
    if (oldOffset > 0) scheme.release(oldOffset / cs, "data");
    if (compressedRange) for (let c = compressedRange[0]; c <= compressedRange[1]; c++) scheme.release(c, "data");
  }

  /** The plan of an allocating write to guest cluster `gc`, mapped by `m` (QEMU's QCowL2Meta; write-plan.ts). */
  private plan(m: Mapping, gc: number, inCluster: number, src: Uint8Array): WritePlan {
    const img = this.img;
    const e = m.entry;
    const cs = img.clusterSize;
    const cowSource: CowSource =
      e.type === ClusterType.Normal ? "cluster" : e.type === ClusterType.Compressed ? "compressed" : e.type === ClusterType.Unallocated && img.backing ? "backing" : "zeroes";
    const end = inCluster + src.length;
    return {
      gc,
      inCluster,
      data: src,
      action: "allocate",
      oldHost: e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc ? e.offset : 0,
      cowSource,
      cowStart: { offset: 0, length: inCluster },
      cowEnd: { offset: end, length: cs - end },
      extended: img.l2.extended,
    };
  }

  /**
   * The link of a plan a scheme deferred (QEMU's qcow2_alloc_cluster_link_l2): guest cluster `gc` now maps
   * `host`, whose contents the scheme has written. Rules as for a COW here: the new cluster's count and its
   * data before the entry, the entry before the decrement of what it drops.
   */
  link(gc: number, host: number): void {
    const img = this.img;
    const { tables, scheme } = img;
    const m = this.l2ForWrite(gc);
    const e = m.entry;
    const slice = m.slice;
    const index = m.index;
    scheme.referenced();
    const buf = tables.l2Cache.get(slice);
    img.l2.encodeStandard(viewOf(buf), index, host, { copied: true });
    tables.l2Cache.markDirty(slice);
    img.order.dataBeforeL2();
    if (e.type === ClusterType.Compressed) {
      const [a, b] = img.l2.compressedClusters(e);
      for (let c = a; c <= b; c++) scheme.release(c, "data");
    } else if (e.offset && e.offset !== host) scheme.release(e.offset / img.clusterSize, "data");
  }

  /** Writes guest bytes with the engine's own plans, whatever the scheme (a data log's replay). */
  writeGuestDirect(offset: number, data: Uint8Array): void {
    const was = this.plans;
    this.plans = false;
    try {
      this.writeGuest(offset, data);
    } finally {
      this.plans = was;
    }
  }

  /**
   * Writes `src` into the host cluster at `host`, whose other bytes must read as zeroes (a fresh allocation, or
   * a preallocated zero cluster), as QEMU does (handle_alloc_space): only the guest's bytes are written. Past
   * the end of the file the rest is a hole already; a cluster inside the file (`inFile`: reused, or
   * preallocated) is first zeroed without writing where the file can (fallocate), else written whole.
   * Crash safety is that of a write of the whole cluster: the zeroing comes first, both before the flush that
   * precedes the L2 entry mapping the cluster, and nothing maps the cluster until then.
   */
  private writeFresh(m: Mapping, gc: number, inCluster: number, src: Uint8Array, host: number, inFile: boolean): void {
    const file = this.img.file;
    const cs = this.img.clusterSize;
    if (src.length === cs) {
      file.write(src, host, "guest-data");
    } else if (!inFile) {
      file.write(src, host + inCluster, "guest-data");
    } else if (file.zeroesWithoutWriting) {
      file.zeroRange(host, cs, "guest-data");
      file.write(src, host + inCluster, "guest-data");
    } else {
      file.write(this.buildCluster(m, gc, inCluster, src), host, "guest-data");
    }
  }

  /** A full cluster: the current contents of guest cluster `gc` (COW source) overlaid with `src`. */
  private buildCluster(m: Mapping, gc: number, inCluster: number, src: Uint8Array): Uint8Array {
    const img = this.img;
    const cs = img.clusterSize;
    if (inCluster === 0 && src.length === cs) return src;
    const full = new Uint8Array(cs);
    const e = m.entry;
    const guestPos = gc * cs;
    // Read only what the write does not cover.
    const parts: [number, number][] = [];
    if (inCluster > 0) parts.push([0, inCluster]);
    if (inCluster + src.length < cs) parts.push([inCluster + src.length, cs]);
    if (e.type === ClusterType.Normal) {
      this.overlap.checkDataCluster(e.offset, guestPos);
      // One read of the whole gap when it is small (as QEMU does for gaps up to 16 KiB), else head and tail.
      if (parts.length === 2 && src.length <= 16384) {
        img.file.read(full, e.offset, "cow-read");
      } else {
        for (const [a, b] of parts) img.file.read(full.subarray(a, b), e.offset + a, "cow-read");
      }
    } else if (e.type === ClusterType.Compressed) {
      full.set(this.reader.decompressed(e, guestPos));
    } else if (e.type === ClusterType.Unallocated && img.backing) {
      for (const [a, b] of parts) this.reader.readBacking(full.subarray(a, b), guestPos + a, true);
    }
    full.set(src, inCluster);
    return full;
  }

  /** Extended L2: writes at subcluster granularity; untouched subclusters keep their state. */
  private writeSubclusters(gc: number, inCluster: number, src: Uint8Array, m: Mapping): void {
    const img = this.img;
    const { scheme, tables } = img;
    const overlap = this.overlap;
    const cs = img.clusterSize;
    const sc = cs / 32;
    const e = m.entry;
    const first = Math.floor(inCluster / sc);
    const last = Math.floor((inCluster + src.length - 1) / sc);
    const rangeMask = maskOf(first, last);
    const slice = m.slice;
    const index = m.index;
    const oldAlloc = m.alloc;
    const oldZero = m.zero;
    const guestPos = gc * cs + inCluster;
    const inPlace = e.offset !== 0 && scheme.mayWriteInPlace(e.copied, e.offset / cs, "data");
    if (e.offset) overlap.checkDataCluster(e.offset, guestPos);
    if (inPlace) overlap.checkInFile(e.offset, guestPos);
    const newAlloc = (oldAlloc | rangeMask) >>> 0;
    const newZero = (oldZero & ~rangeMask) >>> 0;
    // Subclusters whose contents must be (re)written: the range, plus all allocated ones when copying.
    const writeMask = inPlace ? rangeMask : newAlloc;
    let lo = 31;
    let hi = 0;
    for (let i = 0; i < 32; i++) if (writeMask & (1 << i)) {
      lo = Math.min(lo, i);
      hi = Math.max(hi, i);
    }
    const spanStart = lo * sc;
    const spanEnd = (hi + 1) * sc;
    let out: Uint8Array | null = null;
    const aligned = inCluster === spanStart && inCluster + src.length === spanEnd;
    const before: Mapping = { entry: e, alloc: oldAlloc, zero: oldZero, slice, index };
    // A copy into a new cluster whose sources can be shared (cow-fill.ts) reads nothing before the allocation.
    const share = !inPlace && !aligned && worthSharing(img, before, gc, spanStart, spanEnd);
    if (aligned) {
      out = src;
    } else if (!share) {
      out = new Uint8Array(spanEnd - spanStart);
      // Current view of the span: allocated subclusters from the host, zero ones as zeros, the rest from backing.
      this.reader.readMapped(before, gc, spanStart, out, true);
      out.set(src, inCluster - spanStart);
    }
    let target = e.offset;
    if (!inPlace) {
      target = scheme.allocate(1, "data");
    }
    if (out) {
      img.file.write(out, target + spanStart, inPlace || aligned ? "guest-data" : "cow-write");
    } else {
      fillCopy(img, this.reader, before, gc, target, spanStart, spanEnd, inCluster, inCluster + src.length);
      img.file.write(src, target + inCluster, "guest-data");
    }
    if (inPlace && newAlloc === oldAlloc && newZero === oldZero) return;
    if (!inPlace) scheme.referenced(); // before the entry is set, as above
    const buf = tables.l2Cache.get(slice);
    const v = viewOf(buf);
    img.l2.encodeStandard(v, index, target, { copied: true });
    img.l2.setBitmap(v, index, newAlloc, newZero);
    tables.l2Cache.markDirty(slice);
    img.order.dataBeforeL2();
    if (!inPlace && e.offset) scheme.release(e.offset / cs, "data");
  }

  /**
   * Returns the mapping of guest cluster `gc` in an L2 table the active layer may modify: allocates the table
   * when the L1 entry is empty, copies it when it is shared with a snapshot (L1 entry without COPIED).
   */
  l2ForWrite(gc: number): Mapping {
    const img = this.img;
    const { tables, scheme } = img;
    const l1i = Math.floor(gc / tables.l2Entries);
    if (l1i >= tables.l1.length) this.resizeL1(l1i + 1);
    const old = tables.l1[l1i];
    if (!old || !scheme.mayWriteInPlace(tables.l1Copied[l1i], old / img.clusterSize, "l2")) {
      const fresh = scheme.allocate(1, "l2");
      const table = new Uint8Array(img.clusterSize);
      if (old) tables.readTable(old, table);
      // The new table is written whole right away (it is not referenced until the L1 entry is written).
      img.file.write(table, fresh, "l2");
      tables.l2Cache.dropRange(fresh, fresh + img.clusterSize);
      tables.setL1(l1i, fresh, true);
      tables.madeTable(l1i, fresh);
      scheme.referenced();
      if (old) scheme.release(old / img.clusterSize, "l2");
      // The slice the write goes to is in memory already: the lookup below need not read it back.
      const at = Math.floor((gc % tables.l2Entries) / tables.sliceEntries) * tables.sliceBytes;
      tables.l2Cache.install(fresh + at, table.slice(at, at + tables.sliceBytes));
    }
    return tables.lookup(gc);
  }

  /**
   * Grows (or creates) the active L1 table to at least `entries` entries, moving it to new clusters. `exact`:
   * exactly that many (a resize, as QEMU's truncate), else 50% more when an existing table grows.
   */
  resizeL1(entries: number, exact = false): void {
    const img = this.img;
    const tables = img.tables;
    if (entries <= tables.l1.length) return;
    if (entries * 8 > MAX_L1_BYTES) throw new RequestError(`L1 table would exceed ${MAX_L1_BYTES} bytes`);
    const cs = img.clusterSize;
    // Grow by 50% like QEMU when growing an existing table (not at creation).
    const target = tables.l1.length && !exact ? Math.min(Math.max(entries, Math.ceil(tables.l1.length * 1.5)), MAX_L1_BYTES / 8) : entries;
    const bytes = target * 8;
    const clusters = Math.ceil(bytes / cs);
    // Everything the new table points to must be on disk first.
    img.flushMetadata();
    const offset = clusters ? img.scheme.allocate(clusters, "meta") : 0;
    const raw = new Uint8Array(bytes);
    raw.set(tables.encodeL1Table(true));
    img.refcounts.cache.writeDirty();
    if (bytes) img.file.write(raw, offset, "l1");
    img.sync("l1");
    const oldOffset = img.header.l1TableOffset;
    const oldClusters = Math.ceil((img.header.l1Size * 8) / cs);
    img.header.l1TableOffset = offset;
    img.header.l1Size = target;
    while (tables.l1.length < target) {
      tables.l1.push(0);
      tables.l1Copied.push(false);
    }
    tables.dirtyL1.clear();
    img.writeHeader();
    for (let i = 0; i < oldClusters; i++) img.scheme.releaseNow(oldOffset / cs + i, "meta");
  }
}

/** Bits first..last (inclusive) of a 32-bit mask. */
function maskOf(first: number, last: number): number {
  return ((2 ** (last + 1) - 2 ** first) >>> 0) >>> 0;
}
