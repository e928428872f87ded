/**
 * Host-cluster reference counts: the refcount table (held in memory), refcount blocks (through a metadata
 * cache), the free-cluster search, and growth of both structures. Policy-free: it counts what it is told to
 * count; the refcount scheme decides when, and the allocation policy where a search starts.
 *
 * Ordering rules kept here:
 *  - a new refcount block is written and flushed before the table entry that points to it;
 *  - a new refcount table (with its new blocks) is written and flushed before the header points to it, and the
 *    old table is released only after the header is flushed.
 */
import type { BlockFile } from "../../io/block-file.js";
import { decodeReftableEntry, encodeReftableEntry, RefcountCodec } from "../../format/refcount-block.js";
import { MAX_REFTABLE_BYTES } from "../../format/header.js";
import { allocationPolicy, type AllocationPolicy } from "./alloc-policy.js";
import { ImageFormatError } from "../errors.js";
import { MetadataCache } from "../tables/metadata-cache.js";

export interface RefcountHost {
  file: BlockFile;
  clusterSize: number;
  clusterBits: number;
  sync(): void;
  /** Points the header at a new refcount table and writes the header durably. */
  setRefcountTable(offset: number, clusters: number): void;
  /** First cluster index past every cluster in use or being built (usually the file end). */
  endCluster(): number;
  /** Called when a cluster's count drops to zero, so caches holding it can forget it. */
  onClusterFreed(cluster: number): void;
  /** Throws when a cluster about to be handed out holds metadata (its count says free: the image is corrupt). */
  checkFree?(cluster: number): void;
}

/** What a scheme may subscribe to of the refcounts. */
export interface RefcountEvents {
  /**
   * Whether a cluster is in use although its count is 0 (schemes whose on-disk counts leave out the active
   * layer; a journal's records). The free-cluster search and the placement of new refcount blocks skip it.
   */
  inUse?(cluster: number): boolean;
  /** The host byte range of a refcount entry just changed (a journaling scheme records it). */
  changed?(offset: number, length: number): void;
}

export class RefcountStore {
  readonly codec: RefcountCodec;
  readonly cache: MetadataCache;
  /** Refcount block offset per table entry (0 = none). */
  table: number[];
  tableOffset: number;
  tableClusters: number;
  /** Search for free clusters starts here (lowered when a cluster is freed). */
  private freeIndex = 0;
  /** References dropped by metadata not yet on disk: applied after that metadata is flushed. */
  private pending: number[] = [];
  /** End (exclusive) of the clusters being allocated right now, whose counts are not recorded yet. */
  private reservedEnd = 0;
  private reservedStart = 0;
  /** Highest cluster index ever counted, plus one. */
  private countedEnd = 0;
  /** Highest cluster index ever handed out by allocate(), plus one (claimed clusters may stay uncounted). */
  private allocatedEnd = 0;
  /** The one subscriber's events (subscribe), if any. */
  private usedBy: ((cluster: number) => boolean) | undefined;
  private onChange: ((offset: number, length: number) => void) | undefined;

  constructor(
    private readonly host: RefcountHost,
    refcountOrder: number,
    tableOffset: number,
    tableClusters: number,
    rawTable: Uint8Array,
    cacheCapacity: number,
    readonly policy: AllocationPolicy = allocationPolicy(),
    /**
     * An open for check: invalid table entries are noted here (as qemu-img check words them, and whether, as
     * for qemu-img, only a rebuild of the refcount structures repairs them) and read as absent.
     */
    problems?: { message: string; rebuild: boolean }[],
  ) {
    this.codec = new RefcountCodec(refcountOrder, host.clusterSize);
    this.tableOffset = tableOffset;
    this.tableClusters = tableClusters;
    const view = new DataView(rawTable.buffer, rawTable.byteOffset, rawTable.byteLength);
    const n = rawTable.length / 8;
    this.table = new Array(n);
    const fileSize = host.file.size();
    for (let i = 0; i < n; i++) {
      const { offset, reservedBits } = decodeReftableEntry(view, i);
      const bad = (message: string, forCheck: string, rebuild: boolean) => {
        if (!problems) throw new ImageFormatError(message);
        problems.push({ message: forCheck, rebuild });
        this.table[i] = 0;
      };
      if (reservedBits) bad(`refcount table entry ${i} has reserved bits set`, `ERROR refcount table entry ${i} has reserved bits set`, true);
      else if (offset % host.clusterSize) bad(`refcount block offset 0x${offset.toString(16)} (table entry ${i}) is not cluster aligned`, `ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`, true);
      else if (offset && offset + host.clusterSize > fileSize) bad(`refcount block offset 0x${offset.toString(16)} (table entry ${i}) is past the end of the image`, `ERROR refcount block ${i} is outside image`, false);
      else if (offset === 0 && i === 0 && !problems) throw new ImageFormatError("refcount table has no block for the header cluster");
      else this.table[i] = offset;
    }
    this.cache = new MetadataCache(host.file, host.clusterSize, cacheCapacity, "refcount", () => host.sync());
  }

