/**
 * The plan of one guest write to one guest cluster, computed by the engine before it touches the disk, as
 * QEMU's QCowL2Meta is (block/qcow2.h: the clusters to allocate, the COW regions before and after the
 * guest's bytes, the L2 entry to link, the references the link drops). A scheme may carry a plan out as the
 * engine would (the default: `carryOut` absent, or "declined"), or take it over ("carried"): defer the copy and the link, or
 * put the guest's bytes elsewhere. What it takes over it must serve to reads (`readHeld`) and finish before
 * any structural change (`settle`).
 *
 * Ordering the default execution keeps (each stated where it binds, in the engine's data path):
 *   - the guest's bytes and the COW copy are on the disk before the L2 entry that maps the new cluster;
 *   - the new cluster's refcount is on the disk before that entry (the scheme's `referenced`, eager);
 *   - the entry is on the disk before the decrement of what it drops (`release`).
 */

/** A byte range inside the cluster. */
export interface CowRegion {
  offset: number;
  length: number;
}

/** Where the bytes of a copied cluster that the guest does not write come from. */
export type CowSource = "cluster" | "compressed" | "backing" | "zeroes";

/**
 * What a scheme did with a plan: "carried" it out itself; "declined" it, changing nothing (the engine carries
 * it out as planned); or "replan": it changed the tables first (applied what it held), and the engine plans
 * the write again on the tables as they are now.
 */
export type PlanOutcome = "carried" | "declined" | "replan";

export interface WritePlan {
  /** Guest cluster index, and where the guest's bytes go inside it. */
  readonly gc: number;
  readonly inCluster: number;
  /** The guest's bytes (valid during the call only: a scheme copies what it keeps). */
  readonly data: Uint8Array;
  /**
   * "in-place": the bytes go into `oldHost`, which the entry maps and the scheme allows writing; "allocate": a
   * new cluster (fresh, or a copy of `cowSource`) gets them and the entry is linked to it.
   */
  readonly action: "in-place" | "allocate";
  /** Host offset of the cluster the entry maps now (0: none). */
  readonly oldHost: number;
  readonly cowSource: CowSource;
  /** The COW regions: head and tail of the cluster the guest's bytes do not cover (length 0: none). */
  readonly cowStart: CowRegion;
  readonly cowEnd: CowRegion;
  /** Extended L2 (subclusters): the default path handles these itself. */
  readonly extended: boolean;
}
