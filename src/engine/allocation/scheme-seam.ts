/**
 * The seam between the engine and the refcount schemes: what a scheme implements (RefcountScheme), what it
 * may use of the engine (SchemeHost), and how an open finds schemes without the engine knowing any
 * (SchemeCatalog, implemented by the registry in src/schemes/index.ts).
 *
 * Cluster kinds: "data" (guest data, compressed data), "l2" (L2 tables of the active layer), "meta" (every
 * other structure: L1 tables, snapshot table, refcount structures, scheme-private structures).
 */
import type { BlockFile, IoPurpose } from "../../io/block-file.js";
import type { FeatureName } from "../../format/features.js";
import type { Qcow2Header } from "../../format/header.js";
import type { SnapshotEntry } from "../../format/snapshot-table.js";
import type { ActiveTables } from "../tables/active-tables.js";
import type { MetadataCache } from "../tables/metadata-cache.js";
import type { AllocationPolicy } from "./alloc-policy.js";
import type { HostCopy } from "../data/cow-copy.js";
import type { RefcountStore } from "./refcounts.js";
import type { FlushOrder, SnapshotCreateOptions, SnapshotInfo } from "../types.js";
import type { WriteOrder } from "./write-order.js";
import type { PlanOutcome, WritePlan } from "../data/write-plan.js";
import type { CacheMode, SchemeOptionValues } from "../types.js";

export type ClusterKind = "data" | "l2" | "meta";

/** What a scheme may do with a metadata cache: read a cached unit, write the dirty ones, subscribe to its events. */
export type CacheView = Pick<MetadataCache, "peek" | "writeDirty" | "subscribe">;

/** The active tables as a scheme sees them: the L1 entries (changed ones written with writeDirtyL1) and the L2 cache. */
export type TableView = Pick<ActiveTables, "l1" | "l1Copied" | "dirtyL1" | "writeDirtyL1"> & { readonly l2Cache: CacheView };

/**
 * The refcounts as a scheme sees them: counts and their changes, allocation, deferred decrements, a rebuild,
 * the table's place, events to subscribe to, and the block cache.
 */
export type RefcountView = Pick<
  RefcountStore,
  "allocate" | "applyPending" | "change" | "get" | "hasPending" | "noteFreed" | "rebuild" | "releaseLater" | "table" | "tableClusters" | "tableOffset" | "codec" | "subscribe"
> & { readonly cache: CacheView };

/** The ordering rules a scheme states or relies on (write-order.ts). */
export type OrderView = Pick<WriteOrder, "sync" | "takeDependencies" | "refcountsBeforeL2" | "refcountsBeforeL2AsQemu" | "l2BeforeRefcountsAsQemu">;

/**
 * What the engine exposes to a scheme, and all it exposes: a scheme reaches the image through nothing else.
 *  - `tables`: the active L1 table and the L2 cache (entries, write-out, events a journal subscribes to);
 *  - `refcounts`: the refcount table and blocks, the free-cluster search (allocate, change, releaseLater...);
 *  - `order`: the write-ordering rules (dependencies between data, L2 and refcount writes) and sync(purpose);
 *  - `header`, `writeHeader`, `writeIncompatibleFeatures`: feature bits and header extensions;
 *  - `file`: I/O for the scheme's own structures (a journal area), tagged with a purpose;
 *  - `snapshots`: the snapshot operations a scheme composes its own from.
 */