  get entriesPerBlock(): number {
    return this.codec.entriesPerBlock;
  }

  /** Reference count of a host cluster (0 when it has no refcount block). */
  get(cluster: number): number {
    const r = Math.floor(cluster / this.codec.entriesPerBlock);
    const block = r < this.table.length ? this.table[r] : 0;
    if (!block) return 0;
    return this.codec.get(this.cache.get(block), cluster % this.codec.entriesPerBlock);
  }

  /** Adds `delta` to a cluster's count now (in the cache). */
  change(cluster: number, delta: number): number {
    const epb = this.codec.entriesPerBlock;
    const r = Math.floor(cluster / epb);
    if (delta < 0 && !(r < this.table.length && this.table[r])) {
      // No block: the count is 0. Creating one (wherever the cluster is: a corrupt entry can point terabytes
      // away) only to find that would be a write to an image about to be found corrupt.
      throw new ImageFormatError(`refcount of cluster ${cluster} would drop below zero (image is corrupt)`);
    }
    const block = this.ensureBlock(r);
    const buf = this.cache.get(block);
    const idx = cluster % epb;
    const old = this.codec.get(buf, idx);
    const next = old + delta;
    if (next < 0) throw new ImageFormatError(`refcount of cluster ${cluster} would drop below zero (image is corrupt)`);
    if (next > this.codec.max) throw new ImageFormatError(`refcount overflow at cluster ${cluster} (more than ${this.codec.max} references)`, { corruption: false });
    this.codec.set(buf, idx, next);
    const bits = this.codec.bits;
    const byte = Math.floor((idx * bits) / 8);
    const width = Math.max(1, bits / 8);
    this.cache.markDirty(block, byte, width);
    this.onChange?.(block + byte, width);
    if (cluster >= this.countedEnd) this.countedEnd = cluster + 1;
    if (next === 0 && !this.usedBy?.(cluster)) this.noteFreed(cluster);
    return next;
  }

  /** Subscribes to the store's events (one subscriber at a time); returns the unsubscribe. */
  subscribe(events: RefcountEvents): () => void {
    if (this.usedBy || this.onChange) throw new Error("internal: the refcount store has a subscriber already");
    this.usedBy = events.inUse?.bind(events);
    this.onChange = events.changed?.bind(events);
    return () => {
      this.usedBy = undefined;
      this.onChange = undefined;
    };
  }

  /** A cluster became free (count 0 and not in use): the search may reuse it, caches must forget it. */
  noteFreed(cluster: number): void {
    if (cluster < this.freeIndex) this.freeIndex = cluster;
    this.host.onClusterFreed(cluster);
  }

  /** Sets a cluster's count (repair). */
  set(cluster: number, value: number): void {
    this.change(cluster, value - this.get(cluster));
  }

  /** Records that one reference to `cluster` goes away once the metadata that dropped it is on disk. */
  releaseLater(cluster: number): void {
    this.pending.push(cluster);
  }

  hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** Applies the deferred decrements. Call only after the metadata that dropped them has been flushed. */
  applyPending(): void {
    const p = this.pending;
    this.pending = [];
    for (const c of p) this.change(c, -1);
  }

