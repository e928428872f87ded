/**
 * Qcow2Image: a qcow2 image opened on a BlockFile, the engine's public facade over the image's internal
 * state (image-core.ts). Synchronous; reads top to bottom. Every method checks the request, then hands it to
 * the part that does the work, and turns a corruption found on the way into a corrupt image (QEMU's rule):
 *   open/           image-open.ts (create, open, validation, scheme recovery and attachment), table-checks.ts
 *   state           image-state.ts (header, tables, refcounts, scheme, flush), image-core.ts (with its parts)
 *   tables          active-tables.ts (the active L1 table and the L2 cache), metadata-cache.ts, l2-walk.ts
 *   data path       read-path.ts, write-path.ts, write-plan.ts, zero-discard.ts, compression.ts, overlap.ts
 *   refcounts       refcounts.ts, alloc-policy.ts, write-order.ts (every flush dependency)
 *   scheme seam     scheme-seam.ts (the scheme interface and the views it gets), scheme-host.ts
 *   snapshots.ts, check.ts, map.ts (qemu-img map, block status), bitmaps.ts (persistent dirty bitmaps)
 *   tools           compact.ts
 */
import type { StoredRun, SyncDisk } from "../disk/sync-disk.js";
import type { BlockFile } from "../io/block-file.js";
import { ClosedError, ImageFormatError, RequestError } from "../format/errors.js";
import { COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY } from "../format/features.js";
import { MAX_L1_BYTES } from "../format/header.js";
import { alignUp } from "../format/bytes.js";
import { checkImage } from "./check/check.js";
import type { ImageCore } from "./image-core.js";
import { createImage, openImage } from "./open/image-open.js";
import { type AllocationRun, allocationDepthRuns, allocationRuns, type DepthRun, mapImage, qcow2AllocatedHere, qcow2BlockStatus } from "./tools/map.js";
import type { OpenOptions } from "./open/open-options.js";
import { schemeHostOf } from "./allocation/scheme-host.js";
import type { SchemeCatalog, SchemeHost } from "./allocation/scheme-seam.js";
import * as snapshots from "./snapshots/snapshots.js";
import type {
  BitmapInfo,
  CacheMode,
  CheckResult,
  CostBreakdown,
  CreateOptions,
  ImageInfo,
  MapExtent,
  RepairMode,
  SnapshotCreateOptions,
  SnapshotInfo,
} from "./types.js";

export type { Mapping } from "./tables/active-tables.js";

export class Qcow2Image implements SyncDisk {
  /** @internal The image's state and the parts that work on it (image-core.ts). */
  readonly core: ImageCore;

  /** @internal Use Qcow2Image.open. */
  constructor(core: ImageCore) {
    this.core = core;
  }

  get clusterSize(): number {
    return this.core.clusterSize;
  }
  get clusterBits(): number {
    return this.core.clusterBits;
  }
  /** Virtual disk size in bytes (changed only by resize). */
  get size(): number {
    return this.core.size;
  }
  get readOnly(): boolean {
    return this.core.readOnly;
  }
  get cacheMode(): CacheMode {
    return this.core.cacheMode;
  }
  /** Entries per L2 table. */
  get l2Entries(): number {
    return this.core.l2Entries;
  }
  /** Whether the image has extended L2 entries (subclusters). */
  get extendedL2(): boolean {
    return this.core.l2.extended;
  }
  /** Guest offset where the VM-state area starts (past the disk, at an L1-entry boundary, as in QEMU). */
  get vmStateOffset(): number {
    return this.core.vmStateOffset;
  }

  /** The backing file's disk, if one is open (a layer of the chain: map.ts ChainLayer). */
  get backing(): SyncDisk | null {
    return this.core.backing;
  }

  /** @internal The handle the scheme gets (scheme-seam.ts). */
  get schemeHost(): SchemeHost {
    this.core.host ??= schemeHostOf(this.core);
    return this.core.host;
  }

  // ---------------------------------------------------------------------------------------------- create/open

  /** Writes a new, empty qcow2 image into `file` (which should be empty). */
  static create(file: BlockFile, opts: CreateOptions, schemes: SchemeCatalog): void {
    createImage(file, opts, schemes);
  }

