/** The options of an in-process open: the data of ImageOpenOptions plus what only a caller in the same thread can pass. */
import type { SchemeCatalog } from "../allocation/scheme-seam.js";
import type { SyncDisk } from "../../disk/sync-disk.js";
import type { ImageOpenOptions } from "../types.js";

/** Resolves a backing file name (as stored in the header) to an open disk: a qcow2 image or a raw file. */
export type BackingOpener = (name: string, format: string | undefined) => SyncDisk;

export interface OpenOptions extends ImageOpenOptions {
  /** Where scheme names are looked up and schemes' leftovers recovered (required: the composition roots pass the registry of src/schemes). */
  schemes: SchemeCatalog;
  /** How to open the backing file. Default: none, and an image with a backing file fails to open. */
  openBacking?: BackingOpener;
  /** Do not open the backing file even if there is one (reads of unallocated clusters return zeroes). */
  noBacking?: boolean;
  /** Open even an image marked corrupt, read-only or for repair (like qemu-img check -r). */
  forCheck?: boolean;
  /** Do not repair a dirty image at open (used by check, which reports instead). */
  noRepairOnOpen?: boolean;
  /**
   * The open serves a whole-file restructuring (compaction), not guest writes: the scheme recovers what the
   * image holds but prepares nothing for writes (no data log is made).
   */
  noPrepare?: boolean;
  /**
   * Where a scheme draws the random numbers it needs (the journal's first sequence number); Math.random when
   * absent. The crash harness passes a seeded one, so that a run repeats byte for byte.
   */
  random?: () => number;
}

