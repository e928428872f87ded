/**
 * Open and validation: creating an empty image, reading and validating the header, the L1, refcount and
 * snapshot tables, the L2 slices as they are loaded, the backing file; the recovery of what a scheme left on
 * disk and the repair of a dirty image; then the scheme's attachment. Which schemes exist is the catalog's
 * business (src/schemes/index.ts): this module only calls it.
 */
import type { BlockFile } from "../../io/block-file.js";
import { AccountingFile } from "../../io/accounting-file.js";
import { StagedFile } from "../../io/staged-file.js";
import { alignUp, viewOf } from "../../format/bytes.js";
import { ImageFormatError, RequestError, UnsupportedFeatureError } from "../../format/errors.js";
import {
  AUTOCLEAR_KNOWN,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
} from "../../format/features.js";
import {
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  MAX_SNAPSHOT_TABLE_BYTES,
  MAX_SNAPSHOTS,
  parseHeader,
  type Qcow2Header,
  serializeHeader,
  V3_HEADER_LENGTH,
} from "../../format/header.js";
import { ClusterType, decodeL1 } from "../../format/l1l2.js";
import { encodeReftableEntry, RefcountCodec } from "../../format/refcount-block.js";
import { parseSnapshotTable, type SnapshotEntry } from "../../format/snapshot-table.js";
import { checkImage } from "../check/check.js";
import { ImageCore } from "../image-core.js";
import { schemeHostOf } from "../allocation/scheme-host.js";
import { readL1Table } from "./table-checks.js";
import { RefcountStore } from "../allocation/refcounts.js";
import type { SchemeCatalog, SchemeHost } from "../allocation/scheme-seam.js";
import type { OpenOptions } from "./open-options.js";
import type { CreateOptions } from "../types.js";

const REFCOUNT_CACHE_BLOCKS = 64;

