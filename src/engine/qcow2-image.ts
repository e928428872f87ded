/**
 * Qcow2Image: a qcow2 image opened on a BlockFile. Synchronous; reads top to bottom.
 *
 * Guest address → host address: guest cluster gc lies in L2 table l1[gc / l2Entries] at index gc % l2Entries.
 * L2 tables are cached in slices (QEMU's l2-cache-entry-size, 4 KiB), refcount blocks whole.
 *
 * Metadata reaches the disk in this order on every flush (and before any out-of-order eviction):
 *   1. guest data and COW copies (written at once, never cached)
 *   2. refcount blocks holding the increments for new clusters       — then flush
 *   3. L2 tables that point to the new clusters                        — then flush if the L1 changed
 *   4. L1 entries that point to new or copied L2 tables                — then flush
 *   5. decrements of clusters dropped by 3 and 4 (applied in memory now, written at the next flush)
 * so a crash at any point leaves at worst leaked clusters, never a reference without a count.
 */
import type { BlockFile, IoPurpose } from "../io/block-file.js";
import { AccountingFile } from "../io/accounting-file.js";
import { StagedFile } from "../io/staged-file.js";
import { alignUp, viewOf, writeU64 } from "../format/bytes.js";
import {
  AUTOCLEAR_KNOWN,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  STANDARD_FEATURE_NAMES,
} from "../format/features.js";
import {
  EXT_REFCOW_OWNER_LEGACY,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOT_TABLE_BYTES,
  MAX_SNAPSHOTS,
  parseHeader,
  type Qcow2Header,
  serializeHeader,
  V3_HEADER_LENGTH,
} from "../format/header.js";
import { ClusterType, decodeL1, encodeL1, L2Codec, type L2Entry } from "../format/l1l2.js";
import { encodeReftableEntry, RefcountCodec } from "../format/refcount-block.js";
import { parseSnapshotTable, type SnapshotEntry } from "../format/snapshot-table.js";
import { createScheme, hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad, type RefcountScheme } from "../schemes/index.js";
import { allocationPolicy, type AllocationPolicy } from "./alloc-policy.js";
import { decompressCluster } from "./compression.js";
import { ClosedError, ImageFormatError, RequestError, UnsupportedFeatureError } from "./errors.js";
import { MetadataCache } from "./metadata-cache.js";
import { RefcountStore } from "./refcounts.js";
import type {
  CacheMode,
  CheckResult,
  CostBreakdown,
  CreateOptions,
  ImageInfo,
  MapExtent,
  OpenOptions,
  RepairMode,
  SnapshotCreateOptions,
  SnapshotInfo,
  VirtualDisk,
} from "./types.js";
import * as snapshots from "./snapshots.js";
import { checkImage } from "./check.js";
import { detectMetadataPreallocation, mapImage, qcow2BlockStatus } from "./map.js";

const L2_SLICE_BYTES = 4096;
const L2_CACHE_BYTES = 32 * 1024 * 1024;
const REFCOUNT_CACHE_BLOCKS = 64;

/** Where one guest cluster is mapped (the result of a lookup, reused to avoid allocation). */
export interface Mapping {
  entry: L2Entry;
  /** Extended L2 only: allocated and reads-as-zero subcluster bitmaps. */
  alloc: number;
  zero: number;
  /** Cache key (host offset) of the L2 slice holding the entry, or -1 when the L1 entry is empty. */
  slice: number;
  /** Index of the entry inside the slice. */
  index: number;
}

const EMPTY_ENTRY: L2Entry = { type: ClusterType.Unallocated, copied: false, offset: 0, compressedSize: 0, reservedBits: false };

export class Qcow2Image implements VirtualDisk {
  /** @internal */ readonly file: AccountingFile;
  /** @internal */ header: Qcow2Header;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** @internal */ readonly l2: L2Codec;
  /** @internal */ readonly sliceBytes: number;
  /** @internal */ readonly sliceEntries: number;
  readonly size: number;
  readonly readOnly: boolean;
  readonly cacheMode: CacheMode;
  /** @internal */ backing: VirtualDisk | null = null;
  /** Active L1 table: L2 table offsets and their COPIED flags. @internal */
  l1: number[];
  /** @internal */ l1Copied: boolean[];
  /** L1 entries changed in memory and not yet written. @internal */
  dirtyL1 = new Set<number>();
  /** @internal */ refcounts: RefcountStore;
  /** @internal */ l2Cache: MetadataCache;
  /** @internal */ scheme: RefcountScheme;
  /** Where new clusters go (first-fit or append), whatever the scheme. */
  readonly allocPolicy: AllocationPolicy;
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
  /** A lower bound of the file's size (see checkInFile). */
  private fileEndSeen = 0;
  /** The scheme's hooks apply only once it is attached (after any repair at open). */
  private schemeAttached = false;
  private lastCompressed: { offset: number; data: Uint8Array } | null = null;
  private readonly lookupResult: Mapping = { entry: EMPTY_ENTRY, alloc: 0, zero: 0, slice: -1, index: 0 };