export interface SchemeHost {
  readonly clusterSize: number;
  readonly cacheMode: CacheMode;
  /** The virtual disk's size in bytes. */
  readonly diskSize: number;
  /**
   * The link of a plan the scheme deferred (write-plan.ts): guest cluster `gc` maps `host` from now on, with
   * the engine's ordering (the cluster's data and count before the entry; the old reference dropped after it).
   */
  link(gc: number, host: number): void;
  /** A guest write carried out with the engine's own plans, whatever the scheme (a log's replay). */
  replayGuestWrite(offset: number, data: Uint8Array): void;
  /**
   * The copy-free part of a copy between two host ranges (a deferred COW's fill): shares what the file can
   * share (cow-copy.ts), and returns what is left for the scheme to read and write.
   */
  shareCopy(copy: HostCopy): HostCopy[];
  readonly tables: TableView;
  readonly refcounts: RefcountView;
  readonly order: OrderView;
  /** The in-memory header; change it, then write it with writeHeader or writeIncompatibleFeatures. */
  readonly header: Qcow2Header;
  readonly file: Pick<BlockFile, "read" | "write" | "size">;
  /** Where new clusters go (first-fit or append), whatever the scheme. */
  readonly allocPolicy: AllocationPolicy;
  readonly snapshots: SnapshotTools;
  /** Random numbers (OpenOptions.random: seeded by the crash harness). */
  random(): number;
  /** Sets the dirty bit durably (once): on-disk refcounts may be stale from now on. */
  markDirty(): void;
  /** Clears the dirty bit durably (every refcount is on disk and standard). */
  markClean(): void;
  /** The engine's flush: writes cached metadata in dependency order (or calls the scheme's flushMetadata). */
  flushMetadata(): void;
  /** Rewrites the header cluster and flushes. */
  writeHeader(): void;
  /** Writes the incompatible feature bits alone (an 8-byte write that cannot tear) and flushes. */
  writeIncompatibleFeatures(): void;
  /**
   * Cuts the file back to `size` bytes (a scheme's own area that ends the file, freed durably): only at the
   * scheme's close, when nothing may be written past `size` any more.
   */
  truncateFile(size: number): void;
  /** QEMU's overlap check for a cluster about to be handed out (throws when it holds metadata). */
  checkFree(cluster: number): void;
  /** The standard reference count of every host cluster, computed from the tables (what a rebuild writes). */
  referenceCounts(): Uint32Array;
  /**
   * Every cluster of QEMU's persistent bitmaps on disk (directory, tables, data): metadata the scheme's views
   * of the tables do not show. Stored at close through `allocate(n, "meta")` and freed with `releaseNow`.
   */
  forEachBitmapCluster(fn: (cluster: number) => void): void;
}

/** Snapshot building blocks (src/engine/snapshots/snapshots.ts) bound to the image, for schemes with their own snapshot operations. */
export interface SnapshotTools {
  list(): readonly SnapshotEntry[];
  /** By id, then by name; a SnapshotError when there is none. */
  find(idOrName: string): SnapshotEntry;
  /** A snapshot's L1 table (L2 table offsets), validated. */
  readL1(sn: SnapshotEntry): number[];
  /** Number of L1 entries that map the disk (the VM-state area starts after them). */
  diskL1Entries(): number;
  /** Every host cluster an L1 view references: its L2 tables ("l2") and their data ("data"). */
  forEachReference(l1: readonly number[], fn: (cluster: number, kind: "l2" | "data") => void): void;
  /** Refuses an operation that would push a count past the refcount width. */
  ensureHeadroom(l1: readonly number[], what: string): void;
  /** Makes the snapshot's tables the active layer (L1 entries written durably, COPIED clear); counts untouched. */
  replaceActiveL1(sn: SnapshotEntry): void;
  /** Sets COPIED on exactly the active entries whose count is 1. */
  recomputeCopied(): number;
  /** A copy of the active L1 table (COPIED clear) in new clusters, for a snapshot entry. */
  copyActiveL1(): { l1Offset: number; l1Size: number };
  newEntry(name: string, l1Offset: number, l1Size: number, opts: SnapshotCreateOptions): SnapshotEntry;
  /** Writes a new snapshot table, switches the header to it, frees the old one. */
  writeTable(entries: SnapshotEntry[]): void;
  /** Writes a VM state into the active layer's VM-state area, and drops the area from the active layer. */
  writeVmState(data: Uint8Array): void;
  dropActiveVmState(): void;
  toInfo(sn: SnapshotEntry): SnapshotInfo;
}