/** Writes a new, empty qcow2 image into `file` (which should be empty). */
export function createImage(file: BlockFile, opts: CreateOptions, catalog: SchemeCatalog): void {
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
    featureNames: [...catalog.featureNames],
  };
  // Header, a one-cluster refcount table and one refcount block counting the first three clusters.
  file.truncate(0);
  file.write(serializeHeader(header, clusterSize, { featureNames: catalog.featureNames }), 0, "header");
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
  const img = openImage(file, { schemes: catalog, noBacking: true, cache: "writeback" }, catalog);
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
export function openImage(rawFile: BlockFile, opts: OpenOptions, catalog: SchemeCatalog): ImageCore {
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
  const header = parseHeader(headerBuf, fileSize, catalog.knownIncompatible);
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
  // A data log (guest writes) is replayed through the write path: such a check opens writable on the view.
  const writeReplayInView = readOnly && opts.forCheck === true && (catalog.hasWriteLogToReplay?.(header) ?? false);
  const replayInView = readOnly && opts.forCheck === true && (catalog.hasLogToReplay(header) || writeReplayInView);
  const staged = readOnly && !replayInView ? undefined : new StagedFile(file.inner);
  if (staged) file.inner = staged;
  let keepView = false;
  try {
    // An open for check keeps standard refcounts whatever scheme was asked for (the name is still checked):
    // check compares and repairs standard counts, and a scheme's conventions while open (lazy-count's
    // uncounted active layer, the journal's area, owner's rebuilt counts at close) would read as errors to it.
    const requested = catalog.create(opts.scheme, opts.order, opts.schemeOptions);
    const img = new ImageCore(file, header, { ...opts, readOnly: readOnly && !writeReplayInView }, opts.forCheck ? catalog.create("eager") : requested);
    // A scheme's crash leftovers (an un-checkpointed journal) are applied before any table is read.
    catalog.recoverBeforeLoad(file, header, 2 ** header.clusterBits, readOnly && !replayInView);
    // The replay may have grown the file (records for tables past the old end).
    load(img, file.size(), opts, catalog);
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

function load(img: ImageCore, fileSize: number, opts: OpenOptions, catalog: SchemeCatalog): void {
  const h = img.header;
  const cs = img.clusterSize;
  if (img.l2.extended && img.clusterBits < 14) throw new ImageFormatError("extended L2 entries need clusters of at least 16 KiB");
  // L1 table.
  const needL1 = Math.ceil(h.size / (cs * img.l2Entries));
  if (h.l1Size * 8 > MAX_L1_BYTES) throw new ImageFormatError(`active L1 table too large (${h.l1Size} entries)`);
  if (h.l1Size < needL1) throw new ImageFormatError(`L1 table is too small (${h.l1Size} entries for ${needL1} needed)`);
  checkTableLocation(img, "L1 table", h.l1TableOffset, h.l1Size * 8, fileSize);
  const { offsets, copied } = readL1Table(img.file, cs, h.l1TableOffset, h.l1Size, fileSize, "active L1 table", opts.forCheck ? img.l1Problems : undefined);
  img.tables.l1 = offsets;
  img.tables.l1Copied = copied;
  // Refcount table.
  if (h.refcountTableClusters === 0) throw new ImageFormatError("image has an empty refcount table");
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) throw new ImageFormatError(`refcount table too large (${h.refcountTableClusters} clusters)`);
  checkTableLocation(img, "refcount table", h.refcountTableOffset, h.refcountTableClusters * cs, fileSize);
  const rawTable = new Uint8Array(h.refcountTableClusters * cs);
  img.file.read(rawTable, h.refcountTableOffset, "refcount");
  img.refcounts = new RefcountStore(
    {
      file: img.file,
      clusterSize: cs,
      clusterBits: img.clusterBits,
      sync: () => img.sync("refcount"),
      setRefcountTable: (offset, clusters) => {
        img.header.refcountTableOffset = offset;
        img.header.refcountTableClusters = clusters;
        img.writeHeader();
      },
      endCluster: () => Math.ceil(img.file.size() / cs),
      onClusterFreed: (c) => img.onClusterFreed(c),
      checkFree: (c) => img.overlap.checkFree(c),
    },
    h.refcountOrder,
    h.refcountTableOffset,
    h.refcountTableClusters,
    rawTable,
    REFCOUNT_CACHE_BLOCKS,
    img.allocPolicy,
    opts.forCheck ? img.refcountProblems : undefined,
  );
  // Snapshot table.
  if (h.nbSnapshots > MAX_SNAPSHOTS) throw new ImageFormatError(`too many snapshots (${h.nbSnapshots})`);
  img.snapshots = h.nbSnapshots ? readSnapshotTable(img, h.snapshotsOffset, h.nbSnapshots, fileSize) : [];
  for (const sn of img.snapshots) {
    if (sn.l1Size * 8 > MAX_L1_BYTES) throw new ImageFormatError(`snapshot '${sn.name}' L1 table too large (${sn.l1Size} entries)`);
    checkTableLocation(img, `snapshot '${sn.name}' L1 table`, sn.l1TableOffset, sn.l1Size * 8, fileSize);
  }
  // Persistent bitmaps: the directory and the tables of consistent bitmaps, validated (as QEMU, an image whose
  // bitmaps cannot be read does not open).
  img.bitmaps.load();
  // Backing file.
  if (h.backingFile && !opts.noBacking) {
    if (!opts.openBacking) throw new RequestError(`image has a backing file '${h.backingFile}' and no way to open it was given`);
    img.backing = opts.openBacking(h.backingFile, h.backingFormat);
  }
  if (!img.readOnly && !img.scheme.flushesRefcounts && h.version !== 3) {
    throw new UnsupportedFeatureError(`the '${img.scheme.name}' refcount scheme needs a version 3 (compat=1.1) image: version 2 has no dirty bit`);
  }
  if (!img.readOnly && img.l1Problems.length) {
    // An open for check of an image whose L1 table has invalid entries (read as empty): nothing may be
    // written from that view of it, not even by a scheme or at close. Check reports, and refuses to repair.
    img.markCorrupt(new ImageFormatError(`active L1 table: ${img.l1Problems[0]}`));
    return;
  }
  if (!img.readOnly) {
    let rewrite = false;
    if (h.autoclearFeatures & ~AUTOCLEAR_KNOWN) {
      // A writer that does not maintain what an autoclear bit promises must clear it (QEMU does the same).
      h.autoclearFeatures &= AUTOCLEAR_KNOWN;
      rewrite = true;
    }
    // A bitmaps extension another writer stopped vouching for is dropped (its clusters leak, as in QEMU).
    if (img.bitmaps.normalizeHeader()) rewrite = true;
    if (rewrite) {
      img.writeHeader();
    }
    // Check frees nothing at recovery: what the journal's area leaves is its to report and repair.
    catalog.recoverAfterLoad(hostOf(img), { freeJournalArea: !opts.forCheck });
    if (h.incompatibleFeatures & INCOMPAT_DIRTY && !opts.noRepairOnOpen && !opts.forCheck) {
      // Refcounts may be stale (a lazy writer died): rebuild them from the L1/L2 tables, as QEMU does.
      const result = checkImage(img, "all");
      if (result.corruptions > 0) throw new ImageFormatError(`could not repair dirty image: ${result.messages.slice(-3).join("; ")}`);
    }
    img.attachScheme(hostOf(img));
    // Bitmaps marked in-use before any guest write (a data log's replay below included); stored at close.
    if (!opts.forCheck && !opts.noPrepare) img.bitmaps.startTracking();
    // Guest writes a data log holds, left by a process that stopped: replayed with the engine's own plans.
    catalog.recoverAfterAttach?.(hostOf(img));
    if (!opts.forCheck && !opts.noPrepare) img.prepareScheme();
  } else if (!opts.forCheck) {
    catalog.refuseReadOnly?.(h);
  }
}

function checkTableLocation(img: ImageCore, what: string, offset: number, bytes: number, fileSize: number): void {
  if (bytes === 0) return;
  if (offset % img.clusterSize) throw new ImageFormatError(`${what} offset 0x${offset.toString(16)} is not cluster aligned`);
  if (offset === 0) throw new ImageFormatError(`${what} overlaps the image header`);
  if (offset + bytes > fileSize) throw new ImageFormatError(`${what} (offset 0x${offset.toString(16)}, ${bytes} bytes) lies past the end of the image (${fileSize} bytes)`);
}

function readSnapshotTable(img: ImageCore, offset: number, count: number, fileSize: number): SnapshotEntry[] {
  if (offset % img.clusterSize) throw new ImageFormatError(`snapshot table offset 0x${offset.toString(16)} is not cluster aligned`);
  if (offset === 0 || offset >= fileSize) throw new ImageFormatError(`snapshot table offset 0x${offset.toString(16)} is invalid`);
  let len = Math.min(fileSize - offset, Math.max(img.clusterSize, 64 * 1024));
  for (;;) {
    const buf = new Uint8Array(len);
    img.file.read(buf, offset, "snapshot-table");
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


/** The handle the scheme gets (scheme-seam.ts), made once per open; recovery at open uses it too. */
function hostOf(img: ImageCore): SchemeHost {
  img.host ??= schemeHostOf(img);
  return img.host;
}