  /**
   * Finds `n` contiguous free clusters (the first run from where the allocation policy starts) and takes one
   * reference on each, or, with `claim`, lets the caller mark them used some other way. Returns the host offset.
   */
  allocate(n: number, claim?: (start: number, n: number) => void): number {
    const start = this.findFree(n);
    if (this.host.checkFree) {
      // Clusters inside the file may hold anything a damaged count lets through; past the end, nothing.
      const inFile = Math.min(start + n, this.fileClustersAtLeast(start + n));
      for (let c = start; c < inFile; c++) this.host.checkFree(c);
    }
    this.reservedStart = start;
    this.reservedEnd = start + n;
    try {
      // A run over ranges that have no refcount block yet: their blocks go outside the run, in one new area.
      const epb = this.codec.entriesPerBlock;
      const lacking: number[] = [];
      for (let r = Math.floor(start / epb); r <= Math.floor((start + n - 1) / epb); r++) {
        if ((r >= this.table.length || !this.table[r]) && this.blockSlot(r) < 0) lacking.push(r);
      }
      if (lacking.length) this.addBlocks(lacking);
      if (claim) claim(start, n);
      else for (let i = 0; i < n; i++) this.change(start + i, 1);
    } finally {
      this.reservedStart = 0;
      this.reservedEnd = 0;
    }
    if (n === 1 || start === this.freeIndex) this.freeIndex = start + n;
    if (start + n > this.allocatedEnd) this.allocatedEnd = start + n;
    return start * this.host.clusterSize;
  }

  /**
   * The file's length in clusters, asked of the file (a syscall) only when `wanted` lies past the length seen
   * last: the file never shrinks while an image is open (only compaction, on an open of its own, truncates),
   * so a length seen once stays a lower bound. Returns at least min(wanted, the real length).
   */
  private fileClustersAtLeast(wanted: number): number {
    if (wanted > this.fileClustersSeen) this.fileClustersSeen = Math.ceil(this.host.file.size() / this.host.clusterSize);
    return this.fileClustersSeen;
  }
  private fileClustersSeen = 0;

  /** First cluster past the file end and past every cluster counted or handed out (where `append` allocates). */
  inUseEnd(): number {
    return Math.max(this.host.endCluster(), this.countedEnd, this.allocatedEnd);
  }

  /** Creates blocks for ranges `ranges` in a new area at the end of the image (table moved along). */
  private addBlocks(ranges: number[]): void {
    const perCluster = this.host.clusterSize / 8;
    const entries = Math.max(this.table.length, Math.max(...ranges) + 1);
    const tableClusters = Math.max(this.tableClusters, Math.ceil(Math.ceil(entries * 1.5) / perCluster));
    if (tableClusters * this.host.clusterSize > MAX_REFTABLE_BYTES) throw new ImageFormatError("refcount table would exceed the 8 MiB limit (image too large)", { corruption: false });
    this.placeNewStructures(tableClusters * perCluster, tableClusters, (c) => this.get(c), false, 0, ranges);
  }

  /** Takes one reference on each cluster of [start, start+n) (they must be free). Used by append allocation. */
  allocateAt(startCluster: number, n: number): number {
    this.reservedEnd = startCluster + n;
    for (let i = 0; i < n; i++) this.change(startCluster + i, 1);
    this.reservedEnd = 0;
    return startCluster * this.host.clusterSize;
  }

  findFree(n: number): number {
    let run = 0;
    let c = this.policy.searchStart(this.freeIndex, () => this.inUseEnd());
    const epb = this.codec.entriesPerBlock;
    for (;;) {
      const r = Math.floor(c / epb);
      const block = r < this.table.length ? this.table[r] : 0;
      if (!block) {
        // A range without a block is free (but for clusters a scheme uses uncounted); the cluster that will
        // hold the block itself is kept out of the run.
        const slot = n === 1 ? this.blockSlot(r) : -1;
        const end = (r + 1) * epb;
        for (; c < end; c++) {
          if (c === slot || this.usedBy?.(c)) {
            run = 0;
          } else if (++run === n) {
            return c - n + 1;
          }
        }
        continue;
      }
      const buf = this.cache.get(block);
      const end = (r + 1) * epb;
      const used = this.usedBy;
      for (; c < end; c++) {
        if (this.codec.get(buf, c % epb) === 0 && !(used && used(c))) {
          run++;
          if (run === n) return c - n + 1;
        } else {
          run = 0;
        }
      }
    }
  }

