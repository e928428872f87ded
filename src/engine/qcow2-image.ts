/**
 * Qcow2Image: a qcow2 image opened on a BlockFile, the engine's public facade. Synchronous; reads top to
 * bottom. The work is done by one module per concern:
 *   image-open.ts    create, open and validation, scheme recovery and attachment
 *   active-tables.ts the active L1 table and the L2 cache (what schemes get of the mapping)
 *   read-path.ts     guest reads through any L1 view, compressed clusters, backing files
 *   write-path.ts    guest writes, copy-on-write, L2 allocation and copy, L1 growth
 *   zero-discard.ts  write-zeroes, discard, the crop of a shrinking resize
 *   write-order.ts   every flush dependency between data, L2, L1 and refcount writes
 *   overlap.ts       metadata overlap checks
 *   l2-walk.ts       the walk over a view's L2 tables (snapshots, check, schemes)
 *   scheme-seam.ts   the scheme interface, the SchemeHost handle, the scheme catalog
 *   bitmaps.ts       QEMU's persistent dirty bitmaps: loaded at open, fed every guest write, stored at close
 */
import type { BlockFile, IoPurpose } from "../io/block-file.js";
import type { AccountingFile } from "../io/accounting-file.js";
import { alignUp, writeU64 } from "../format/bytes.js";
import { ClosedError, ImageFormatError, RequestError } from "../format/errors.js";
import { COMPAT_LAZY_REFCOUNTS, type FeatureName, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2 } from "../format/features.js";
import { MAX_L1_BYTES, type Qcow2Header, serializeHeader } from "../format/header.js";
import { L2Codec } from "../format/l1l2.js";
import type { SnapshotEntry } from "../format/snapshot-table.js";
import { ActiveTables, type Mapping } from "./active-tables.js";
import { PersistentBitmaps } from "./bitmaps.js";
import { allocationPolicy, type AllocationPolicy } from "./alloc-policy.js";
import { checkImage } from "./check.js";
import { createImage, openImage, readL1Table, validateL2Slice } from "./image-open.js";
import { type AllocationRun, allocationDepthRuns, allocationRuns, type DepthRun, detectMetadataPreallocation, mapImage, qcow2AllocatedHere, qcow2BlockStatus } from "./map.js";
import { MetadataCache } from "./metadata-cache.js";
import { OverlapChecks } from "./overlap.js";
import { ReadPath } from "./read-path.js";
import type { RefcountStore } from "./refcounts.js";
import { schemeHostOf } from "./scheme-host.js";
import type { RefcountScheme, SchemeCatalog, SchemeHost } from "./scheme-seam.js";
import type { OpenOptions } from "./open-options.js";
import * as snapshots from "./snapshots.js";
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
  VirtualDisk,
} from "./types.js";
import { WritePath } from "./write-path.js";
import { WriteOrder } from "./write-order.js";
import { ZeroDiscard } from "./zero-discard.js";

const L2_SLICE_BYTES = 4096;
const L2_CACHE_BYTES = 32 * 1024 * 1024;

export type { Mapping };

