/** What the accounting wrapper counts, per I/O purpose (see block-file.ts for the purposes). */
import type { IoPurpose } from "./block-file.js";

/** Per-purpose cost counters, accumulated by the accounting wrapper. */
export interface PurposeCost {
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  flushes: number;
  /** Time spent in I/O calls of this purpose, in nanoseconds (flushes included). */
  timeNs: number;
  /** The part of `timeNs` spent in flushes. */
  flushNs: number;
  /** Clones (shared extents: no bytes written) and the bytes they made readable at their destination. */
  clones?: number;
  cloneBytes?: number;
}
export type CostBreakdown = Partial<Record<IoPurpose, PurposeCost>>;