  /** Makes sure refcount block `r` exists; creates a self-describing block at the start of its range if not. */
  private ensureBlock(r: number): number {
    if (r < this.table.length && this.table[r]) return this.table[r];
    if (r >= this.table.length) this.growTable(r + 1);
    if (this.table[r]) return this.table[r];
    const epb = this.codec.entriesPerBlock;
    const cs = this.host.clusterSize;
    const blockCluster = this.blockSlot(r);
    if (blockCluster < 0) {
      // Every cluster of the range is in use or being allocated: put the block in a new area at the end.
      this.addBlocks([r]);
      return this.table[r];
    }
    const offset = blockCluster * cs;
    const buf = new Uint8Array(cs);
    this.codec.set(buf, blockCluster - r * epb, 1); // the block describes itself
    this.host.file.write(buf, offset, "refcount");
    this.host.sync();
    this.table[r] = offset;
    this.writeTableEntry(r);
    this.host.sync();
    this.cache.put(offset, buf);
    this.cache.markDirty(offset);
    return offset;
  }

  /**
   * Where a new block for range `r` goes: the first cluster of the range not in use, from where the allocation
   * policy lets a search start (-1 if none).
   */
  private blockSlot(r: number): number {
    const epb = this.codec.entriesPerBlock;
    const used = this.usedBy;
    for (let c = this.policy.searchStart(r * epb, () => this.inUseEnd()); c < (r + 1) * epb; c++) {
      if (c >= this.reservedStart && c < this.reservedEnd) {
        c = this.reservedEnd - 1;
        continue;
      }
      if (!used || !used(c)) return c;
    }
    return -1;
  }

  private writeTableEntry(r: number): void {
    const entry = new Uint8Array(8);
    encodeReftableEntry(new DataView(entry.buffer), 0, this.table[r]);
    this.host.file.write(entry, this.tableOffset + r * 8, "refcount");
  }

  /**
   * Moves the refcount table to a larger area at the end of the image. The area holds the new blocks its own
   * clusters need, then the table; both describe themselves.
   */
  private growTable(minEntries: number): void {
    const cs = this.host.clusterSize;
    const perCluster = cs / 8;
    const wanted = Math.max(minEntries, Math.ceil(this.table.length * 1.5), this.table.length + 1);
    const tableClusters = Math.ceil(wanted / perCluster);
    if (tableClusters * cs > MAX_REFTABLE_BYTES) throw new ImageFormatError("refcount table would exceed the 8 MiB limit (image too large)", { corruption: false });
    const newEntries = tableClusters * perCluster;
    this.placeNewStructures(newEntries, tableClusters, (c) => this.get(c), false);
  }