export class Qcow2Image implements VirtualDisk {
  /** @internal */ readonly file: AccountingFile;
  /** @internal */ header: Qcow2Header;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** @internal */ readonly l2: L2Codec;
  /** Virtual disk size in bytes (changed only by resize). */
  size: number;
  readonly readOnly: boolean;
  readonly cacheMode: CacheMode;
  /** @internal */ backing: VirtualDisk | null = null;
  /** @internal The active L1 table and the L2 cache. */
  readonly tables: ActiveTables;
  /** @internal */ refcounts: RefcountStore;
  /** @internal */ readonly scheme: RefcountScheme;
  /** @internal */ readonly order: WriteOrder;
  /** @internal */ readonly overlap: OverlapChecks;
  /** @internal */ readonly reader: ReadPath;
  /** @internal */ readonly writer: WritePath;
  private readonly zeroes: ZeroDiscard;
  /** @internal QEMU's persistent dirty bitmaps (bitmaps.ts). */
  readonly bitmaps: PersistentBitmaps;
  /** Where new clusters go (first-fit or append), whatever the scheme. */
  readonly allocPolicy: AllocationPolicy;
  /** The feature name table the header is written with (the scheme catalog's). */
  private readonly featureNames: readonly FeatureName[];
  /** @internal Random numbers for the scheme (OpenOptions.random). */
  readonly random: () => number;
  /** @internal */ snapshots: SnapshotEntry[];
  private closed = false;
  /**
   * @internal An open for check only: invalid entries of the active L1 table (they read as empty) and of the
   * refcount table (they read as missing blocks), as qemu-img check words them. Check reports them; the L1 ones
   * cannot be repaired, the refcount ones are repaired by a rebuild.
   */
  readonly l1Problems: string[] = [];
  readonly refcountProblems: { message: string; rebuild: boolean }[] = [];
  /** The corruption found while the image was open for writing; from then on it is refused (QEMU's behaviour). */
  private corruptError: ImageFormatError | null = null;
  /** The scheme's hooks apply only once it is attached (after any repair at open). */
  private schemeAttached = false;
  private host: SchemeHost | undefined;

