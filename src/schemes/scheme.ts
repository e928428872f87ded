/**
 * A refcount scheme decides how reference counts are maintained while an image is open. The interface it
 * implements and the handle it gets on the image (SchemeHost) are the engine's seam, in
 * src/engine/allocation/scheme-seam.ts; a scheme uses nothing of the engine beyond them.
 *
 * Each scheme module exports one SchemeDefinition: how to make the scheme, and everything it adds to the
 * format and to reports (feature bits, header extensions, I/O purposes with their cost group, what an open
 * must recover of its on-disk state). Adding a scheme is one module that exports a definition and one line
 * in the registry (`index.ts`); the lists of src/format, src/io and src/report are built from the registry.
 */
import type { BlockFile } from "../io/block-file.js";
import type { FeatureName } from "../format/features.js";
import type { Qcow2Header } from "../format/header.js";
import type { FlushOrder } from "../engine/types.js";
import type { RefcountScheme, SchemeHost } from "../engine/allocation/scheme-seam.js";
import type { ResolvedSchemeOptions, SchemeOptionSpec } from "./scheme-options.js";

export type { ClusterKind, RefcountScheme, SchemeHost, SnapshotTools } from "../engine/allocation/scheme-seam.js";

/** A feature bit a scheme sets in the header, with the name written in the header's feature name table. */
export interface SchemeFeature extends FeatureName {}

/** A header extension a scheme writes. */
export interface SchemeExtension {
  type: number;
  name: string;
}

/** The report's cost groups a scheme's I/O purposes may fall in (src/report/cost-groups.ts). */
export type SchemeCostGroup = "guest data" | "refcount/owner/journal metadata";

/** An I/O purpose a scheme tags its own I/O with, and the cost group reports count it in. */
export interface SchemeIoPurpose {
  purpose: string;
  costGroup: SchemeCostGroup;
}

/**
 * What an open does about a scheme's on-disk state, whatever scheme it opens with (a journal a process left
 * behind is replayed even when the image is opened with eager). Each step is optional.
 */
export interface SchemeRecovery {
  /** True when the image holds a log to replay before any table is read. */
  pendingBeforeLoad?(header: Qcow2Header): boolean;
  /** Replays that log into `file`; `readOnly`: it cannot be, and the open is refused. */
  beforeLoad?(file: BlockFile, header: Qcow2Header, clusterSize: number, readOnly: boolean): void;
  /** Once the tables are loaded, for a writable open: removes what the scheme left (replayed log, stale extension). */
  afterLoad?(host: SchemeHost, opts: { freeJournalArea: boolean }): void;
  /** True when the image holds records only the write path can replay (a data log's guest writes). */
  pendingAfterAttach?(header: Qcow2Header): boolean;
  /** Replays such records once the scheme is attached, and removes the log. */
  afterAttach?(host: SchemeHost): void;
  /** Refuses a read-only open of an image whose log only the write path can replay (a clear error). */
  refuseReadOnly?(header: Qcow2Header): void;
}

export interface SchemeDefinition {
  /** The name on the command line (`--scheme`). */
  name: string;
  make(options: ResolvedSchemeOptions, order: FlushOrder): RefcountScheme;
  /** The options the scheme takes (scheme-options.ts); none when absent. */
  options?: readonly SchemeOptionSpec[];
  /** Feature bits the scheme sets (incompatible ones make QEMU refuse the image while they are set). */
  features?: readonly SchemeFeature[];
  extensions?: readonly SchemeExtension[];
  ioPurposes?: readonly SchemeIoPurpose[];
  recovery?: SchemeRecovery;
}
