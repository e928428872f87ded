/**
 * Public types of the qcow2 engine: what callers (CLI, worker serve loop, tests, benchmarks) see.
 */
import type { BlockFile, IoPurpose } from "../io/block-file.js";

export type CacheMode = "writethrough" | "writeback" | "unsafe";
export const CACHE_MODES: readonly CacheMode[] = ["writethrough", "writeback", "unsafe"];

/**
 * Where new clusters go, whatever the refcount scheme: `first-fit` reuses the lowest free clusters (QEMU's
 * search from a free-cluster index); `append` always takes clusters at the end of the file, so free space
 * inside the file is never reused (only `compact` reclaims it).
 */
export type AllocPolicyName = "first-fit" | "append";
export const ALLOC_POLICIES: readonly AllocPolicyName[] = ["first-fit", "append"];

/**
 * How the eager scheme orders its metadata flushes: `refcow` (default) defers decrements to the next flush;
 * `qemu` reproduces QEMU 7.2's cache dependencies (about two fsyncs per post-snapshot write in writeback).
 */
export type FlushOrder = "refcow" | "qemu";

/**
 * Options of a refcount scheme, by the names the command line uses (`--scheme-opt pending=256,log-size=1M`):
 * numbers, or strings as typed (sizes may carry a k/M/G suffix). The scheme catalog validates them: an
 * unknown name, a bad value, or any option for a scheme that takes none is refused.
 */
export type SchemeOptionValues = Readonly<Record<string, string | number>>;

/**
 * The options of an open that travel as data: from the command line and the library into every worker
 * message. Interfaces that carry them extend this one (or pick from it) instead of declaring them again;
 * OpenOptions (open-options.ts) adds what only an in-process open can take (the scheme catalog, callbacks).
 */
export interface ImageOpenOptions {
  readOnly?: boolean;
  cache?: CacheMode;
  /** Refcount scheme name; "eager" (default) is standard qcow2 with QEMU's ordering. */
  scheme?: string;
  /** Options of that scheme (for `log`: `pending`, `log-size`); refused when the scheme takes none. */
  schemeOptions?: SchemeOptionValues;
  /** Allocation policy (default "first-fit"); an open-time choice, not recorded in the image. */
  alloc?: AllocPolicyName;
  /** Flush ordering of the eager scheme (default "refcow"). */
  order?: FlushOrder;
  /**
   * Never share extents for a copy on write, even where the file system can (XFS with reflink, btrfs): the
   * copy is read and written, as on other file systems (`--no-reflink`, to compare).
   */
  noReflink?: boolean;
}

export interface CreateOptions {
  size: number;
  clusterSize?: number; // default 65536
  compat?: "0.10" | "1.1"; // default 1.1 (v3)
  lazyRefcounts?: boolean;
  refcountBits?: number; // default 16
  extendedL2?: boolean;
  backingFile?: string;
  backingFormat?: string;
  compressionType?: "zlib" | "zstd";
}

export interface SnapshotInfo {
  id: string;
  name: string;
  /** VM state size in bytes (the 64-bit field when present). */
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** Guest instruction count, or undefined when not recorded (-1 on disk). */
  icount?: number;
  l1Size: number;
  l1TableOffset: number;
  /** Virtual disk size when the snapshot was taken (v3 extra data), if recorded. */
  diskSize?: number;
}

export interface SnapshotCreateOptions {
  /** Guest VM state to store in the snapshot's VM-state area (as QEMU's savevm does). */
  vmState?: Uint8Array;
  vmClockNsec?: number;
  /** Guest instruction count to record (qemu-img records 0; undefined records "none"). */
  icount?: number;
  date?: Date;
}

export interface CheckResult {
  /** Errors that prevented a complete check (I/O errors...). */
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /** Human-readable lines, in qemu-img's wording ("Leaked cluster 5 refcount=1 reference=0", ...). */
  messages: string[];
  /** Set when the check could not complete (qemu-img's "Check failed"): why. */
  failure?: string;
  /** Set when a repair was asked for and refused (nothing changed): why. */
  refused?: string;
  /**
   * Persistent bitmaps marked in-use (a writer died before storing them): inconsistent, kept as they are by
   * any repair, only removable. qemu-img 7.2's check says nothing of them (its counts and exit code ignore
   * them), and neither does refcow's output; the library reports them here.
   */
  inUseBitmaps?: string[];
}

export type RepairMode = "leaks" | "all";

/** One extent of `qemu-img map` output. */
export interface MapExtent {
  start: number;
  length: number;
  /** Backing-chain depth where the data was found (0 = this image). */
  depth: number;
  /** True when the range holds data (not zero, not unallocated-to-end). */
  data: boolean;
  zero: boolean;
  compressed: boolean;
  /** Host offset in the image at `depth`, for uncompressed allocated data. */
  offset?: number;
  /** Whether the range is allocated in this image (false: unallocated here, read from backing or zero). */
  present: boolean;
}

/** A persistent dirty bitmap (QEMU's, kept in the image). */
export interface BitmapInfo {
  name: string;
  /** Bytes of disk per bit. */
  granularity: number;
  /** Records guest writes (the auto flag). */
  enabled: boolean;
  /** Found in-use at open (not saved cleanly): its contents are unusable; it can only be removed. */
  inUse: boolean;
}

/** A bitmap as the image's directory holds it (what qemu-img info lists). */
export interface StoredBitmapInfo {
  name: string;
  granularity: number;
  /** qemu-img info's flags: "in-use", "auto". */
  flags: ("in-use" | "auto")[];
}

export interface ImageInfo {
  virtualSize: number;
  actualSize: number;
  clusterSize: number;
  version: 2 | 3;
  compat: "0.10" | "1.1";
  refcountBits: number;
  lazyRefcounts: boolean;
  extendedL2: boolean;
  compressionType: "zlib" | "zstd";
  corrupt: boolean;
  dirty: boolean;
  backingFile?: string;
  backingFormat?: string;
  snapshots: SnapshotInfo[];
  /** Persistent dirty bitmaps on disk, in directory order (absent when there are none). */
  bitmaps?: StoredBitmapInfo[];
}

export type { CostBreakdown, PurposeCost } from "../io/purpose.js";

export type { BlockFile, IoPurpose };