  private constructor(file: AccountingFile, header: Qcow2Header, opts: OpenOptions) {
    this.file = file;
    this.header = header;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    const extended = (header.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
    this.l2 = new L2Codec(header.clusterBits, extended);
    this.l2Entries = this.clusterSize / this.l2.entryBytes;
    this.sliceBytes = Math.min(this.clusterSize, L2_SLICE_BYTES);
    this.sliceEntries = this.sliceBytes / this.l2.entryBytes;
    // The disk is whole sectors, as QEMU sees it (total_sectors = size / 512): a header size that is not a
    // multiple of 512 loses its tail, in QEMU and here.
    this.size = Math.floor(header.size / 512) * 512;
    this.readOnly = opts.readOnly ?? file.readOnly;
    this.cacheMode = opts.cache ?? "writeback";
    this.l1 = [];
    this.l1Copied = [];
    this.snapshots = [];
    const l2CacheSlices = Math.max(16, Math.min(L2_CACHE_BYTES / this.sliceBytes, Math.ceil(header.l1Size * this.clusterSize / this.sliceBytes) + 16));
    this.l2Cache = new MetadataCache(file, this.sliceBytes, l2CacheSlices, "l2", (purpose) => this.sync(purpose), (off, buf) => this.validateL2Slice(off, buf));
    // An open for check keeps standard refcounts whatever scheme was asked for (the name is still checked):
    // check compares and repairs standard counts, and a scheme's conventions while open (lazy-count's
    // uncounted active layer, the journal's area, owner's rebuilt counts at close) would read as errors to it.
    const requested = createScheme(opts.scheme);
    this.scheme = opts.forCheck ? createScheme("eager") : requested;
    this.allocPolicy = allocationPolicy(opts.alloc);
    this.random = opts.random ?? Math.random;
    // Filled in by open() once the tables are validated.
    this.refcounts = undefined as unknown as RefcountStore;
  }

  // ---------------------------------------------------------------------------------------------- create/open

  /** Writes a new, empty qcow2 image into `file` (which should be empty). */
  static create(file: BlockFile, opts: CreateOptions): void {
    const clusterSize = opts.clusterSize ?? 65536;
    const clusterBits = Math.log2(clusterSize);
    if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
      throw new RequestError(`Cluster size must be a power of two between 512 and 2048k (got ${clusterSize})`);
    }
    const version = opts.compat === "0.10" ? 2 : 3;
    const refcountBits = opts.refcountBits ?? 16;
    const refcountOrder = Math.log2(refcountBits);
    if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > 6) {
      throw new RequestError(`Refcount width must be a power of two and may not exceed 64 bits (got ${refcountBits})`);
    }
    if (version === 2 && refcountBits !== 16) throw new RequestError("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    if (version === 2 && opts.lazyRefcounts) throw new RequestError("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (opts.extendedL2 && version === 2) throw new RequestError("Extended L2 entries are only supported with compatibility level 1.1 and above");
    if (opts.extendedL2 && clusterSize < 16384) throw new RequestError("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
    if (opts.compressionType === "zstd" && version === 2) throw new RequestError("Compression type selection is only supported with compatibility level 1.1 and above");
    if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new RequestError(`Invalid image size ${opts.size}`);
    if (opts.backingFormat && !opts.backingFile) throw new RequestError("Backing format cannot be used without backing file");
    let incompat = 0n;
    if (opts.extendedL2) incompat |= INCOMPAT_EXTL2;
    if (opts.compressionType === "zstd") incompat |= INCOMPAT_COMPRESSION;
    const header: Qcow2Header = {
      version,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits,
      size: 0, // set once the L1 table exists
      cryptMethod: 0,
      l1Size: 0,
      l1TableOffset: 0,
      refcountTableOffset: clusterSize,
      refcountTableClusters: 1,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: incompat,
      compatibleFeatures: opts.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
      autoclearFeatures: 0n,
      refcountOrder,
      headerLength: version === 3 ? V3_HEADER_LENGTH : 72,
      compressionType: opts.compressionType === "zstd" ? 1 : 0,
      unknownTail: new Uint8Array(0),
      extensions: [],
      backingFile: opts.backingFile,
      backingFormat: opts.backingFormat,
      featureNames: STANDARD_FEATURE_NAMES,
    };
    // Header, a one-cluster refcount table and one refcount block counting the first three clusters.
    file.truncate(0);
    file.write(serializeHeader(header, clusterSize), 0, "header");
    const table = new Uint8Array(clusterSize);
    encodeReftableEntry(viewOf(table), 0, 2 * clusterSize);
    file.write(table, clusterSize, "refcount");
    const block = new Uint8Array(clusterSize);
    const codec = new RefcountCodec(refcountOrder, clusterSize);
    const counted = Math.min(3, codec.entriesPerBlock);
    for (let c = 0; c < counted; c++) codec.set(block, c, 1);
    file.write(block, 2 * clusterSize, "refcount");
    if (counted < 3) {
      throw new RequestError("refcount block too small to describe the image's own header (cluster size too small for this refcount width)");
    }
    // Then an L1 table large enough for the virtual size, allocated like any other metadata.
    const img = Qcow2Image.open(file, { noBacking: true, cache: "writeback" });
    try {
      img.resizeL1(Math.ceil(opts.size / (img.clusterSize * img.l2Entries)));
      // Whole sectors, as qemu-img create rounds it.
      img.header.size = alignUp(opts.size, 512);
      img.writeHeader();
    } finally {
      img.shutdown(false);
    }
  }

  /** Opens a qcow2 image. Throws ImageFormatError / UnsupportedFeatureError with a clear message when it cannot. */
  static open(rawFile: BlockFile, opts: OpenOptions = {}): Qcow2Image {
    const file = rawFile instanceof AccountingFile ? rawFile : new AccountingFile(rawFile);
    const fileSize = file.size();
    const first = new Uint8Array(Math.min(512, Math.max(fileSize, 0)));
    file.read(first, 0, "header");
    if (first.length < 72) throw new ImageFormatError(`image is too short to be qcow2 (${fileSize} bytes)`);
    const clusterBits = viewOf(first).getUint32(20);
    let headerBuf = first;
    if (viewOf(first).getUint32(0) === 0x514649fb && clusterBits >= 9 && clusterBits <= 21) {
      headerBuf = new Uint8Array(Math.min(2 ** clusterBits, fileSize));
      file.read(headerBuf, 0, "header");
    }
    const header = parseHeader(headerBuf, fileSize);
    if (header.cryptMethod !== 0) throw new UnsupportedFeatureError("encrypted qcow2 images are not supported");
    if (header.incompatibleFeatures & INCOMPAT_DATA_FILE) throw new UnsupportedFeatureError("qcow2 images with an external data file are not supported");
    if (header.compressionType > 1) throw new UnsupportedFeatureError(`unknown compression type ${header.compressionType}`);
    if (header.compressionType !== 0 && !(header.incompatibleFeatures & INCOMPAT_COMPRESSION)) {
      throw new ImageFormatError("compression_type is set but the compression type incompatible bit is not");
    }
    if (header.version === 2 && header.refcountOrder !== 4) throw new ImageFormatError("version 2 images must use 16-bit refcounts");
    const readOnly = opts.readOnly ?? rawFile.readOnly;
    if (header.incompatibleFeatures & INCOMPAT_CORRUPT && !readOnly && !opts.forCheck) {
      throw new ImageFormatError("image is marked corrupt: it can be opened read-only, or repaired with 'check -r all'");
    }
    // What a writable open writes (a journal replay, the repair of a dirty image, a scheme's conversion) is
    // staged and reaches the file only once the whole open has succeeded: a refused image is never written.
    // A read-only check of an image with a journal to replay replays it into a staged view that is never
    // committed: the check reports on the image as recovered, and the file stays as it is.
    const replayInView = readOnly && opts.forCheck === true && hasJournalToReplay(header);
    const staged = readOnly && !replayInView ? undefined : new StagedFile(file.inner);
    if (staged) file.inner = staged;
    let keepView = false;
    try {
      const img = new Qcow2Image(file, header, { ...opts, readOnly });
      // A scheme's crash leftovers (an un-checkpointed journal) are applied before any table is read.
      recoverBeforeLoad(file, header, 2 ** header.clusterBits, readOnly && !replayInView);
      // The replay may have grown the file (records for tables past the old end).
      img.load(file.size(), opts);
      if (staged && !replayInView) {
        file.inner = staged.base;
        staged.commit();
      }
      keepView = replayInView;
      return img;
    } finally {
      if (staged && !keepView) file.inner = staged.base;
    }
  }

  private load(fileSize: number, opts: OpenOptions): void {
    const h = this.header;
    const cs = this.clusterSize;
    if (this.l2.extended && this.clusterBits < 14) throw new ImageFormatError("extended L2 entries need clusters of at least 16 KiB");
    // L1 table.
    const needL1 = Math.ceil(h.size / (cs * this.l2Entries));
    if (h.l1Size * 8 > MAX_L1_BYTES) throw new ImageFormatError(`active L1 table too large (${h.l1Size} entries)`);
    if (h.l1Size < needL1) throw new ImageFormatError(`L1 table is too small (${h.l1Size} entries for ${needL1} needed)`);
    this.checkTableLocation("L1 table", h.l1TableOffset, h.l1Size * 8, fileSize);
    const { offsets, copied } = this.readL1Table(h.l1TableOffset, h.l1Size, fileSize, "active L1 table", opts.forCheck ? this.l1Problems : undefined);
    this.l1 = offsets;
    this.l1Copied = copied;
    // Refcount table.
    if (h.refcountTableClusters === 0) throw new ImageFormatError("image has an empty refcount table");
    if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) throw new ImageFormatError(`refcount table too large (${h.refcountTableClusters} clusters)`);
    this.checkTableLocation("refcount table", h.refcountTableOffset, h.refcountTableClusters * cs, fileSize);
    const rawTable = new Uint8Array(h.refcountTableClusters * cs);
    this.file.read(rawTable, h.refcountTableOffset, "refcount");
    this.refcounts = new RefcountStore(
      {
        file: this.file,
        clusterSize: cs,
        clusterBits: this.clusterBits,
        sync: () => this.sync("refcount"),
        setRefcountTable: (offset, clusters) => {
          this.header.refcountTableOffset = offset;
          this.header.refcountTableClusters = clusters;
          this.writeHeader();
        },
        endCluster: () => Math.ceil(this.file.size() / cs),
        onClusterFreed: (c) => this.onClusterFreed(c),
        checkFree: (c) => this.checkFree(c),
      },
      h.refcountOrder,
      h.refcountTableOffset,
      h.refcountTableClusters,
      rawTable,
      REFCOUNT_CACHE_BLOCKS,
      this.allocPolicy,
      opts.forCheck ? this.refcountProblems : undefined,
    );
    // Snapshot table.
    if (h.nbSnapshots > MAX_SNAPSHOTS) throw new ImageFormatError(`too many snapshots (${h.nbSnapshots})`);
    this.snapshots = h.nbSnapshots ? this.readSnapshotTable(h.snapshotsOffset, h.nbSnapshots, fileSize) : [];
    for (const sn of this.snapshots) {
      if (sn.l1Size * 8 > MAX_L1_BYTES) throw new ImageFormatError(`snapshot '${sn.name}' L1 table too large (${sn.l1Size} entries)`);
      this.checkTableLocation(`snapshot '${sn.name}' L1 table`, sn.l1TableOffset, sn.l1Size * 8, fileSize);
    }
    // Backing file.
    if (h.backingFile && !opts.noBacking) {
      if (!opts.openBacking) throw new RequestError(`image has a backing file '${h.backingFile}' and no way to open it was given`);
      this.backing = opts.openBacking(h.backingFile, h.backingFormat);
    }
    if (!this.readOnly && !this.scheme.flushesRefcounts && h.version !== 3) {
      throw new UnsupportedFeatureError(`the '${this.scheme.name}' refcount scheme needs a version 3 (compat=1.1) image: version 2 has no dirty bit`);
    }
    if (!this.readOnly && this.l1Problems.length) {
      // An open for check of an image whose L1 table has invalid entries (read as empty): nothing may be
      // written from that view of it, not even by a scheme or at close. Check reports, and refuses to repair.
      this.corruptError = new ImageFormatError(`active L1 table: ${this.l1Problems[0]}`);
      return;
    }
    if (!this.readOnly) {
      let rewrite = false;
      if (h.autoclearFeatures & ~AUTOCLEAR_KNOWN) {
        // A writer that does not maintain what an autoclear bit promises must clear it (QEMU does the same).
        h.autoclearFeatures &= AUTOCLEAR_KNOWN;
        rewrite = true;
      }
      if (h.extensions.some((e) => e.type === EXT_REFCOW_OWNER_LEGACY)) {
        // An earlier owner scheme's table, vouched for by the autoclear bit just cleared: dead from now on.
        h.extensions = h.extensions.filter((e) => e.type !== EXT_REFCOW_OWNER_LEGACY);
        rewrite = true;
      }
      if (rewrite) {
        this.writeHeader();
      }
      // Check frees nothing at recovery: what the journal's area leaves is its to report and repair.
      recoverAfterLoad(this, { freeJournalArea: !opts.forCheck });
      if (h.incompatibleFeatures & INCOMPAT_DIRTY && !opts.noRepairOnOpen && !opts.forCheck) {
        // Refcounts may be stale (a lazy writer died): rebuild them from the L1/L2 tables, as QEMU does.
        const result = checkImage(this, "all");
        if (result.corruptions > 0) throw new ImageFormatError(`could not repair dirty image: ${result.messages.slice(-3).join("; ")}`);
      }
      this.scheme.attach({
        image: this,
        markDirty: () => this.setDirtyBit(true),
        markClean: () => this.setDirtyBit(false),
      });
      this.schemeAttached = true;
    }
  }

