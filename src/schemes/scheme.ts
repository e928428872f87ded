/**
 * A refcount scheme decides how reference counts are maintained while an image is open. The engine calls it at
 * the points listed below and never changes reference counts of guest-visible clusters otherwise. Adding a
 * scheme means adding one module that implements this interface and registering it in `index.ts`.
 *
 * Cluster kinds: "data" (guest data, compressed data), "l2" (L2 tables of the active layer), "meta" (every
 * other structure: L1 tables, snapshot table, refcount structures, scheme-private structures).
 */
import type { Qcow2Image } from "../engine/qcow2-image.js";
import type { SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";

export type ClusterKind = "data" | "l2" | "meta";

/** What the engine exposes to a scheme. */
export interface SchemeHost {
  readonly image: Qcow2Image;
  /** Sets the dirty bit durably (once): on-disk refcounts may be stale from now on. */
  markDirty(): void;
  /** Clears the dirty bit durably (every refcount is on disk and standard). */
  markClean(): void;
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
  /** Scheme-specific costs (conversion time, replayed records...), for reports. */
  report?(): Record<string, number>;
  /** Clean close: after the engine has flushed its tables; must leave standard refcounts on disk. */
  close(): void;
}