  /**
   * Opens a qcow2 image. Throws ImageFormatError / UnsupportedFeatureError with a clear message when it
   * cannot. The scheme is looked up by name in `opts.schemes` (the composition roots pass the registry of
   * src/schemes: src/open/qcow2.ts).
   */
  static open(rawFile: BlockFile, opts: OpenOptions): Qcow2Image {
    return new Qcow2Image(openImage(rawFile, opts, opts.schemes));
  }

  /**
   * Idle time: the serve loop calls this once no request has come for a while; the scheme does deferred
   * work (applies pending copies). Returns whether some remains.
   */
  idle(): boolean {
    if (this.core.closed || this.readOnly || this.core.corruptError || !this.core.schemeAttached || !this.core.scheme.idle) return false;
    try {
      return this.core.scheme.idle();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Whether the scheme has deferred work for idle time. */
  get hasIdleWork(): boolean {
    return this.core.schemeAttached && !this.core.closed && !this.core.corruptError && (this.core.scheme.hasIdleWork?.() ?? false);
  }

  // ---------------------------------------------------------------------------------------------------- read

  read(offset: number, length: number): Uint8Array {
    const buf = new Uint8Array(length);
    this.readInto(buf, offset);
    return buf;
  }

  readInto(buf: Uint8Array, offset: number): void {
    this.checkUsable();
    this.checkRange(offset, buf.length);
    try {
      this.core.reader.readThrough(this.core.tables.l1, buf, offset, true);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Where the bytes at `offset` lie in the image file, when this image maps them to a data cluster (read-path.ts). */
  storedAt(offset: number, length: number): StoredRun {
    this.checkUsable();
    this.checkRange(offset, length);
    try {
      return this.core.reader.storedAt(offset, length);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  // --------------------------------------------------------------------------------------------------- write

  write(offset: number, data: Uint8Array): void {
    this.checkWritable();
    this.checkRange(offset, data.length);
    try {
      // Recorded first: a write that fails half-way may still have changed the disk.
      this.core.bitmaps.record(offset, data.length);
      this.core.writer.writeGuest(offset, data);
      if (this.cacheMode === "writethrough") this.core.flushMetadata();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  // ------------------------------------------------------------------------------------ zeroes and discard

  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): void {
    this.checkWritable();
    this.checkRange(offset, length);
    try {
      this.core.bitmaps.record(offset, length);
      this.core.zeroes.zeroRange(offset, length, !!opts.unmap);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  discard(offset: number, length: number): void {
    this.checkWritable();
    this.checkRange(offset, length);
    const cs = this.clusterSize;
    // Only whole clusters are discarded (plus the last partial cluster of the disk), as QEMU does.
    const start = alignUp(offset, cs);
    let end = Math.floor((offset + length) / cs) * cs;
    if (offset + length === this.size && this.size % cs) end = alignUp(this.size, cs);
    try {
      // The whole range asked for is recorded, partial clusters too (as QEMU's block layer does).
      this.core.bitmaps.record(offset, length);
      this.core.zeroes.discard(start, end);
      if (this.cacheMode === "writethrough") this.core.flushMetadata();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  // -------------------------------------------------------------------------------------------------- resize

  /**
   * Changes the virtual size, as QEMU's qcow2 truncate (prealloc off) does. Growing makes the L1 table large
   * enough first, so the header never claims a size the table cannot map; when a longer backing file would
   * show through the new range, it reads as zeroes (zero clusters). Shrinking drops every cluster past the
   * new end (its entries become unallocated) and the L2 tables past the new L1 size with what they map (the
   * active VM-state area), then writes the size.
   * The bytes of a last partial cluster are kept, as QEMU keeps them. Snapshots keep their own size.
   */
  resize(newSize: number): void {
    this.checkWritable();
    if (!Number.isSafeInteger(newSize) || newSize < 0) throw new RequestError(`invalid size ${newSize}`);
    if (newSize % 512) throw new RequestError("The new size must be a multiple of 512");
    if (this.core.header.version < 3 && this.core.snapshots.length) throw new RequestError("Can't resize a v2 image which has snapshots");
    const old = this.size;
    if (newSize === old) return;
    const cs = this.clusterSize;
    const l1Entries = Math.ceil(newSize / (cs * this.l2Entries));
    // QEMU's message (qcow2_grow_l1_table's EFBIG) for a size the largest L1 table cannot map.
    if (l1Entries * 8 > MAX_L1_BYTES) throw new RequestError("Failed to grow the L1 table: File too large");
    this.core.bitmaps.checkResize();
    try {
      this.core.settleScheme();
      if (newSize > old) {
        this.core.resizeL1(l1Entries, true);
        this.core.header.size = newSize;
        this.core.size = newSize;
        this.core.writeHeader();
        const b = this.core.backing;
        if (b && b.size > old) this.core.zeroes.zeroRange(old, newSize - old, false);
      } else {
        for (let gc = Math.ceil(newSize / cs); gc < Math.ceil(old / cs); gc++) this.core.zeroes.cropCluster(gc);
        for (let i = l1Entries; i < this.core.l1.length; i++) {
          if (!this.core.l1[i]) continue;
          // What the table maps past the old end (the active VM-state area) goes with it. QEMU 7.2 drops
          // only the table and leaks those clusters.
          for (let gc = Math.max(i * this.l2Entries, Math.ceil(old / cs)); gc < (i + 1) * this.l2Entries; gc++) this.core.zeroes.cropCluster(gc);
          const table = this.core.l1[i]!;
          this.core.tables.setL1(i, 0, false);
          this.core.scheme.release(table / cs, "l2");
        }
        this.core.flushMetadata();
        this.core.header.size = newSize;
        this.core.size = newSize;
        this.core.writeHeader();
      }
      // Bitmaps follow the new size in memory (stored at close), as QEMU's do.
      this.core.bitmaps.resized(newSize);
      if (this.cacheMode === "writethrough") this.core.flushMetadata();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /**
   * Changes the backing file name (and format) the header records, and nothing else: no data is copied
   * (qemu-img rebase -u). Undefined or "" removes the backing file. Takes effect at the next open.
   */
  setBackingName(name: string | undefined, format: string | undefined): void {
    this.checkWritable();
    if (format !== undefined && !name) throw new RequestError("Backing format cannot be used without backing file");
    if (name && new TextEncoder().encode(name).length > 1023) throw new RequestError("the backing file name is too long (1023 bytes at most)");
    const h = this.core.header;
    h.backingFile = name || undefined;
    h.backingFormat = name ? format : undefined;
    try {
      this.core.writeHeader();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  // --------------------------------------------------------------------------------------------------- flush

  /** Makes every completed write durable (a no-op on the disk in cache=unsafe). */
  flush(): void {
    this.checkUsable();
    if (this.readOnly) return;
    try {
      this.core.flushMetadata();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  close(): void {
    this.core.shutdown(true);
  }

  /** True once the engine has found this image corrupt while it was open for writing (it is refused since). */
  get corrupt(): boolean {
    return this.core.corruptError !== null;
  }

  // ----------------------------------------------------------------------------------------------- snapshots

  snapshotCreate(name: string, opts: SnapshotCreateOptions = {}): SnapshotInfo {
    this.checkWritable();
    try {
      this.core.settleScheme();
      const info = this.underDirtyBit(() => (this.core.scheme.snapshotCreate ? this.core.scheme.snapshotCreate(name, opts) : snapshots.createSnapshot(this.core, name, opts)));
      this.core.prepareScheme();
      return info;
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  snapshotApply(idOrName: string): void {
    this.checkWritable();
    // As QEMU: the bitmaps could not say what the switch changed.
    if (this.core.bitmaps.count) throw new RequestError("Device has active dirty bitmaps");
    try {
      this.core.settleScheme();
      this.underDirtyBit(() => (this.core.scheme.snapshotApply ? this.core.scheme.snapshotApply(idOrName) : snapshots.applySnapshot(this.core, idOrName)));
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  snapshotDelete(idOrName: string): void {
    this.checkWritable();
    try {
      this.core.settleScheme();
      this.underDirtyBit(() => (this.core.scheme.snapshotDelete ? this.core.scheme.snapshotDelete(idOrName) : snapshots.deleteSnapshot(this.core, idOrName)));
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /**
   * Runs a structural operation (snapshot create/apply/delete) with the dirty bit set, so that a crash in the
   * middle (counts and COPIED flags changing across several tables) is repaired at the next open, by refcow
   * or QEMU. The bit is cleared afterwards unless the scheme keeps it set anyway. v2 images have no dirty bit:
   * there the operations keep QEMU's ordering and a crash can leave what QEMU's would.
   */
  private underDirtyBit<T>(op: () => T): T {
    if (this.core.header.version !== 3) return op();
    const wasDirty = (this.core.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    // Nothing cached may reach the disk before the bit is durable... and nothing pending may be lost.
    this.core.flushMetadata();
    this.core.setDirtyBit(true);
    try {
      return op();
    } catch (e) {
      throw this.core.failed(e);
    } finally {
      // Also when the operation was refused (an unknown snapshot...): it changed nothing. Not when it found
      // the image corrupt: nothing more is written then.
      this.core.flushMetadata();
      if (!wasDirty && !this.core.scheme.keepsDirty && !this.core.corruptError) {
        this.core.refcounts.cache.writeDirty();
        this.core.setDirtyBit(false);
      }
    }
  }

  snapshotList(): SnapshotInfo[] {
    this.checkOpen();
    return this.core.snapshots.map((s) => snapshots.toInfo(s));
  }

  /** Reads the VM state stored with a snapshot. */
  readVmState(idOrName: string): Uint8Array {
    this.checkUsable();
    try {
      return snapshots.readVmState(this.core, idOrName);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /**
   * The active layer's VM-state area (past the disk, from vmStateOffset; QEMU's blk_load_vmstate): what a
   * snapshot created with a VM state takes. `pos` is relative to the area's start.
   */
  readVmStateArea(buf: Uint8Array, pos: number): void {
    this.checkUsable();
    this.checkVmStateRange(pos, buf.length);
    try {
      this.core.readThrough(this.core.l1, buf, this.vmStateOffset + pos, false);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Writes the active layer's VM-state area (QEMU's blk_save_vmstate). */
  writeVmStateArea(pos: number, data: Uint8Array): void {
    this.checkWritable();
    this.checkVmStateRange(pos, data.length);
    try {
      this.core.writeGuest(this.vmStateOffset + pos, data);
      if (this.cacheMode === "writethrough") this.core.flushMetadata();
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  private checkVmStateRange(pos: number, length: number): void {
    if (!Number.isSafeInteger(pos) || !Number.isSafeInteger(length) || pos < 0 || length < 0) {
      throw new RequestError(`invalid VM-state request: offset ${pos}, length ${length}`);
    }
    const mappable = (MAX_L1_BYTES / 8) * this.clusterSize * this.l2Entries;
    if (this.vmStateOffset + pos + length > mappable) throw new RequestError("VM-state request past what the L1 table can map");
  }

  /** Reads guest bytes as they were in a snapshot. */
  readSnapshot(idOrName: string, buf: Uint8Array, offset: number): void {
    this.checkUsable();
    this.checkRange(offset, buf.length);
    try {
      snapshots.readSnapshotData(this.core, idOrName, buf, offset);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  // ---------------------------------------------------------------------------------------- check/map/info

  check(repair?: RepairMode): CheckResult {
    // A report is still possible on an image found corrupt (it reads the tables as they are on disk).
    if (repair && !this.core.l1Problems.length) this.checkUsable();
    else this.checkOpen();
    if (repair && this.readOnly) throw new RequestError("cannot repair an image opened read-only");
    try {
      return checkImage(this.core, repair);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  map(): MapExtent[] {
    this.checkUsable();
    try {
      return mapImage(this.core);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Block status of the range at `offset` (used by map and by images that have this one as backing). */
  blockStatus(offset: number, length: number, depth: number): ReturnType<typeof qcow2BlockStatus> {
    return qcow2BlockStatus(this.core, offset, length, depth);
  }

  /** Which parts of [offset, offset + length) this image allocates itself (qemu-io's alloc and map). */
  allocation(offset: number, length: number): AllocationRun[] {
    this.checkUsable();
    try {
      return allocationRuns(this, offset, length);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** @internal Whether the range at `offset` is mapped by this image itself (map.ts ChainLayer). */
  allocatedHere(offset: number, length: number): AllocationRun {
    return qcow2AllocatedHere(this.core, offset, length);
  }

  /**
   * Which layer of the backing chain each part of [offset, offset + length) comes from (the NBD context
   * qemu:allocation-depth): merged runs, at most `maxRuns`; 1 is this image, 0 no layer.
   */
  allocationDepth(offset: number, length: number, maxRuns?: number): DepthRun[] {
    this.checkUsable();
    try {
      return allocationDepthRuns(this, offset, length, maxRuns);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  info(): ImageInfo {
    this.checkOpen();
    const h = this.core.header;
    const stored = this.core.bitmaps.storedList();
    return {
      virtualSize: this.size,
      actualSize: this.core.file.size(),
      clusterSize: this.clusterSize,
      version: h.version,
      compat: h.version === 3 ? "1.1" : "0.10",
      refcountBits: 1 << h.refcountOrder,
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      extendedL2: this.core.l2.extended,
      compressionType: h.compressionType === 1 ? "zstd" : "zlib",
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      dirty: (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      backingFile: h.backingFile,
      backingFormat: h.backingFormat,
      snapshots: this.snapshotList(),
      ...(stored.length ? { bitmaps: stored.map((b) => ({ name: b.name, granularity: b.granularity, flags: [...(b.inUse ? (["in-use"] as const) : []), ...(b.auto ? (["auto"] as const) : [])] })) } : {}),
    };
  }

  // ------------------------------------------------------------------------------------------------ bitmaps

  /** The persistent dirty bitmaps, in directory order. */
  bitmapList(): BitmapInfo[] {
    this.checkOpen();
    return this.core.bitmaps.infos();
  }

  /** Adds a persistent bitmap (granularity by default as QEMU's: the cluster size within 4 KiB..64 KiB). */
  bitmapAdd(name: string, opts: { granularity?: number; disabled?: boolean } = {}): void {
    this.checkWritable();
    this.core.bitmaps.add(name, opts);
  }

  bitmapRemove(name: string): void {
    this.checkWritable();
    this.core.bitmaps.remove(name);
  }

  bitmapClear(name: string): void {
    this.checkWritable();
    this.core.bitmaps.clear(name);
  }

  bitmapEnable(name: string): void {
    this.checkWritable();
    this.core.bitmaps.setEnabled(name, true);
  }

  bitmapDisable(name: string): void {
    this.checkWritable();
    this.core.bitmaps.setEnabled(name, false);
  }

  /** Sets in `target` every bit dirty in `source` (a bitmap of this image, or of `sourceImage`). */
  bitmapMerge(target: string, source: string, sourceImage?: Qcow2Image): void {
    this.checkWritable();
    sourceImage?.checkUsable();
    try {
      this.core.bitmaps.merge(target, source, sourceImage?.core.bitmaps);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Runs covering [offset, offset+length) exactly, adjacent equal runs merged; dirty per granularity chunk. */
  bitmapExtents(name: string, offset: number, length: number): { length: number; dirty: boolean }[] {
    this.checkUsable();
    try {
      return this.core.bitmaps.extents(name, offset, length);
    } catch (e) {
      throw this.core.failed(e);
    }
  }

  /** Cost counters of every I/O since open (or the last resetStats), by purpose. */
  stats(): CostBreakdown {
    return this.core.file.snapshot();
  }

  resetStats(): void {
    this.core.file.reset();
  }

  // ---------------------------------------------------------------------------------------------- checks

  /** @internal */
  checkOpen(): void {
    if (this.core.closed) throw new ClosedError();
  }

  /** Open, and not found corrupt since. @internal */
  checkUsable(): void {
    this.checkOpen();
    const e = this.core.corruptError;
    if (e) {
      throw new ImageFormatError(`image is corrupt (${e.message}): it is refused until repaired ('check -r all'); it can be opened read-only`, { corruption: false });
    }
  }

  private checkWritable(): void {
    this.checkUsable();
    if (this.readOnly) throw new RequestError("image is opened read-only");
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new RequestError(`invalid request: offset ${offset}, length ${length}`);
    }
    if (offset + length > this.size) {
      throw new RequestError(`request at offset ${offset}, length ${length} is past the end of the disk (${this.size} bytes)`);
    }
  }
}