  private checkTableLocation(what: string, offset: number, bytes: number, fileSize: number): void {
    if (bytes === 0) return;
    if (offset % this.clusterSize) throw new ImageFormatError(`${what} offset 0x${offset.toString(16)} is not cluster aligned`);
    if (offset === 0) throw new ImageFormatError(`${what} overlaps the image header`);
    if (offset + bytes > fileSize) throw new ImageFormatError(`${what} (offset 0x${offset.toString(16)}, ${bytes} bytes) lies past the end of the image (${fileSize} bytes)`);
  }

  /**
   * @internal Reads and validates an L1 table. With `problems` (an open for check), an invalid entry is noted
   * there, as qemu-img check words it, and reads as empty instead of failing the whole table.
   */
  readL1Table(offset: number, entries: number, fileSize: number, what: string, problems?: string[]): { offsets: number[]; copied: boolean[] } {
    const raw = new Uint8Array(entries * 8);
    if (entries) this.file.read(raw, offset, "l1");
    const v = viewOf(raw);
    const offsets: number[] = new Array(entries);
    const copied: boolean[] = new Array(entries);
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
      else if (e.l2Offset % this.clusterSize) bad(`${what} entry ${i}: L2 table offset 0x${hex} is not cluster aligned`, `ERROR l2_offset=${hex}: Table is not cluster aligned; L1 entry corrupted`);
      else if (e.l2Offset && e.l2Offset + this.clusterSize > fileSize) {
        bad(`${what} entry ${i}: L2 table offset 0x${hex} is past the end of the image`, `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex} size 0x${this.clusterSize.toString(16)}`);
      } else if (e.l2Offset === 0 && e.copied) bad(`${what} entry ${i} has the COPIED flag without an L2 table`, `ERROR ${what} entry ${i} has the COPIED flag without an L2 table`);
      else {
        offsets[i] = e.l2Offset;
        copied[i] = e.copied;
      }
    }
    return { offsets, copied };
  }

  private readSnapshotTable(offset: number, count: number, fileSize: number): SnapshotEntry[] {
    if (offset % this.clusterSize) throw new ImageFormatError(`snapshot table offset 0x${offset.toString(16)} is not cluster aligned`);
    if (offset === 0 || offset >= fileSize) throw new ImageFormatError(`snapshot table offset 0x${offset.toString(16)} is invalid`);
    let len = Math.min(fileSize - offset, Math.max(this.clusterSize, 64 * 1024));
    for (;;) {
      const buf = new Uint8Array(len);
      this.file.read(buf, offset, "snapshot-table");
      try {
        return parseSnapshotTable(buf, count);
      } catch (e) {
        const full = len >= fileSize - offset || len >= MAX_SNAPSHOT_TABLE_BYTES;
        if (!(e instanceof ImageFormatError) || !/past the end/.test(e.message) || full) {
          throw new ImageFormatError(`snapshot table is invalid: ${(e as Error).message}`);
        }
        len = Math.min(fileSize - offset, MAX_SNAPSHOT_TABLE_BYTES, len * 4);
      }
    }
  }

  private validateL2Slice(offset: number, buf: Uint8Array): void {
    const v = viewOf(buf);
    for (let i = 0; i < this.sliceEntries; i++) {
      const e = this.l2.decode(v, i);
      if (e.reservedBits) throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * this.l2.entryBytes).toString(16)} has reserved bits set`);
      if ((e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && e.offset % this.clusterSize) {
        throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * this.l2.entryBytes).toString(16)} points to unaligned host offset 0x${e.offset.toString(16)}`);
      }
      if (e.type === ClusterType.Unallocated && e.copied && !this.l2.extended) {
        throw new ImageFormatError(`L2 table entry at host offset 0x${(offset + i * this.l2.entryBytes).toString(16)} has the COPIED flag without a cluster`);
      }
      if (e.type === ClusterType.Compressed && e.copied) {
        throw new ImageFormatError(`compressed L2 entry at host offset 0x${(offset + i * this.l2.entryBytes).toString(16)} has the COPIED flag`);
      }
      if (this.l2.extended && e.type !== ClusterType.Compressed) {
        const [alloc, zero] = this.l2.bitmap(v, i);
        if (alloc & zero) throw new ImageFormatError(`extended L2 entry at host offset 0x${(offset + i * 16).toString(16)} has subclusters both allocated and zero`);
        if (alloc && !e.offset) throw new ImageFormatError(`extended L2 entry at host offset 0x${(offset + i * 16).toString(16)} has allocated subclusters without a host cluster`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------------- lookup

  /** @internal Finds where guest cluster `gc` is mapped through the L1 table `l1`. The result is reused. */
  lookup(gc: number, l1: number[] = this.l1): Mapping {
    const r = this.lookupResult;
    const l1i = Math.floor(gc / this.l2Entries);
    const l2Off = l1i < l1.length ? l1[l1i] : 0;
    if (!l2Off) {
      r.entry = EMPTY_ENTRY;
      r.alloc = 0;
      r.zero = 0;
      r.slice = -1;
      r.index = 0;
      return r;
    }
    const l2i = gc % this.l2Entries;
    const slice = l2Off + Math.floor(l2i / this.sliceEntries) * this.sliceBytes;
    const index = l2i % this.sliceEntries;
    const buf = this.l2Cache.get(slice);
    const v = viewOf(buf);
    r.entry = this.l2.decode(v, index);
    if (this.l2.extended && r.entry.type !== ClusterType.Compressed) {
      [r.alloc, r.zero] = this.l2.bitmap(v, index);
    } else {
      r.alloc = 0;
      r.zero = 0;
    }
    r.slice = slice;
    r.index = index;
    return r;
  }

  /** What a host cluster holds if it is image metadata (for overlap checks), else undefined. */
  private metadataAt(hostCluster: number): string | undefined {
    const cs = this.clusterSize;
    const off = hostCluster * cs;
    const h = this.header;
    if (hostCluster === 0) return "the image header";
    if (off >= h.l1TableOffset && off < h.l1TableOffset + alignUp(h.l1Size * 8, cs)) return "the active L1 table";
    if (off >= this.refcounts.tableOffset && off < this.refcounts.tableOffset + this.refcounts.tableClusters * cs) return "the refcount table";
    if (h.nbSnapshots && off >= h.snapshotsOffset && off < h.snapshotsOffset + cs) return "the snapshot table";
    return undefined;
  }

  /**
   * @internal QEMU's metadata overlap check, for a cluster about to be allocated: a count of 0 on the header,
   * the active L1 table or one of its L2 tables, the refcount table or a refcount block, the snapshot table or
   * a snapshot's L1 table means the refcounts are corrupt, and writing there would destroy the structure.
   */
  checkFree(cluster: number): void {
    const cs = this.clusterSize;
    const off = cluster * cs;
    let what = this.metadataAt(cluster);
    if (!what && this.l1.includes(off)) what = "an L2 table of the active layer";
    if (!what && this.refcounts.table.includes(off)) what = "a refcount block";
    if (!what) {
      const sn = this.snapshots.find((s) => off >= s.l1TableOffset && off < s.l1TableOffset + alignUp(s.l1Size * 8, cs));
      if (sn) what = `the L1 table of snapshot '${sn.name}'`;
    }
    if (what) throw new ImageFormatError(`image is corrupt: cluster ${cluster} is free according to its refcount but holds ${what}`);
  }

  private checkDataCluster(hostOffset: number, guestOffset: number): void {
    const what = this.metadataAt(Math.floor(hostOffset / this.clusterSize));
    if (what) {
      throw new ImageFormatError(`image is corrupt: guest offset 0x${guestOffset.toString(16)} maps to host offset 0x${hostOffset.toString(16)}, which holds ${what}`);
    }
  }

  /**
   * A cluster written in place must lie inside the file: an entry pointing past its end is a corruption (no
   * write of refcow's leaves one), and writing there would grow the file to wherever the entry points.
   */
  private checkInFile(hostOffset: number, guestOffset: number): void {
    // The file only grows while an image is open (only compaction, on its own open, shrinks it), so a size
    // seen once stays a lower bound: the size is asked again (a syscall) only for an offset beyond it, not
    // on every in-place write.
    if (hostOffset < this.fileEndSeen) return;
    this.fileEndSeen = this.file.size();
    if (hostOffset >= this.fileEndSeen) {
      throw new ImageFormatError(`image is corrupt: guest offset 0x${guestOffset.toString(16)} maps to host offset 0x${hostOffset.toString(16)}, past the end of the image`);
    }
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
      this.readThrough(this.l1, buf, offset, true);
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Reads guest bytes through any L1 table (the active one, a snapshot's). */
  readThrough(l1: number[], buf: Uint8Array, offset: number, useBacking: boolean): void {
    const cs = this.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const gc = Math.floor(pos / cs);
      const inCluster = pos - gc * cs;
      const n = Math.min(cs - inCluster, buf.length - done);
      const dst = buf.subarray(done, done + n);
      const m = this.lookup(gc, l1);
      this.readMapped(m, gc, inCluster, dst, useBacking);
      done += n;
    }
  }

  /** Reads `dst.length` bytes at `inCluster` of guest cluster `gc`, mapped by `m`. */
  private readMapped(m: Mapping, gc: number, inCluster: number, dst: Uint8Array, useBacking: boolean): void {
    const e = m.entry;
    const guestPos = gc * this.clusterSize + inCluster;
    switch (e.type) {
      case ClusterType.Unallocated:
        if (this.l2.extended && m.alloc | m.zero) break; // handled below per subcluster
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
        if (!this.l2.extended) {
          this.checkDataCluster(e.offset, guestPos);
          this.file.read(dst, e.offset + inCluster, "guest-data");
          return;
        }
        break;
    }
    // Extended L2: each subcluster is allocated, zero, or unallocated (backing).
    const sc = this.clusterSize / 32;
    if (e.offset) this.checkDataCluster(e.offset, guestPos);
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
      if (kind === 1) this.file.read(part, e.offset + p, "guest-data");
      else if (kind === 2) part.fill(0);
      else this.readBacking(part, gc * this.clusterSize + p, useBacking);
      done += n;
    }
  }

  private readBacking(dst: Uint8Array, guestPos: number, useBacking: boolean): void {
    const b = useBacking ? this.backing : null;
    if (!b || guestPos >= b.size) {
      dst.fill(0);
      return;
    }
    const n = Math.min(dst.length, b.size - guestPos);
    b.readInto(n === dst.length ? dst : dst.subarray(0, n), guestPos);
    if (n < dst.length) dst.fill(0, n);
  }

  private decompressed(e: L2Entry, guestPos: number): Uint8Array {
    if (this.lastCompressed?.offset === e.offset) return this.lastCompressed.data;
    const raw = new Uint8Array(Math.min(e.compressedSize, Math.max(0, this.file.size() - e.offset)));
    if (raw.length === 0) throw new ImageFormatError(`compressed cluster for guest offset 0x${guestPos.toString(16)} lies past the end of the image`, { corruption: false });
    this.file.read(raw, e.offset, "guest-data");
    const data = decompressCluster(this.header.compressionType, raw, this.clusterSize, `at guest offset 0x${guestPos.toString(16)}`);
    this.lastCompressed = { offset: e.offset, data };
    return data;
  }

  // --------------------------------------------------------------------------------------------------- write

  write(offset: number, data: Uint8Array): void {
    this.checkWritable();
    this.checkRange(offset, data.length);
    try {
      this.writeGuest(offset, data);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /** @internal Writes guest bytes (disk or VM-state area) through the active L1. */
  writeGuest(offset: number, data: Uint8Array): void {
    const cs = this.clusterSize;
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
    const m = this.l2ForWrite(gc);
    const e = m.entry;
    const cs = this.clusterSize;
    const guestPos = gc * cs + inCluster;
    if (this.l2.extended && e.type !== ClusterType.Compressed) {
      this.writeSubclusters(gc, inCluster, src, m);
      return;
    }
    if ((e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && this.scheme.mayWriteInPlace(e.copied, e.offset / cs, "data")) {
      this.checkDataCluster(e.offset, guestPos);
      this.checkInFile(e.offset, guestPos);
      if (e.type === ClusterType.Normal) {
        this.file.write(src, e.offset + inCluster, "guest-data");
        return;
      }
      // Preallocated zero cluster: fill it, then clear the zero flag (data before the L2 entry).
      this.writeFresh(m, gc, inCluster, src, e.offset, true);
      this.setEntry(m, e.offset, true);
      this.l2Cache.flushBeforeWrite = true;
      return;
    }
    // Allocate a new cluster: a fresh one, or a copy of a shared or compressed one (COW).
    const isCow = e.type === ClusterType.Normal || e.type === ClusterType.Compressed || (e.type === ClusterType.Unallocated && this.backing !== null);
    // The COW source is read before anything is allocated.
    const full = isCow ? this.buildCluster(m, gc, inCluster, src) : src;
    const oldOffset = e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc ? e.offset : -1;
    const compressedRange = e.type === ClusterType.Compressed ? this.l2.compressedClusters(e) : null;
    const slice = m.slice;
    const index = m.index;
    const newOffset = this.scheme.allocate(1, "data");
    // The data reaches the disk before the entry that maps it, whatever the cluster: a COW copy or a reused
    // cluster would show stale bytes, and an entry for a cluster past the end of the file that was never
    // extended is a reference past the end, which QEMU's check counts as a corruption it cannot repair.
    // A cluster past the end of the file reads as zeroes until it is written.
    if (isCow) this.file.write(full, newOffset, full !== src ? "cow-write" : "guest-data");
    else this.writeFresh(m, gc, inCluster, src, newOffset, newOffset < this.file.size());
    const buf = this.l2Cache.get(slice);
    this.l2.encodeStandard(viewOf(buf), index, newOffset, { copied: true });
    if (this.l2.extended) this.l2.setBitmap(viewOf(buf), index, 0xffffffff, 0); // was compressed
    this.l2Cache.markDirty(slice);
    this.scheme.referenced();
    this.l2Cache.flushBeforeWrite = true;
    if (oldOffset > 0) this.scheme.release(oldOffset / cs, "data");
    if (compressedRange) for (let c = compressedRange[0]; c <= compressedRange[1]; c++) this.scheme.release(c, "data");
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
    const cs = this.clusterSize;
    if (src.length === cs) {
      this.file.write(src, host, "guest-data");
    } else if (!inFile) {
      this.file.write(src, host + inCluster, "guest-data");
    } else if (this.file.zeroesWithoutWriting) {
      this.file.zeroRange(host, cs, "guest-data");
      this.file.write(src, host + inCluster, "guest-data");
    } else {
      this.file.write(this.buildCluster(m, gc, inCluster, src), host, "guest-data");
    }
  }

  /** A full cluster: the current contents of guest cluster `gc` (COW source) overlaid with `src`. */
  private buildCluster(m: Mapping, gc: number, inCluster: number, src: Uint8Array): Uint8Array {
    const cs = this.clusterSize;
    if (inCluster === 0 && src.length === cs) return src;
    const full = new Uint8Array(cs);
    const e = m.entry;
    const guestPos = gc * cs;
    // Read only what the write does not cover.
    const parts: [number, number][] = [];
    if (inCluster > 0) parts.push([0, inCluster]);
    if (inCluster + src.length < cs) parts.push([inCluster + src.length, cs]);
    if (e.type === ClusterType.Normal) {
      this.checkDataCluster(e.offset, guestPos);
      // One read of the whole gap when it is small (as QEMU does for gaps up to 16 KiB), else head and tail.
      if (parts.length === 2 && src.length <= 16384) {
        this.file.read(full, e.offset, "cow-read");
      } else {
        for (const [a, b] of parts) this.file.read(full.subarray(a, b), e.offset + a, "cow-read");
      }
    } else if (e.type === ClusterType.Compressed) {
      full.set(this.decompressed(e, guestPos));
    } else if (e.type === ClusterType.Unallocated && this.backing) {
      for (const [a, b] of parts) this.readBacking(full.subarray(a, b), guestPos + a, true);
    }
    full.set(src, inCluster);
    return full;
  }

  /** Extended L2: writes at subcluster granularity; untouched subclusters keep their state. */
  private writeSubclusters(gc: number, inCluster: number, src: Uint8Array, m: Mapping): void {
    const cs = this.clusterSize;
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
    const inPlace = e.offset !== 0 && this.scheme.mayWriteInPlace(e.copied, e.offset / cs, "data");
    if (e.offset) this.checkDataCluster(e.offset, guestPos);
    if (inPlace) this.checkInFile(e.offset, guestPos);
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
    let out: Uint8Array;
    const aligned = inCluster === spanStart && inCluster + src.length === spanEnd;
    if (aligned) {
      out = src;
    } else {
      out = new Uint8Array(spanEnd - spanStart);
      // Current view of the span: allocated subclusters from the host, zero ones as zeros, the rest from backing.
      this.readMapped({ entry: e, alloc: oldAlloc, zero: oldZero, slice, index }, gc, spanStart, out, true);
      out.set(src, inCluster - spanStart);
    }
    let target = e.offset;
    if (!inPlace) {
      target = this.scheme.allocate(1, "data");
    }
    this.file.write(out, target + spanStart, inPlace || aligned ? "guest-data" : "cow-write");
    if (inPlace && newAlloc === oldAlloc && newZero === oldZero) return;
    const buf = this.l2Cache.get(slice);
    const v = viewOf(buf);
    this.l2.encodeStandard(v, index, target, { copied: true });
    this.l2.setBitmap(v, index, newAlloc, newZero);
    this.l2Cache.markDirty(slice);
    this.l2Cache.flushBeforeWrite = true;
    if (!inPlace) {
      this.scheme.referenced();
      if (e.offset) this.scheme.release(e.offset / cs, "data");
    }
  }

  /** Sets an entry's offset (standard L2) as a Normal cluster with the given COPIED flag. */
  private setEntry(m: Mapping, offset: number, copied: boolean): void {
    const buf = this.l2Cache.get(m.slice);
    this.l2.encodeStandard(viewOf(buf), m.index, offset, { copied });
    this.l2Cache.markDirty(m.slice);
  }

  /**
   * Returns the mapping of guest cluster `gc` in an L2 table the active layer may modify: allocates the table
   * when the L1 entry is empty, copies it when it is shared with a snapshot (L1 entry without COPIED).
   */
  private l2ForWrite(gc: number): Mapping {
    const l1i = Math.floor(gc / this.l2Entries);
    if (l1i >= this.l1.length) this.resizeL1(l1i + 1);
    const old = this.l1[l1i];
    if (!old || !this.scheme.mayWriteInPlace(this.l1Copied[l1i], old / this.clusterSize, "l2")) {
      const fresh = this.scheme.allocate(1, "l2");
      const table = new Uint8Array(this.clusterSize);
      if (old) {
        // The table as the active layer sees it: on disk, with whatever the cache holds newer.
        this.file.read(table, old, "l2");
        this.overlayCachedSlices(old, table);
      }
      // The new table is written whole right away (it is not referenced until the L1 entry is written).
      this.file.write(table, fresh, "l2");
      this.l2Cache.dropRange(fresh, fresh + this.clusterSize);
      this.l1[l1i] = fresh;
      this.l1Copied[l1i] = true;
      this.dirtyL1.add(l1i);
      this.scheme.referenced();
      if (old) this.scheme.release(old / this.clusterSize, "l2");
    }
    return this.lookup(gc);
  }

  /** Copies the cached (possibly dirty) slices of the L2 table at `offset` over `table`. */
  private overlayCachedSlices(offset: number, table: Uint8Array): void {
    for (let s = 0; s < this.clusterSize; s += this.sliceBytes) {
      const cached = this.l2Cache.peek(offset + s);
      if (cached) table.set(cached, s);
    }
  }

  /** Grows (or creates) the active L1 table to at least `entries` entries, moving it to new clusters. */
  resizeL1(entries: number): void {
    if (entries <= this.l1.length) return;
    if (entries * 8 > MAX_L1_BYTES) throw new RequestError(`L1 table would exceed ${MAX_L1_BYTES} bytes`);
    const cs = this.clusterSize;
    // Grow by 50% like QEMU when growing an existing table (not at creation).
    const target = this.l1.length ? Math.min(Math.max(entries, Math.ceil(this.l1.length * 1.5)), MAX_L1_BYTES / 8) : entries;
    const bytes = target * 8;
    const clusters = Math.ceil(bytes / cs);
    // Everything the new table points to must be on disk first.
    this.flushMetadata();
    const offset = clusters ? this.scheme.allocate(clusters, "meta") : 0;
    const raw = new Uint8Array(bytes);
    const v = viewOf(raw);
    for (let i = 0; i < this.l1.length; i++) encodeL1(v, i * 8, this.l1[i], this.l1Copied[i]);
    this.refcounts.cache.writeDirty();
    if (bytes) this.file.write(raw, offset, "l1");
    this.sync("l1");
    const oldOffset = this.header.l1TableOffset;
    const oldClusters = Math.ceil((this.header.l1Size * 8) / cs);
    this.header.l1TableOffset = offset;
    this.header.l1Size = target;
    while (this.l1.length < target) {
      this.l1.push(0);
      this.l1Copied.push(false);
    }
    this.dirtyL1.clear();
    this.writeHeader();
    for (let i = 0; i < oldClusters; i++) this.scheme.releaseNow(oldOffset / cs + i, "meta");
  }

  // ------------------------------------------------------------------------------------ zeroes and discard

  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): void {
    this.checkWritable();
    this.checkRange(offset, length);
    try {
      this.zeroRange(offset, length, !!opts.unmap);
    } catch (e) {
      throw this.failed(e);
    }
  }

  private zeroRange(offset: number, length: number, unmap: boolean): void {
    const cs = this.clusterSize;
    const end = offset + length;
    // The last cluster of a disk whose size is not cluster aligned counts as whole.
    const fullEnd = end === this.size ? alignUp(end, cs) : end;
    const a = alignUp(offset, cs);
    const b = Math.floor(fullEnd / cs) * cs;
    const canFlag = this.header.version === 3;
    if (a >= b) {
      if (length) this.writeGuest(offset, new Uint8Array(length));
    } else {
      if (offset < a) this.writeGuest(offset, new Uint8Array(a - offset));
      for (let pos = a; pos < b; pos += cs) this.zeroCluster(pos / cs, unmap, canFlag);
      if (b < end) this.writeGuest(b, new Uint8Array(end - b));
    }
    if (this.cacheMode === "writethrough") this.flushMetadata();
  }

  private zeroCluster(gc: number, unmap: boolean, canFlag: boolean): void {
    const cs = this.clusterSize;
    if (!canFlag) {
      // v2 has no zero flag: deallocate when nothing shows through, else write zeroes.
      if (this.backing) this.writeGuest(gc * cs, new Uint8Array(cs));
      else this.unmapCluster(gc, false);
      return;
    }
    const m = this.l2ForWrite(gc);
    const e = m.entry;
    const buf = this.l2Cache.get(m.slice);
    const v = viewOf(buf);
    if (this.l2.extended) {
      this.l2.encodeStandard(v, m.index, 0);
      this.l2.setBitmap(v, m.index, 0, 0xffffffff);
    } else {
      const keep = !unmap && (e.type === ClusterType.Normal || e.type === ClusterType.ZeroAlloc) && e.copied;
      this.l2.encodeStandard(v, m.index, keep ? e.offset : 0, { copied: keep, zero: true });
      if (keep) {
        this.l2Cache.markDirty(m.slice);
        return;
      }
    }
    this.l2Cache.markDirty(m.slice);
    this.releaseEntry(e);
  }

  /** Drops the host clusters an (old) entry referenced. */
  private releaseEntry(e: L2Entry): void {
    const cs = this.clusterSize;
    if (e.type === ClusterType.Compressed) {
      const [a, b] = this.l2.compressedClusters(e);
      for (let c = a; c <= b; c++) this.scheme.release(c, "data");
    } else if (e.offset) {
      this.scheme.release(e.offset / cs, "data");
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
      for (let pos = start; pos < end; pos += cs) this.unmapCluster(pos / cs, true);
      if (this.cacheMode === "writethrough") this.flushMetadata();
    } catch (e) {
      throw this.failed(e);
    }
  }

  /**
   * Discards one cluster. As a discard (QEMU's rule): when a backing file could show through or the cluster
   * was allocated, a v3 image gets the zero flag; otherwise the entry becomes unallocated. Not as a discard
   * (v2 write-zeroes without backing): the entry becomes unallocated.
   */
  private unmapCluster(gc: number, asDiscard: boolean): void {
    const pre = this.lookup(gc);
    const e0 = pre.entry;
    const allocated = e0.offset !== 0;
    let zeroFlag = false;
    if (asDiscard) {
      if (!this.backing && !allocated) return;
      zeroFlag = this.header.version === 3;
    } else if (!allocated && e0.type === ClusterType.Unallocated) {
      return;
    }
    const m = this.l2ForWrite(gc);
    const e = m.entry;
    const buf = this.l2Cache.get(m.slice);
    const v = viewOf(buf);
    this.l2.encodeStandard(v, m.index, 0, { zero: zeroFlag && !this.l2.extended });
    if (this.l2.extended) this.l2.setBitmap(v, m.index, 0, zeroFlag ? 0xffffffff : 0);
    this.l2Cache.markDirty(m.slice);
    this.releaseEntry(e);
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

  /** @internal Writes cached metadata in dependency order (see the top of this file), then flushes. */
  flushMetadata(): void {
    if (this.readOnly || this.corruptError) return;
    if (this.schemeAttached && this.scheme.flushMetadata) {
      this.scheme.flushMetadata();
      return;
    }
    // Each flush is tagged with the structure whose ordering (or durability) it provides.
    let last: IoPurpose = "guest-data";
    if ((!this.schemeAttached || this.scheme.flushesRefcounts) && this.refcounts.cache.hasDirty()) {
      this.refcounts.cache.writeDirty();
      last = "refcount";
    }
    if (this.l2Cache.hasDirty()) {
      // The cache's hooks flush first when the tables depend on refcount blocks or on COW data.
      this.l2Cache.writeDirty();
      last = "l2";
    }
    if (this.dirtyL1.size > 0) {
      this.sync(last); // the L2 tables (and their counts) before the L1 entries that point to them
      this.writeDirtyL1();
      last = "l1";
    }
    this.sync(last);
    // The tables that dropped references are durable now: the decrements may follow.
    if (this.refcounts.hasPending()) this.refcounts.applyPending();
    if (this.schemeAttached) this.scheme.afterFlush?.();
  }

  /** Writes the 512-byte-aligned pieces of the L1 table that hold changed entries. */
  /** @internal */
  writeDirtyL1(): void {
    const perSector = 64;
    const sectors = new Set<number>();
    for (const i of this.dirtyL1) sectors.add(Math.floor(i / perSector));
    this.dirtyL1.clear();
    for (const s of [...sectors].sort((a, b) => a - b)) {
      const first = s * perSector;
      const n = Math.min(perSector, this.l1.length - first);
      const raw = new Uint8Array(n * 8);
      const v = viewOf(raw);
      for (let i = 0; i < n; i++) encodeL1(v, i * 8, this.l1[first + i], this.l1Copied[first + i]);
      this.file.write(raw, this.header.l1TableOffset + first * 8, "l1");
    }
  }

  /** @internal Flushes the file unless cache=unsafe. */
  sync(purpose: IoPurpose = "other"): void {
    if (this.cacheMode === "unsafe") return;
    this.file.flush(purpose);
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
    this.header.featureNames = STANDARD_FEATURE_NAMES;
    const buf = serializeHeader(this.header, this.clusterSize);
    this.file.write(buf, 0, "header");
    this.sync("header");
  }

  private onClusterFreed(cluster: number): void {
    const off = cluster * this.clusterSize;
    this.l2Cache.dropRange(off, off + this.clusterSize);
    this.refcounts?.cache.drop(off);
    if (this.lastCompressed && Math.floor(this.lastCompressed.offset / this.clusterSize) === cluster) this.lastCompressed = null;
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
    this.l2Cache.reset();
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
    this.flushMetadata();
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

  /** Flushes everything; with `closeFile`, also closes the file and the backing chain. */
  private shutdown(closeFile: boolean): void {
    if (this.closed) return;
    try {
      if (!this.readOnly && !this.corruptError) {
        this.flushMetadata();
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
      return this.underDirtyBit(() => (this.scheme.snapshotCreate ? this.scheme.snapshotCreate(name, opts) : snapshots.createSnapshot(this, name, opts)));
    } catch (e) {
      throw this.failed(e);
    }
  }

  snapshotApply(idOrName: string): void {
    this.checkWritable();
    try {
      this.underDirtyBit(() => (this.scheme.snapshotApply ? this.scheme.snapshotApply(idOrName) : snapshots.applySnapshot(this, idOrName)));
    } catch (e) {
      throw this.failed(e);
    }
  }

  snapshotDelete(idOrName: string): void {
    this.checkWritable();
    try {
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

  info(): ImageInfo {
    this.checkOpen();
    const h = this.header;
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
    };
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

  /** Open, and not found corrupt since. */
  private checkUsable(): void {
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

/** Bits first..last (inclusive) of a 32-bit mask. */
function maskOf(first: number, last: number): number {
  return ((2 ** (last + 1) - 2 ** first) >>> 0) >>> 0;
}

export { writeU64 };
export type { IoPurpose };
