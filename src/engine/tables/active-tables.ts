/**
 * The active layer's tables: the L1 table (held in memory, written back by 512-byte sectors) and the L2
 * tables behind it (through a cache of slices, QEMU's l2-cache-entry-size). This is the handle a refcount
 * scheme gets on the mapping, instead of the whole image.
 *
 * Guest address → host address: guest cluster gc lies in L2 table l1[gc / l2Entries] at index gc % l2Entries.
 */
import type { BlockFile } from "../../io/block-file.js";
import { viewOf } from "../../format/bytes.js";
import { ClusterType, encodeL1, type L2Codec, type L2Entry } from "../../format/l1l2.js";
import type { MetadataCache } from "./metadata-cache.js";

/** Where one guest cluster is mapped (the result of a lookup, reused to avoid allocation). */
export interface Mapping {
  entry: L2Entry;
  /** Extended L2 only: allocated and reads-as-zero subcluster bitmaps. */
  alloc: number;
  zero: number;
  /** Cache key (host offset) of the L2 slice holding the entry, or -1 when the L1 entry is empty. */
  slice: number;
  /** Index of the entry inside the slice. */
  index: number;
}

export const EMPTY_ENTRY: L2Entry = { type: ClusterType.Unallocated, copied: false, offset: 0, compressedSize: 0, reservedBits: false };

/** The set of dirty L1 entries: clearing it (any path that writes the L1 table) also clears `onClear`'s state. */
class DirtyL1 extends Set<number> {
  constructor(private readonly onClear: () => void) {
    super();
  }
  override clear(): void {
    super.clear();
    this.onClear();
  }
}

export class ActiveTables {
  /** L2 table offsets of the active L1 table (0: none). */
  l1: number[] = [];
  /** The COPIED flags of the active L1 entries. */
  l1Copied: boolean[] = [];
  /** L1 entries changed in memory and not yet written (whoever clears it forgets the unlinked tables too). */
  readonly dirtyL1: Set<number> = new DirtyL1(() => this.made.clear());
  /**
   * L2 tables the write path made (new, or copies of shared ones) since the last write of the L1 entries:
   * table offset → its L1 index. One is unlinked while that entry is still dirty and points to it: the L1
   * table on the disk does not point to it (it was a free cluster until then).
   */
  private readonly made = new Map<number, number>();
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** Bytes and entries of one cached L2 slice. */
  readonly sliceBytes: number;
  readonly sliceEntries: number;
  /** Set once the L2 cache exists (it needs the tables' validation, which needs the image). */
  l2Cache!: MetadataCache;
  private readonly lookupResult: Mapping = { entry: EMPTY_ENTRY, alloc: 0, zero: 0, slice: -1, index: 0 };

  constructor(
    private readonly file: BlockFile,
    readonly l2: L2Codec,
    readonly clusterSize: number,
    sliceBytes: number,
    /** Where the active L1 table lies on disk now (the header's field; it moves when the table grows). */
    private readonly l1TableOffset: () => number,
  ) {
    this.l2Entries = clusterSize / l2.entryBytes;
    this.sliceBytes = Math.min(clusterSize, sliceBytes);
    this.sliceEntries = this.sliceBytes / l2.entryBytes;
  }

  /** Finds where guest cluster `gc` is mapped through the L1 table `l1` (the active one by default). The result is reused. */
  lookup(gc: number, l1: number[] = this.l1): Mapping {
    const r = this.lookupResult;
    const l1i = Math.floor(gc / this.l2Entries);
    const l2Off = l1i < l1.length ? l1[l1i] : 0;
    if (!l2Off) {
      r.entry = EMPTY_ENTRY;
      r.alloc = 0;
      r.zero = 0;
      r.slice = -1;
      r.index = 0;
      return r;
    }
    const l2i = gc % this.l2Entries;
    const slice = l2Off + Math.floor(l2i / this.sliceEntries) * this.sliceBytes;
    const index = l2i % this.sliceEntries;
    const buf = this.l2Cache.get(slice);
    const v = viewOf(buf);
    r.entry = this.l2.decode(v, index);
    if (this.l2.extended && r.entry.type !== ClusterType.Compressed) {
      [r.alloc, r.zero] = this.l2.bitmap(v, index);
    } else {
      r.alloc = 0;
      r.zero = 0;
    }
    r.slice = slice;
    r.index = index;
    return r;
  }

  /** L1 entry `i` points to `table`, a cluster the write path just allocated for it (new or copied). */
  madeTable(i: number, table: number): void {
    this.made.set(table, i);
  }

  /** Whether any table may be unlinked (see `made`): false on every write but those into a just-made table. */
  hasUnlinked(): boolean {
    return this.made.size > 0;
  }

  /** True when the L2 slice at `slice` lies in a table no L1 entry on the disk points to yet (see `made`). */
  unlinked(slice: number): boolean {
    const table = slice - (slice % this.clusterSize);
    const i = this.made.get(table);
    return i !== undefined && this.dirtyL1.has(i) && this.l1[i] === table;
  }

  /** Points L1 entry `i` at an L2 table (0: none), to be written at the next flush. */
  setL1(i: number, l2Offset: number, copied: boolean): void {
    this.l1[i] = l2Offset;
    this.l1Copied[i] = copied;
    this.dirtyL1.add(i);
  }

  /** Sets an entry as a Normal cluster at `offset` with the given COPIED flag (standard L2 part only). */
  setEntry(m: Mapping, offset: number, copied: boolean): void {
    const buf = this.l2Cache.get(m.slice);
    this.l2.encodeStandard(viewOf(buf), m.index, offset, { copied });
    this.l2Cache.markDirty(m.slice);
  }

  /** The L2 table at `offset` as the active layer sees it: on disk, with whatever the cache holds newer. */
  readTable(offset: number, table: Uint8Array): void {
    this.file.read(table, offset, "l2");
    for (let s = 0; s < this.clusterSize; s += this.sliceBytes) {
      const cached = this.l2Cache.peek(offset + s);
      if (cached) table.set(cached, s);
    }
  }

  /** The L1 table as bytes (COPIED flags as in memory, or all clear for a snapshot's copy). */
  encodeL1Table(withCopied: boolean): Uint8Array {
    const raw = new Uint8Array(this.l1.length * 8);
    const v = viewOf(raw);
    for (let i = 0; i < this.l1.length; i++) encodeL1(v, i * 8, this.l1[i], withCopied && this.l1Copied[i]);
    return raw;
  }

  /** Writes the 512-byte-aligned pieces of the L1 table that hold changed entries (no flush). */
  writeDirtyL1(): void {
    const perSector = 64;
    const sectors = new Set<number>();
    for (const i of this.dirtyL1) sectors.add(Math.floor(i / perSector));
    this.dirtyL1.clear();
    for (const s of [...sectors].sort((a, b) => a - b)) {
      const first = s * perSector;
      const n = Math.min(perSector, this.l1.length - first);
      const raw = new Uint8Array(n * 8);
      const v = viewOf(raw);
      for (let i = 0; i < n; i++) encodeL1(v, i * 8, this.l1[first + i], this.l1Copied[first + i]);
      this.file.write(raw, this.l1TableOffset() + first * 8, "l1");
    }
  }
}