  /**
   * Writes a new refcount table of `tableClusters` clusters (and new refcount blocks) in a fresh area at the
   * end of the image and switches the header to it. With `rebuild`, every block is new and holds exactly
   * `countOf(c)`; otherwise existing blocks are kept and only the area's own clusters are counted.
   */
  private placeNewStructures(newEntries: number, tableClusters: number, countOf: (c: number) => number, rebuild: boolean, maxCluster = 0, extraRanges: number[] = []): void {
    const cs = this.host.clusterSize;
    const epb = this.codec.entriesPerBlock;
    // Flush what the cache holds so every existing block is current on disk.
    this.cache.writeDirty();
    // Past the file end, and past clusters handed out but not written yet.
    const areaStart = Math.max(this.host.endCluster(), maxCluster, this.reservedEnd, this.countedEnd, this.allocatedEnd);
    const hasBlock = (r: number) => !rebuild && r < this.table.length && this.table[r] !== 0;
    // Ranges that need a new block: for a rebuild every range with a counted cluster; always the area's own.
    const needed = new Set<number>(extraRanges);
    if (rebuild) {
      for (let c = 0; c < areaStart; c++) if (countOf(c) > 0) needed.add(Math.floor(c / epb));
    }
    let blocks = 0;
    for (;;) {
      const areaEnd = areaStart + blocks + tableClusters;
      const set = new Set(needed);
      for (let r = Math.floor(areaStart / epb); r <= Math.floor((areaEnd - 1) / epb); r++) if (!hasBlock(r)) set.add(r);
      const newBlocks = [...set].filter((r) => !hasBlock(r)).length;
      if (newBlocks === blocks) {
        needed.clear();
        for (const r of set) needed.add(r);
        break;
      }
      blocks = newBlocks;
    }
    const blockRanges = [...needed].filter((r) => !hasBlock(r)).sort((a, b) => a - b);
    // A rebuild starts a new table: the old one's length (a damaged header may make it larger than needed)
    // does not count.
    const maxRange = Math.max(-1, ...blockRanges, rebuild ? -1 : this.table.length - 1);
    if (maxRange >= newEntries) throw new ImageFormatError("internal: refcount table too small for its own area");
    const tableStart = areaStart + blockRanges.length;
    const areaEnd = tableStart + tableClusters;
    const inArea = (c: number) => c >= areaStart && c < areaEnd;
    const newTable: number[] = new Array(newEntries).fill(0);
    if (!rebuild) for (let i = 0; i < this.table.length; i++) newTable[i] = this.table[i];
    const newBlockBufs = new Map<number, Uint8Array>();
    blockRanges.forEach((r, i) => {
      newTable[r] = (areaStart + i) * cs;
      const buf = new Uint8Array(cs);
      if (rebuild) {
        for (let c = r * epb; c < Math.min((r + 1) * epb, areaStart); c++) {
          const v = countOf(c);
          if (v) this.codec.set(buf, c - r * epb, Math.min(v, this.codec.max));
        }
      }
      newBlockBufs.set(r, buf);
    });
    // Count the area's own clusters.
    for (let c = areaStart; c < areaEnd; c++) {
      const r = Math.floor(c / epb);
      const nb = newBlockBufs.get(r);
      if (nb) this.codec.set(nb, c % epb, 1);
      else this.change(c, 1); // an existing block (not a rebuild)
    }
    this.cache.writeDirty();
    for (const [r, buf] of newBlockBufs) this.host.file.write(buf, newTable[r], "refcount");
    const tableBuf = new Uint8Array(tableClusters * cs);
    const tv = new DataView(tableBuf.buffer);
    for (let i = 0; i < newEntries; i++) if (newTable[i]) encodeReftableEntry(tv, i, newTable[i]);
    this.host.file.write(tableBuf, tableStart * cs, "refcount");
    this.host.sync();
    const oldOffset = this.tableOffset;
    const oldClusters = this.tableClusters;
    this.host.setRefcountTable(tableStart * cs, tableClusters);
    this.tableOffset = tableStart * cs;
    this.tableClusters = tableClusters;
    this.table = newTable;
    if (rebuild) {
      this.cache.reset();
      this.pending = [];
      this.freeIndex = 0;
    } else {
      for (let i = 0; i < oldClusters; i++) if (!inArea(oldOffset / cs + i)) this.change(oldOffset / cs + i, -1);
    }
  }

  /**
   * Replaces all refcount structures by new ones holding exactly `counts` (indexed by cluster), written in a
   * fresh area at the end of the image (QEMU's "Rebuilding refcount structure").
   */
  rebuild(references: ArrayLike<number>): void {
    const cs = this.host.clusterSize;
    // The old table and blocks are not referenced once the new ones are in place.
    const counts = Array.from(references);
    for (let i = 0; i < this.tableClusters; i++) {
      const c = this.tableOffset / cs + i;
      if (c < counts.length && counts[c] > 0) counts[c]--;
    }
    for (const block of this.table) {
      const c = block / cs;
      if (block && c < counts.length && counts[c] > 0) counts[c]--;
    }
    const epb = this.codec.entriesPerBlock;
    const perCluster = cs / 8;
    let end = Math.max(counts.length, this.host.endCluster());
    // Estimate table size for everything up to the end plus a margin for the area itself.
    let tableClusters = 1;
    for (;;) {
      const blocksGuess = Math.ceil((end + tableClusters + 2) / epb) + 1;
      const need = Math.ceil((Math.ceil((end + blocksGuess + tableClusters) / epb) + 1) / perCluster);
      if (need <= tableClusters) break;
      tableClusters = need;
    }
    tableClusters = Math.max(tableClusters, 1);
    this.placeNewStructures(tableClusters * perCluster, tableClusters, (c) => (c < counts.length ? counts[c] : 0), true, counts.length);
  }
}
