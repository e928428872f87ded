/**
 * The internal state of an open image, and the operations on it every helper shares: the header and its
 * writes (feature bits, dirty bit), the active tables and the metadata caches, the refcounts, the scheme and
 * its attachment, the flush in dependency order. The helpers (data path, snapshots, check, map, bitmaps...)
 * take this state, not the public Qcow2Image, which is a facade over it (qcow2-image.ts).
 */
import type { AccountingFile } from "../io/accounting-file.js";
import type { IoPurpose } from "../io/block-file.js";
import { ImageFormatError, RequestError } from "../format/errors.js";
import { type FeatureName, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2 } from "../format/features.js";
import { type Qcow2Header, serializeHeader } from "../format/header.js";
import { L2Codec } from "../format/l1l2.js";
import type { SnapshotEntry } from "../format/snapshot-table.js";
import { ActiveTables, type Mapping } from "./tables/active-tables.js";
import { allocationPolicy, type AllocationPolicy } from "./allocation/alloc-policy.js";
import { CowCopier } from "./data/cow-copy.js";
import { MetadataCache } from "./tables/metadata-cache.js";
import type { OpenOptions } from "./open/open-options.js";
import type { RefcountStore } from "./allocation/refcounts.js";
import type { RefcountScheme } from "./allocation/scheme-seam.js";
import { validateL2Slice } from "./open/table-checks.js";
import type { SyncDisk } from "../disk/sync-disk.js";
import type { CacheMode } from "./types.js";
import { WriteOrder } from "./allocation/write-order.js";

const L2_SLICE_BYTES = 4096;
const L2_CACHE_BYTES = 32 * 1024 * 1024;

