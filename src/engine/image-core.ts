/**
 * The image state (image-state.ts) with the parts that work on it: the persistent bitmaps, the overlap
 * checks, the read and write paths, zeroes and discard. Snapshots, check, map, the scheme's host and the open
 * take this core; the public Qcow2Image is a facade over it.
 */
import type { AccountingFile } from "../io/accounting-file.js";
import type { Qcow2Header } from "../format/header.js";
import { PersistentBitmaps } from "./snapshots/bitmaps.js";
import { ImageState } from "./image-state.js";
import type { OpenOptions } from "./open/open-options.js";
import { OverlapChecks } from "./data/overlap.js";
import { ReadPath } from "./data/read-path.js";
import type { RefcountScheme, SchemeHost } from "./allocation/scheme-seam.js";
import { readL1Table } from "./open/table-checks.js";
import { WritePath } from "./data/write-path.js";
import { ZeroDiscard } from "./data/zero-discard.js";

export class ImageCore extends ImageState {
  /** QEMU's persistent dirty bitmaps (bitmaps.ts). */
  readonly bitmaps: PersistentBitmaps;
  readonly overlap: OverlapChecks;
  readonly reader: ReadPath;
  readonly writer: WritePath;
  readonly zeroes: ZeroDiscard;
  /** The handle the scheme gets (scheme-host.ts), made once by the open or the facade. */
  host: SchemeHost | undefined;

  constructor(file: AccountingFile, header: Qcow2Header, opts: OpenOptions, scheme: RefcountScheme) {
    super(file, header, opts, scheme);
    this.bitmaps = new PersistentBitmaps(this);
    this.overlap = new OverlapChecks(this, this.bitmaps);
    this.reader = new ReadPath(this, this.overlap);
    this.writer = new WritePath(this, this.overlap, this.reader);
    this.zeroes = new ZeroDiscard(this, this.writer);
  }

  /** Called by the open once the image is loaded (and repaired), for a writable open. */
  attachScheme(host: SchemeHost): void {
    this.scheme.attach(host);
    this.schemeAttached = true;
    this.writer.plans = !!this.scheme.carryOut;
    this.reader.held = !!this.scheme.readHeld;
  }

  /** Reads and validates an L1 table (table-checks.ts). */
  readL1Table(offset: number, entries: number, fileSize: number, what: string, problems?: string[]): { offsets: number[]; copied: boolean[] } {
    return readL1Table(this.file, this.clusterSize, offset, entries, fileSize, what, problems);
  }

  /** Reads guest bytes through any L1 table (the active one, a snapshot's). */
  readThrough(l1: number[], buf: Uint8Array, offset: number, useBacking: boolean): void {
    this.reader.readThrough(l1, buf, offset, useBacking);
  }

  /** Writes guest bytes (disk or VM-state area) through the active L1. */
  writeGuest(offset: number, data: Uint8Array): void {
    this.writer.writeGuest(offset, data);
  }

  /**
   * Grows (or creates) the active L1 table to at least `entries` entries, moving it to new clusters. `exact`:
   * exactly that many (a resize, as QEMU's truncate), else 50% more when an existing table grows.
   */
  resizeL1(entries: number, exact = false): void {
    this.writer.resizeL1(entries, exact);
  }

  /**
   * Ends the scheme's part while the image stays open: everything is flushed and the scheme's close runs, so
   * the file is plain qcow2 with exact refcounts and a clear dirty bit. From then on only whole-file
   * restructuring (compaction) may follow, then abandon().
   */
  detachScheme(): void {
    this.settleScheme();
    this.flushMetadata();
    this.bitmaps.store();
    this.refcounts.cache.writeDirty();
    this.sync("refcount");
    if (this.schemeAttached) {
      this.scheme.close();
      this.schemeAttached = false;
    }
  }

  /**
   * Forgets the image without writing anything (its in-memory tables are stale after a restructuring that
   * wrote the file directly). The file itself stays open for the caller.
   */
  abandon(): void {
    this.closed = true;
    this.backing?.close();
  }

  /** Flushes everything; with `closeFile`, also closes the file and the backing chain. */
  shutdown(closeFile: boolean): void {
    if (this.closed) return;
    try {
      if (!this.readOnly && !this.corruptError) {
        this.flushMetadata();
        // Bitmaps are stored while the scheme is attached: their clusters come from it like any metadata.
        this.bitmaps.store();
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
}