  /** @internal Use Qcow2Image.open. */
  constructor(file: AccountingFile, header: Qcow2Header, opts: OpenOptions, scheme: RefcountScheme) {
    this.file = file;
    this.header = header;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    const extended = (header.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
    this.l2 = new L2Codec(header.clusterBits, extended);
    this.tables = new ActiveTables(file, this.l2, this.clusterSize, L2_SLICE_BYTES, () => this.header.l1TableOffset);
    // The disk is whole sectors, as QEMU sees it (total_sectors = size / 512): a header size that is not a
    // multiple of 512 loses its tail, in QEMU and here.
    this.size = Math.floor(header.size / 512) * 512;
    this.readOnly = opts.readOnly ?? file.readOnly;
    this.cacheMode = opts.cache ?? "writeback";
    this.snapshots = [];
    const sliceBytes = this.tables.sliceBytes;
    const l2CacheSlices = Math.max(16, Math.min(L2_CACHE_BYTES / sliceBytes, Math.ceil(header.l1Size * this.clusterSize / sliceBytes) + 16));
    this.tables.l2Cache = new MetadataCache(file, sliceBytes, l2CacheSlices, "l2", (purpose) => this.sync(purpose), (off, buf) => validateL2Slice(this, off, buf));
    this.scheme = scheme;
    this.allocPolicy = allocationPolicy(opts.alloc);
    this.random = opts.random ?? Math.random;
    this.featureNames = opts.schemes.featureNames;
    // Filled in by the open once the tables are validated.
    this.refcounts = undefined as unknown as RefcountStore;
    this.order = new WriteOrder(file, this.cacheMode, this.tables, () => this.refcounts);
    this.overlap = new OverlapChecks(this);
    this.reader = new ReadPath(this);
    this.writer = new WritePath(this);
    this.zeroes = new ZeroDiscard(this);
    this.bitmaps = new PersistentBitmaps(this);
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
    return openImage(rawFile, opts, opts.schemes);
  }

  /** @internal The handle the scheme gets (scheme-seam.ts); recovery at open uses it too. */
  get schemeHost(): SchemeHost {
    this.host ??= schemeHostOf(this);
    return this.host;
  }

  /** @internal Called by the open once the image is loaded (and repaired), for a writable open. */
  attachScheme(): void {
    this.scheme.attach(this.schemeHost);
    this.schemeAttached = true;
    this.writer.plans = !!this.scheme.carryOut;
    this.reader.held = !!this.scheme.readHeld;
  }

  /** @internal The active layer may share clusters with a snapshot: the scheme's structures for it, off the write path. */
  prepareScheme(): void {
    if (this.schemeAttached && this.scheme.prepare) this.scheme.prepare();
  }

  /** @internal The scheme finishes every plan it deferred (before a structural change: snapshots, zeroes, resize...). */
  settleScheme(): void {
    if (this.schemeAttached && this.scheme.settle) this.scheme.settle();
  }

  /**
   * Idle time: the serve loop calls this once no request has come for a while; the scheme does deferred
   * work (applies pending copies). Returns whether some remains.
   */
  idle(): boolean {
    if (this.closed || this.readOnly || this.corruptError || !this.schemeAttached || !this.scheme.idle) return false;
    try {
      return this.scheme.idle();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** Whether the scheme has deferred work for idle time. */
  get hasIdleWork(): boolean {
    return this.schemeAttached && !this.closed && !this.corruptError && (this.scheme.hasIdleWork?.() ?? false);
  }

  /** @internal An image found unusable while it opens (an open for check of a corrupt L1 table). */
  markCorrupt(e: ImageFormatError): void {
    this.corruptError = e;
  }

  // ------------------------------------------------------------------- the active tables (internal views)

  /** Entries per L2 table. */
  get l2Entries(): number {
    return this.tables.l2Entries;
  }
  /** @internal */ get sliceBytes(): number {
    return this.tables.sliceBytes;
  }
  /** @internal */ get sliceEntries(): number {
    return this.tables.sliceEntries;
  }
  /** Active L1 table: L2 table offsets. @internal */
  get l1(): number[] {
    return this.tables.l1;
  }
  /** @internal */ get l1Copied(): boolean[] {
    return this.tables.l1Copied;
  }
  /** L1 entries changed in memory and not yet written. @internal */
  get dirtyL1(): Set<number> {
    return this.tables.dirtyL1;
  }
  /** @internal */ get l2Cache(): MetadataCache {
    return this.tables.l2Cache;
  }

  /** @internal Finds where guest cluster `gc` is mapped through the L1 table `l1`. The result is reused. */
  lookup(gc: number, l1: number[] = this.tables.l1): Mapping {
    return this.tables.lookup(gc, l1);
  }

  /** @internal Reads and validates an L1 table (see image-open.ts). */
  readL1Table(offset: number, entries: number, fileSize: number, what: string, problems?: string[]): { offsets: number[]; copied: boolean[] } {
    return readL1Table(this, offset, entries, fileSize, what, problems);
  }

  /** @internal QEMU's metadata overlap check, for a cluster about to be allocated (overlap.ts). */
  checkFree(cluster: number): void {
    this.overlap.checkFree(cluster);
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
      this.reader.readThrough(this.tables.l1, buf, offset, true);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Reads guest bytes through any L1 table (the active one, a snapshot's). */
  readThrough(l1: number[], buf: Uint8Array, offset: number, useBacking: boolean): void {
    this.reader.readThrough(l1, buf, offset, useBacking);
  }

  // --------------------------------------------------------------------------------------------------- write

  write(offset: number, data: Uint8Array): void {
    this.checkWritable();
    this.checkRange(offset, data.length);
    try {
      // Recorded first: a write that fails half-way may still have changed the disk.
      this.bitmaps.record(offset, data.length);
      this.writer.writeGuest(offset, data);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Writes guest bytes (disk or VM-state area) through the active L1. */
  writeGuest(offset: number, data: Uint8Array): void {
    this.writer.writeGuest(offset, data);
  }

  /**
   * Grows (or creates) the active L1 table to at least `entries` entries, moving it to new clusters. `exact`:
   * exactly that many (a resize, as QEMU's truncate), else 50% more when an existing table grows.
   */
  resizeL1(entries: number, exact = false): void {
    this.writer.resizeL1(entries, exact);
  }

  // ------------------------------------------------------------------------------------ zeroes and discard

  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): void {
    this.checkWritable();
    this.checkRange(offset, length);
    try {
      this.bitmaps.record(offset, length);
      this.zeroes.zeroRange(offset, length, !!opts.unmap);
    } catch (e) {
      throw this.failed(e);
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
      this.bitmaps.record(offset, length);
      this.zeroes.discard(start, end);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
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
    if (this.header.version < 3 && this.snapshots.length) throw new RequestError("Can't resize a v2 image which has snapshots");
    const old = this.size;
    if (newSize === old) return;
    const cs = this.clusterSize;
    const l1Entries = Math.ceil(newSize / (cs * this.l2Entries));
    // QEMU's message (qcow2_grow_l1_table's EFBIG) for a size the largest L1 table cannot map.
    if (l1Entries * 8 > MAX_L1_BYTES) throw new RequestError("Failed to grow the L1 table: File too large");
    this.bitmaps.checkResize();
    try {
      this.settleScheme();
      if (newSize > old) {
        this.resizeL1(l1Entries, true);
        this.header.size = newSize;
        this.size = newSize;
        this.writeHeader();
        const b = this.backing;
        if (b && b.size > old) this.zeroes.zeroRange(old, newSize - old, false);
      } else {
        for (let gc = Math.ceil(newSize / cs); gc < Math.ceil(old / cs); gc++) this.zeroes.cropCluster(gc);
        for (let i = l1Entries; i < this.l1.length; i++) {
          if (!this.l1[i]) continue;
          // What the table maps past the old end (the active VM-state area) goes with it. QEMU 7.2 drops
          // only the table and leaks those clusters.
          for (let gc = Math.max(i * this.l2Entries, Math.ceil(old / cs)); gc < (i + 1) * this.l2Entries; gc++) this.zeroes.cropCluster(gc);
          const table = this.l1[i]!;
          this.tables.setL1(i, 0, false);
          this.scheme.release(table / cs, "l2");
        }
        this.flushMetadata();
        this.header.size = newSize;
        this.size = newSize;
        this.writeHeader();
      }
      // Bitmaps follow the new size in memory (stored at close), as QEMU's do.
      this.bitmaps.resized(newSize);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
    }
  }

  // --------------------------------------------------------------------------------------------------- flush

  /** Makes every completed write durable (a no-op on the disk in cache=unsafe). */
  flush(): void {
    this.checkUsable();
    if (this.readOnly) return;
    try {
      this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Writes cached metadata in dependency order (write-order.ts), then flushes. */
  flushMetadata(): void {
    if (this.readOnly || this.corruptError) return;
    if (this.schemeAttached && this.scheme.flushMetadata) {
      this.scheme.flushMetadata();
      return;
    }
    this.order.writeOut(!this.schemeAttached || this.scheme.flushesRefcounts);
    if (this.schemeAttached) this.scheme.afterFlush?.();
  }

  /** @internal Writes the 512-byte-aligned pieces of the L1 table that hold changed entries. */
  writeDirtyL1(): void {
    this.tables.writeDirtyL1();
  }

  /** @internal Flushes the file unless cache=unsafe. */
  sync(purpose: IoPurpose = "other"): void {
    this.order.sync(purpose);
  }

  /**
   * Sets or clears the dirty bit (incompatible bit 0) with one durable 8-byte write, as QEMU's
   * qcow2_mark_dirty/qcow2_mark_clean do. Only v3 images have the bit.
   */
  /** @internal */
  setDirtyBit(dirty: boolean): void {
    const h = this.header;
    if (h.version !== 3) throw new RequestError("this refcount scheme needs a version 3 (compat=1.1) image: version 2 has no dirty bit");
    const isDirty = (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    if (isDirty === dirty) return;
    if (dirty) {
      h.incompatibleFeatures |= INCOMPAT_DIRTY;
    } else {
      this.sync("refcount"); // every refcount block is on disk before the bit goes
      h.incompatibleFeatures &= ~INCOMPAT_DIRTY;
    }
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, h.incompatibleFeatures);
    this.file.write(field, 72, "header");
    this.sync("header");
  }

  /**
   * @internal Writes the incompatible feature bits alone (8 bytes in the first sector, so a crash leaves the
   * old bits or the new ones) and flushes. A bit whose meaning lives in a header extension is set only once
   * the extension is durable, and cleared before it goes: a rewrite of the whole header cluster can be torn.
   */
  writeIncompatibleFeatures(): void {
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, this.header.incompatibleFeatures);
    this.file.write(field, 72, "header");
    this.sync("header");
  }

  /** @internal Rewrites the header cluster and flushes (the header is the switch point of every structural change). */
  writeHeader(): void {
    this.header.featureNames = [...this.featureNames];
    const buf = serializeHeader(this.header, this.clusterSize, { featureNames: this.featureNames });
    this.file.write(buf, 0, "header");
    this.sync("header");
  }

  /** @internal A cluster's count dropped to 0: caches holding it forget it. */
  onClusterFreed(cluster: number): void {
    const off = cluster * this.clusterSize;
    this.tables.l2Cache.dropRange(off, off + this.clusterSize);
    this.refcounts?.cache.drop(off);
    this.reader.forget(cluster);
  }

  close(): void {
    this.shutdown(true);
  }

  /** True once the engine has found this image corrupt while it was open for writing (it is refused since). */
  get corrupt(): boolean {
    return this.corruptError !== null;
  }

  /**
   * What to throw for an error met while serving a request. A corruption found in an image open for writing
   * makes it corrupt, as QEMU's qcow2_signal_corruption does: the header's corrupt bit is set (version 3),
   * cached metadata is dropped unwritten, and every later request is refused, so that nothing more is written
   * to an image whose tables cannot be trusted. `check -r all` repairs it.
   */
  private failed(e: unknown): unknown {
    if (!(e instanceof ImageFormatError) || !e.corruption || this.readOnly || this.corruptError || this.closed) return e;
    this.corruptError = e;
    this.tables.l2Cache.reset();
    this.refcounts?.cache.reset();
    if (this.header.version === 3) {
      this.header.incompatibleFeatures |= INCOMPAT_CORRUPT;
      try {
        this.writeIncompatibleFeatures();
      } catch {
        // The request's own error is the one to report.
      }
    }
    return e;
  }

  /**
   * @internal Ends the scheme's part while the image stays open: everything is flushed and the scheme's
   * close runs, so the file is plain qcow2 with exact refcounts and a clear dirty bit. From then on only
   * whole-file restructuring (compaction) may follow, then abandon().
   */
  detachScheme(): void {
    this.checkWritable();
    this.settleScheme();
    this.flushMetadata();
    this.bitmaps.store();
    this.refcounts.cache.writeDirty();
    this.sync("refcount");
    if (this.schemeAttached) {
      this.scheme.close();
      this.schemeAttached = false;
    }
  }

  /**
   * @internal Forgets the image without writing anything (its in-memory tables are stale after a
   * restructuring that wrote the file directly). The file itself stays open for the caller.
   */
  abandon(): void {
    this.closed = true;
    this.backing?.close();
  }

  /** @internal Flushes everything; with `closeFile`, also closes the file and the backing chain. */
  shutdown(closeFile: boolean): void {
    if (this.closed) return;
    try {
      if (!this.readOnly && !this.corruptError) {
        this.flushMetadata();
        // Bitmaps are stored while the scheme is attached: their clusters come from it like any metadata.
        this.bitmaps.store();
        // Deferred decrements were applied in memory by the last flush; write them too.
        this.refcounts.cache.writeDirty();
        this.sync("refcount");
        this.scheme.close();
      }
    } catch (e) {
      throw this.failed(e);
    } finally {
      this.closed = true;
      if (closeFile) {
        this.backing?.close();
        this.file.close();
      }
    }
  }

  // ----------------------------------------------------------------------------------------------- snapshots

  snapshotCreate(name: string, opts: SnapshotCreateOptions = {}): SnapshotInfo {
    this.checkWritable();
    try {
      this.settleScheme();
      const info = this.underDirtyBit(() => (this.scheme.snapshotCreate ? this.scheme.snapshotCreate(name, opts) : snapshots.createSnapshot(this, name, opts)));
      this.prepareScheme();
      return info;
    } catch (e) {
      throw this.failed(e);
    }
  }

  snapshotApply(idOrName: string): void {
    this.checkWritable();
    // As QEMU: the bitmaps could not say what the switch changed.
    if (this.bitmaps.count) throw new RequestError("Device has active dirty bitmaps");
    try {
      this.settleScheme();
      this.underDirtyBit(() => (this.scheme.snapshotApply ? this.scheme.snapshotApply(idOrName) : snapshots.applySnapshot(this, idOrName)));
    } catch (e) {
      throw this.failed(e);
    }
  }

  snapshotDelete(idOrName: string): void {
    this.checkWritable();
    try {
      this.settleScheme();
      this.underDirtyBit(() => (this.scheme.snapshotDelete ? this.scheme.snapshotDelete(idOrName) : snapshots.deleteSnapshot(this, idOrName)));
    } catch (e) {
      throw this.failed(e);
    }
  }

  /**
   * Runs a structural operation (snapshot create/apply/delete) with the dirty bit set, so that a crash in the
   * middle (counts and COPIED flags changing across several tables) is repaired at the next open, by refcow
   * or QEMU. The bit is cleared afterwards unless the scheme keeps it set anyway. v2 images have no dirty bit:
   * there the operations keep QEMU's ordering and a crash can leave what QEMU's would.
   */
  private underDirtyBit<T>(op: () => T): T {
    if (this.header.version !== 3) return op();
    const wasDirty = (this.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    // Nothing cached may reach the disk before the bit is durable... and nothing pending may be lost.
    this.flushMetadata();
    this.setDirtyBit(true);
    try {
      return op();
    } catch (e) {
      throw this.failed(e);
    } finally {
      // Also when the operation was refused (an unknown snapshot...): it changed nothing. Not when it found
      // the image corrupt: nothing more is written then.
      this.flushMetadata();
      if (!wasDirty && !this.scheme.keepsDirty && !this.corruptError) {
        this.refcounts.cache.writeDirty();
        this.setDirtyBit(false);
      }
    }
  }

  snapshotList(): SnapshotInfo[] {
    this.checkOpen();
    return this.snapshots.map((s) => snapshots.toInfo(s));
  }

  /** Reads the VM state stored with a snapshot. */
  readVmState(idOrName: string): Uint8Array {
    this.checkUsable();
    try {
      return snapshots.readVmState(this, idOrName);
    } catch (e) {
      throw this.failed(e);
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
      this.readThrough(this.l1, buf, this.vmStateOffset + pos, false);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** Writes the active layer's VM-state area (QEMU's blk_save_vmstate). */
  writeVmStateArea(pos: number, data: Uint8Array): void {
    this.checkWritable();
    this.checkVmStateRange(pos, data.length);
    try {
      this.writeGuest(this.vmStateOffset + pos, data);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
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
      snapshots.readSnapshotData(this, idOrName, buf, offset);
    } catch (e) {
      throw this.failed(e);
    }
  }

  // ---------------------------------------------------------------------------------------- check/map/info

  check(repair?: RepairMode): CheckResult {
    // A report is still possible on an image found corrupt (it reads the tables as they are on disk).
    if (repair && !this.l1Problems.length) this.checkUsable();
    else this.checkOpen();
    if (repair && this.readOnly) throw new RequestError("cannot repair an image opened read-only");
    try {
      return checkImage(this, repair);
    } catch (e) {
      throw this.failed(e);
    }
  }

  map(): MapExtent[] {
    this.checkUsable();
    try {
      return mapImage(this);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Whether map asks the file for holes under data clusters (decided once per open, as QEMU does). */
  looksPreallocated(): boolean {
    this.preallocationLook ??= detectMetadataPreallocation(this.file, this.clusterSize, (c) => this.refcounts.get(c));
    return this.preallocationLook;
  }
  private preallocationLook: boolean | undefined;

  /** Block status of the range at `offset` (used by map and by images that have this one as backing). */
  blockStatus(offset: number, length: number, depth: number): ReturnType<typeof qcow2BlockStatus> {
    return qcow2BlockStatus(this, offset, length, depth);
  }

  /** Which parts of [offset, offset + length) this image allocates itself (qemu-io's alloc and map). */
  allocation(offset: number, length: number): AllocationRun[] {
    this.checkUsable();
    try {
      return allocationRuns(this, offset, length);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Whether the range at `offset` is mapped by this image itself (map.ts ChainLayer). */
  allocatedHere(offset: number, length: number): AllocationRun {
    return qcow2AllocatedHere(this, offset, length);
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
      throw this.failed(e);
    }
  }

  info(): ImageInfo {
    this.checkOpen();
    const h = this.header;
    const stored = this.bitmaps.storedList();
    return {
      virtualSize: this.size,
      actualSize: this.file.size(),
      clusterSize: this.clusterSize,
      version: h.version,
      compat: h.version === 3 ? "1.1" : "0.10",
      refcountBits: 1 << h.refcountOrder,
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      extendedL2: this.l2.extended,
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
    return this.bitmaps.infos();
  }

  /** Adds a persistent bitmap (granularity by default as QEMU's: the cluster size within 4 KiB..64 KiB). */
  bitmapAdd(name: string, opts: { granularity?: number; disabled?: boolean } = {}): void {
    this.checkWritable();
    this.bitmaps.add(name, opts);
  }

  bitmapRemove(name: string): void {
    this.checkWritable();
    this.bitmaps.remove(name);
  }

  bitmapClear(name: string): void {
    this.checkWritable();
    this.bitmaps.clear(name);
  }

  bitmapEnable(name: string): void {
    this.checkWritable();
    this.bitmaps.setEnabled(name, true);
  }

  bitmapDisable(name: string): void {
    this.checkWritable();
    this.bitmaps.setEnabled(name, false);
  }

  /** Sets in `target` every bit dirty in `source` (a bitmap of this image, or of `sourceImage`). */
  bitmapMerge(target: string, source: string, sourceImage?: Qcow2Image): void {
    this.checkWritable();
    sourceImage?.checkUsable();
    try {
      this.bitmaps.merge(target, source, sourceImage?.bitmaps);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** Runs covering [offset, offset+length) exactly, adjacent equal runs merged; dirty per granularity chunk. */
  bitmapExtents(name: string, offset: number, length: number): { length: number; dirty: boolean }[] {
    this.checkUsable();
    try {
      return this.bitmaps.extents(name, offset, length);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** Cost counters of every I/O since open (or the last resetStats), by purpose. */
  stats(): CostBreakdown {
    return this.file.snapshot();
  }

  resetStats(): void {
    this.file.reset();
  }

  /** Guest offset where the VM-state area starts (past the disk, at an L1-entry boundary, as in QEMU). */
  get vmStateOffset(): number {
    const perL1 = this.clusterSize * this.l2Entries;
    return Math.ceil(this.header.size / perL1) * perL1;
  }

  // ---------------------------------------------------------------------------------------------- checks

  /** @internal */
  checkOpen(): void {
    if (this.closed) throw new ClosedError();
  }

  /** Open, and not found corrupt since. @internal */
  checkUsable(): void {
    this.checkOpen();
    const e = this.corruptError;
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

export { writeU64 };
export type { IoPurpose };
