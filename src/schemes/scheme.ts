/**
 * A refcount scheme decides how reference counts are maintained while an image is open. The engine calls it at
 * the points listed below and never touches refcounts otherwise. Adding a scheme means adding one module that
 * implements this interface and registering it in `index.ts`.
 */
import type { MetadataCache } from "../engine/metadata-cache.js";
import type { RefcountStore } from "../engine/refcounts.js";

/** What the engine exposes to a scheme. */
export interface SchemeHost {
  readonly refcounts: RefcountStore;
  readonly l2Cache: MetadataCache;
  readonly readOnly: boolean;
  /** Sets the dirty bit durably (once): on-disk refcounts may be stale from now on. */
  markDirty(): void;
  /** Clears the dirty bit durably (all refcounts are on disk). */
  markClean(): void;
}

export interface RefcountScheme {
  readonly name: string;
  /** Whether a flush writes the cached refcount blocks (false: they reach the disk on eviction or close). */
  readonly flushesRefcounts: boolean;
  /** Called once the image structures are loaded (after recovery of a dirty image). */
  attach(host: SchemeHost): void;
  /**
   * May a guest write go straight to the host cluster of an active-layer L2 entry? `copied` is the entry's
   * COPIED flag (QEMU's cached "refcount is exactly 1").
   */
  mayWriteInPlace(copied: boolean, hostCluster: number): boolean;
  /** Allocates `n` contiguous host clusters, counted as referenced once. Returns the host offset. */
  allocate(n: number): number;
  /**
   * The active layer's metadata now references a newly allocated cluster (an L2 entry or an L1 entry was set
   * in the cache). Eager: the refcount block must reach the disk before that L2 table.
   */
  referenced(): void;
  /** One reference to `cluster` is dropped by metadata that is not on disk yet. */
  release(cluster: number): void;
  /** Drops a reference at once (the metadata that held it is already durable or never was on disk). */
  releaseNow(cluster: number): void;
  /** Clean close: after the engine has flushed its tables. */
  close(): void;
}