export class ImageState {
  readonly file: AccountingFile;
  header: Qcow2Header;
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly l2: L2Codec;
  /** Virtual disk size in bytes (changed only by resize). */
  size: number;
  readonly readOnly: boolean;
  readonly cacheMode: CacheMode;
  backing: SyncDisk | null = null;
  /** The active L1 table and the L2 cache. */
  readonly tables: ActiveTables;
  /** Filled in by the open once the tables are validated. */
  refcounts: RefcountStore;
  readonly scheme: RefcountScheme;
  readonly order: WriteOrder;
  /** Where new clusters go (first-fit or append), whatever the scheme. */
  readonly allocPolicy: AllocationPolicy;
  /** Random numbers for the scheme (OpenOptions.random). */
  readonly random: () => number;
  /** The copy of a COW: shared extents where the file has them (cow-copy.ts). */
  readonly cow: CowCopier;
  snapshots: SnapshotEntry[] = [];
  /** The feature name table the header is written with (the scheme catalog's). */
  readonly featureNames: readonly FeatureName[];
  closed = false;
  /**
   * An open for check only: invalid entries of the active L1 table (they read as empty) and of the refcount
   * table (they read as missing blocks), as qemu-img check words them. Check reports them; the L1 ones cannot
   * be repaired, the refcount ones are repaired by a rebuild.
   */
  readonly l1Problems: string[] = [];
  readonly refcountProblems: { message: string; rebuild: boolean }[] = [];
  /** The corruption found while the image was open for writing; from then on it is refused (QEMU's behaviour). */
  corruptError: ImageFormatError | null = null;
  /** The scheme's hooks apply only once it is attached (after any repair at open). */
  schemeAttached = false;
  /** Whether map asks the file for holes under data clusters (decided once per open, as QEMU does: map.ts). */
  preallocationLook: boolean | undefined;
  /** What forgets a freed cluster besides the caches (the read path's decompressed cluster). */
  private readonly freedListeners: ((cluster: number) => void)[] = [];

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
    const sliceBytes = this.tables.sliceBytes;
    const l2CacheSlices = Math.max(16, Math.min(L2_CACHE_BYTES / sliceBytes, Math.ceil(header.l1Size * this.clusterSize / sliceBytes) + 16));
    this.tables.l2Cache = new MetadataCache(file, sliceBytes, l2CacheSlices, "l2", (purpose) => this.sync(purpose), (off, buf) =>
      validateL2Slice(this.l2, this.clusterSize, this.tables.sliceEntries, off, buf),
    );
    this.scheme = scheme;
    this.allocPolicy = allocationPolicy(opts.alloc);
    this.random = opts.random ?? Math.random;
    this.cow = new CowCopier(file, !opts.noReflink);
    this.featureNames = opts.schemes.featureNames;
    this.refcounts = undefined as unknown as RefcountStore;
    this.order = new WriteOrder(file, this.cacheMode, this.tables, () => this.refcounts);
  }

  // ------------------------------------------------------------------- the active tables (internal views)

  /** Entries per L2 table. */
  get l2Entries(): number {
    return this.tables.l2Entries;
  }
  get sliceBytes(): number {
    return this.tables.sliceBytes;
  }
  get sliceEntries(): number {
    return this.tables.sliceEntries;
  }
  /** Active L1 table: L2 table offsets. */
  get l1(): number[] {
    return this.tables.l1;
  }
  get l1Copied(): boolean[] {
    return this.tables.l1Copied;
  }
  /** L1 entries changed in memory and not yet written. */
  get dirtyL1(): Set<number> {
    return this.tables.dirtyL1;
  }
  get l2Cache(): MetadataCache {
    return this.tables.l2Cache;
  }

  /** Finds where guest cluster `gc` is mapped through the L1 table `l1`. The result is reused. */
  lookup(gc: number, l1: number[] = this.tables.l1): Mapping {
    return this.tables.lookup(gc, l1);
  }

  /** Guest offset where the VM-state area starts (past the disk, at an L1-entry boundary, as in QEMU). */
  get vmStateOffset(): number {
    const perL1 = this.clusterSize * this.l2Entries;
    return Math.ceil(this.header.size / perL1) * perL1;
  }

  // ------------------------------------------------------------------------------------------- the scheme

  /** The active layer may share clusters with a snapshot: the scheme's structures for it, off the write path. */
  prepareScheme(): void {
    if (this.schemeAttached && this.scheme.prepare) this.scheme.prepare();
  }

  /** The scheme finishes every plan it deferred (before a structural change: snapshots, zeroes, resize...). */
  settleScheme(): void {
    if (this.schemeAttached && this.scheme.settle) this.scheme.settle();
  }

  /** An image found unusable while it opens (an open for check of a corrupt L1 table). */
  markCorrupt(e: ImageFormatError): void {
    this.corruptError = e;
  }

  // --------------------------------------------------------------------------------- flush and the header

  /** Writes cached metadata in dependency order (write-order.ts), then flushes. */
  flushMetadata(): void {
    if (this.readOnly || this.corruptError) return;
    if (this.schemeAttached && this.scheme.flushMetadata) {
      this.scheme.flushMetadata();
      return;
    }
    this.order.writeOut(!this.schemeAttached || this.scheme.flushesRefcounts);
    if (this.schemeAttached) this.scheme.afterFlush?.();
  }

  /** Writes the 512-byte-aligned pieces of the L1 table that hold changed entries. */
  writeDirtyL1(): void {
    this.tables.writeDirtyL1();
  }

  /** Flushes the file unless cache=unsafe. */
  sync(purpose: IoPurpose = "other"): void {
    this.order.sync(purpose);
  }

  /**
   * Sets or clears the dirty bit (incompatible bit 0) with one durable 8-byte write, as QEMU's
   * qcow2_mark_dirty/qcow2_mark_clean do. Only v3 images have the bit.
   */
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
   * Writes the incompatible feature bits alone (8 bytes in the first sector, so a crash leaves the old bits
   * or the new ones) and flushes. A bit whose meaning lives in a header extension is set only once the
   * extension is durable, and cleared before it goes: a rewrite of the whole header cluster can be torn.
   */
  writeIncompatibleFeatures(): void {
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, this.header.incompatibleFeatures);
    this.file.write(field, 72, "header");
    this.sync("header");
  }

  /** Rewrites the header cluster and flushes (the header is the switch point of every structural change). */
  writeHeader(): void {
    this.header.featureNames = [...this.featureNames];
    const buf = serializeHeader(this.header, this.clusterSize, { featureNames: this.featureNames });
    this.file.write(buf, 0, "header");
    this.sync("header");
  }

  // ------------------------------------------------------------------------------------- freed clusters

  /** Calls `fn` for every cluster whose count drops to 0 (after the caches forgot it). */
  onFreed(fn: (cluster: number) => void): void {
    this.freedListeners.push(fn);
  }

  /** A cluster's count dropped to 0: caches holding it forget it. */
  onClusterFreed(cluster: number): void {
    const off = cluster * this.clusterSize;
    this.tables.l2Cache.dropRange(off, off + this.clusterSize);
    this.refcounts?.cache.drop(off);
    for (const fn of this.freedListeners) fn(cluster);
  }

  // ---------------------------------------------------------------------------------------------- errors

  /**
   * What to throw for an error met while serving a request. A corruption found in an image open for writing
   * makes it corrupt, as QEMU's qcow2_signal_corruption does: the header's corrupt bit is set (version 3),
   * cached metadata is dropped unwritten, and every later request is refused, so that nothing more is written
   * to an image whose tables cannot be trusted. `check -r all` repairs it.
   */
  failed(e: unknown): unknown {
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
}