export interface RefcountScheme {
  readonly name: string;
  /** Whether a flush writes the cached refcount blocks (false: they reach the disk on eviction or close). */
  readonly flushesRefcounts: boolean;
  /** Whether the dirty bit stays set while the image is open (on-disk refcounts are not exact meanwhile). */
  readonly keepsDirty: boolean;
  /** Whether the COPIED flags of the active tables are kept exact while open (else fixed at close). */
  readonly maintainsCopied: boolean;
  /** Called once the image structures are loaded (and a dirty image repaired), for a writable open. */
  attach(host: SchemeHost): void;
  /**
   * May a guest write go straight to the host cluster of an active-layer entry? `copied` is the entry's
   * COPIED flag (QEMU's cached "refcount is exactly 1").
   */
  mayWriteInPlace(copied: boolean, hostCluster: number, kind: ClusterKind): boolean;
  /** Allocates `n` contiguous host clusters for the active layer or for metadata. Returns the host offset. */
  allocate(n: number, kind: ClusterKind): number;
  /**
   * The active layer's tables now reference a newly allocated cluster (an L2 or L1 entry was set in the
   * cache). Eager: the refcount block must reach the disk before that table.
   */
  referenced(): void;
  /** One reference to `cluster` is dropped by tables that are not on disk yet. */
  release(cluster: number, kind: ClusterKind): void;
  /** Drops a reference at once (the structure that held it is already durable or never was on disk). */
  releaseNow(cluster: number, kind: ClusterKind): void;
  /** References to `cluster` that the on-disk count leaves out while open (lazy-count: the active layer's). */
  uncountedReferences?(cluster: number): number;
  /**
   * Replaces the engine's metadata write-out at a flush (a journaling scheme commits a transaction instead of
   * writing tables in place). Must leave every acknowledged write durable.
   */
  flushMetadata?(): void;
  /** After a flush made every table durable. */
  afterFlush?(): void;
  /**
   * Writes every table in place and empties the scheme's private log (the journal's checkpoint). Schemes
   * without such a log leave it out; a flush is then the nearest equivalent.
   */
  checkpoint?(): void;
  /** Scheme-specific snapshot operations; the engine's standard ones are used when absent. */
  snapshotCreate?(name: string, opts: SnapshotCreateOptions): SnapshotInfo;
  snapshotApply?(idOrName: string): void;
  snapshotDelete?(idOrName: string): void;
  /**
   * The plan of an allocating guest write (a new cluster, a copy on write; write-plan.ts): "carried" when the
   * scheme carried it out itself (deferred or redirected it), "declined" when the engine is to carry it out as
   * it stands, "replan" when the scheme changed the tables first. Absent: always the engine. What a scheme takes over it serves to reads (`readHeld`) and finishes
   * at `settle`.
   */
  carryOut?(plan: WritePlan): PlanOutcome;
  /** Reads of the active layer: true when the scheme holds guest cluster `gc` and has filled `dst` from it. */
  readHeld?(gc: number, inCluster: number, dst: Uint8Array): boolean;
  /**
   * The active layer may share clusters with a snapshot from now on: called once a writable open has recovered
   * what the image held (not for an open for check) and after each snapshot create. A scheme makes ready here,
   * off the write path, what writes to shared clusters will need (the data log's area).
   */
  prepare?(): void;
  /** Finishes every deferred plan; the engine calls it before structural changes (snapshots, zeroes, discard, resize, compaction). */
  settle?(): void;
  /** Deferred work for idle time; returns whether some remains. */
  idle?(): boolean;
  hasIdleWork?(): boolean;
  /** Scheme-specific costs (conversion time, replayed records...), for reports. */
  report?(): Record<string, number>;
  /** Clean close: after the engine has flushed its tables; must leave standard refcounts on disk. */
  close(): void;
}

/**
 * How an open chooses a scheme and recovers what any scheme may have left on disk (a journal), without the
 * engine knowing the schemes: the registry (src/schemes/index.ts) implements it.
 */
export interface SchemeCatalog {
  /**
   * The scheme called `name` (default "eager") with the given flush order and options; a clear error for an
   * unknown name, or options the scheme does not take or values it refuses.
   */
  create(name?: string, order?: FlushOrder, options?: SchemeOptionValues): RefcountScheme;
  /** The incompatible bits an open accepts: the standard ones and every scheme's (the others refuse the image). */
  readonly knownIncompatible: bigint;
  /** The feature name table written into the header: QEMU's names and every scheme's bits. */
  readonly featureNames: readonly FeatureName[];
  /** True when the image holds a scheme's log a process left behind (to replay before any table is read). */
  hasLogToReplay(header: Qcow2Header): boolean;
  /** Replays such a log into `file`; `readOnly`: it cannot be, and the open is refused. */
  recoverBeforeLoad(file: BlockFile, header: Qcow2Header, clusterSize: number, readOnly: boolean): void;
  /** Removes a replayed or empty log from a writable image (the header forgets it, its clusters are freed). */
  recoverAfterLoad(host: SchemeHost, opts: { freeJournalArea: boolean }): void;
  /**
   * Replays what a scheme's log holds that only the write path can put in place (a data log's guest writes),
   * once the scheme is attached, and removes the log; `readOnly`: refuses an image that has such records.
   */
  recoverAfterAttach?(host: SchemeHost): void;
  /** True when the image holds such a log (a read-only check then replays it into a view it never commits). */
  hasWriteLogToReplay?(header: Qcow2Header): boolean;
  /** Refuses a read-only open of an image whose log only the write path can replay (a clear error). */
  refuseReadOnly?(header: Qcow2Header): void;
}

export type { IoPurpose };
