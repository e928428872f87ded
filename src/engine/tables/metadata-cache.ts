/**
 * Write-back cache of metadata units (L2 table slices, refcount blocks), modelled on QEMU's qcow2-cache.c:
 * least-recently-used eviction, and two ordering hooks that the engine uses to state its write-ordering rules:
 *
 *  - `dependsOn`: before any entry of this cache is written, every dirty entry of the other cache is written
 *    and the file flushed ("refcount block before the L2 entry that points to the new cluster").
 *  - `flushBeforeWrite`: the file is flushed before any entry of this cache is written ("COW data before the
 *    L2 entry that points to it").
 *
 * `setDependencyAsQemu` states a dependency the way QEMU 7.2's qcow2_cache_set_dependency does, flushing
 * (write + fsync) whatever the other cache already waits for first: used by `eager --order qemu`.
 *
 * A dirty unit is written back by its changed pages only (4 KiB, or the whole unit when it is smaller): a
 * 64 KiB refcount block that gained one count costs one 4 KiB write, not 64 KiB. The pages a caller changed
 * are named in `markDirty`; a unit marked without a range, or installed fresh by `put`, is written whole.
 * Why that keeps the ordering rules and is safe against a torn write: write-order.ts, "Partial write-back".
 */
import type { BlockFile, IoPurpose } from "../../io/block-file.js";

/** What a scheme may subscribe to of a cache (a journal records what changed, and commits before a write in place). */
export interface CacheEvents {
  /** A unit became (or stays) dirty. */
  dirtied?(offset: number): void;
  /** Units are about to be written in place. */
  beforeWrite?(): void;
}

/** The granule of a partial write-back: the page size of the host's page cache, and a multiple of any sector. */
export const WRITEBACK_PAGE = 4096;

interface Entry {
  buf: Uint8Array;
  dirty: boolean;
  /** Per page of `buf` (see WRITEBACK_PAGE), 1 when it changed since the unit was last read or written. */
  changed: Uint8Array;
}

export class MetadataCache {
  private readonly entries = new Map<number, Entry>();
  dependsOn: MetadataCache | null = null;
  flushBeforeWrite = false;
  /** The one subscriber's events (subscribe), if any. */
  private dirtied: ((offset: number) => void) | undefined;
  private beforeWriteEvent: (() => void) | undefined;
  /**
   * Set by WriteOrder, which states when it holds (write-order.ts): true when the unit at `offset` lies in a
   * table that no structure on the disk points to yet. Writing only such units needs no flush first: the
   * flush is owed to the write that makes them reachable, and the hooks stay set for it.
   */
  unreachable: { any(): boolean; at(offset: number): boolean } | null = null;
  /** A dependency stated as QEMU 7.2 does (eager --order qemu): its flushes are kept as QEMU makes them. */
  private asQemu = false;
  private dirtyCount = 0;
  /** Bytes per page of a partial write-back: WRITEBACK_PAGE, or the whole unit when it is not larger. */
  private readonly pageBytes: number;

  constructor(
    private readonly file: BlockFile,
    readonly entrySize: number,
    private readonly capacity: number,
    readonly purpose: IoPurpose,
    /** Flushes the file (a no-op in cache=unsafe), tagged with the purpose whose ordering it provides. */
    private readonly sync: (purpose: IoPurpose) => void,
    /** Called when a unit is read from disk, to validate it before use. */
    private readonly onLoad?: (offset: number, buf: Uint8Array) => void,
  ) {
    this.pageBytes = entrySize > WRITEBACK_PAGE && entrySize % WRITEBACK_PAGE === 0 ? WRITEBACK_PAGE : entrySize;
  }

  /** Returns the unit at `offset`, reading it on a miss. The buffer stays valid until the next cache call. */
  get(offset: number): Uint8Array {
    const e = this.entries.get(offset);
    if (e) {
      this.entries.delete(offset);
      this.entries.set(offset, e);
      return e.buf;
    }
    const buf = new Uint8Array(this.entrySize);
    this.file.read(buf, offset, this.purpose);
    this.onLoad?.(offset, buf);
    this.insert(offset, this.entry(buf, false));
    return buf;
  }

  /** Installs a unit without reading it (a freshly allocated table), marked dirty. */
  put(offset: number, buf: Uint8Array): void {
    this.drop(offset);
    this.insert(offset, this.entry(buf, true));
    this.dirtyCount++;
    this.dirtied?.(offset);
  }

  /** Subscribes to the cache's events (one subscriber at a time); returns the unsubscribe. */
  subscribe(events: CacheEvents): () => void {
    if (this.dirtied || this.beforeWriteEvent) throw new Error("internal: the metadata cache has a subscriber already");
    this.dirtied = events.dirtied?.bind(events);
    this.beforeWriteEvent = events.beforeWrite?.bind(events);
    return () => {
      this.dirtied = undefined;
      this.beforeWriteEvent = undefined;
    };
  }

  /**
   * The unit at `offset` changed: in bytes [at, at + length) of it when given, anywhere in it otherwise.
   * Every change to a unit's buffer must be followed by a call naming at least the bytes it changed.
   */
  markDirty(offset: number, at?: number, length?: number): void {
    const e = this.entries.get(offset);
    if (!e) throw new Error(`internal: marking uncached metadata at ${offset} dirty`);
    if (at === undefined || length === undefined) e.changed.fill(1);
    else {
      if (at < 0 || length <= 0 || at + length > this.entrySize) throw new Error(`internal: bytes ${at}+${length} are outside a ${this.entrySize}-byte unit`);
      e.changed.fill(1, Math.floor(at / this.pageBytes), Math.ceil((at + length) / this.pageBytes));
    }
    if (!e.dirty) {
      e.dirty = true;
      this.dirtyCount++;
    }
    this.dirtied?.(offset);
  }

  /** The cached unit at `offset`, or undefined; does not read or reorder. */
  peek(offset: number): Uint8Array | undefined {
    return this.entries.get(offset)?.buf;
  }

  /** Forgets a unit without writing it (its cluster was freed). */
  drop(offset: number): void {
    const e = this.entries.get(offset);
    if (!e) return;
    if (e.dirty) this.dirtyCount--;
    this.entries.delete(offset);
  }

  /**
   * Forgets every unit in [start, end) without writing. Units lie at multiples of the unit size (slices of
   * cluster-aligned tables, whole blocks), so only those offsets are looked up: a freed cluster costs a few
   * lookups, not a scan of the whole cache.
   */
  dropRange(start: number, end: number): void {
    const first = Math.ceil(start / this.entrySize) * this.entrySize;
    for (let offset = first; offset < end; offset += this.entrySize) this.drop(offset);
  }

  /** Installs a unit that is on disk as it is (a table just written whole), clean, without reading it. */
  install(offset: number, buf: Uint8Array): void {
    this.onLoad?.(offset, buf);
    this.drop(offset);
    this.insert(offset, this.entry(buf, false));
  }

  hasDirty(): boolean {
    return this.dirtyCount > 0;
  }

  /** Writes every dirty unit, honouring the ordering hooks. Does not flush afterwards. */
  writeDirty(): void {
    if (this.dirtyCount === 0) return;
    this.beforeWrite();
    for (const [offset, e] of this.entries) {
      if (!e.dirty) continue;
      this.writeUnit(offset, e);
    }
    this.dirtyCount = 0;
  }

  /** Writes the changed pages of a dirty unit, each run of adjacent ones as one write, and marks it clean. */
  private writeUnit(offset: number, e: Entry): void {
    const pages = e.changed;
    if (pages.length === 1) {
      this.file.write(e.buf, offset, this.purpose);
    } else {
      for (let p = 0; p < pages.length; ) {
        if (!pages[p]) {
          p++;
          continue;
        }
        let end = p + 1;
        while (end < pages.length && pages[end]) end++;
        const from = p * this.pageBytes;
        this.file.write(e.buf.subarray(from, end * this.pageBytes), offset + from, this.purpose);
        p = end;
      }
    }
    pages.fill(0);
    e.dirty = false;
  }

  private entry(buf: Uint8Array, dirty: boolean): Entry {
    const changed = new Uint8Array(this.entrySize / this.pageBytes);
    if (dirty) changed.fill(1);
    return { buf, dirty, changed };
  }

  /**
   * QEMU's qcow2_cache_set_dependency (block/qcow2-cache.c): before this cache depends on `dep`, flush what
   * `dep` itself depends on, and this cache's previous, different dependency. When an L2 update (L2 after the
   * refcount block) and a decrement (refcount block after L2) alternate, every call flushes one cache: the
   * ping-pong of about two fsyncs per post-snapshot write that QEMU pays even in writeback.
   */
  setDependencyAsQemu(dep: MetadataCache): void {
    this.asQemu = true;
    if (dep.dependsOn) dep.flushDependency();
    if (this.dependsOn && this.dependsOn !== dep) this.flushDependency();
    this.dependsOn = dep;
  }

  /** qcow2_cache_flush_dependency: write the cache this one depends on, fsync, forget the dependency. */
  private flushDependency(): void {
    const dep = this.dependsOn;
    if (!dep) return;
    dep.writeDirty();
    this.sync(dep.purpose);
    this.dependsOn = null;
    this.flushBeforeWrite = false;
  }

  /** Empties the cache (after writing dirty units). */
  clear(): void {
    this.writeDirty();
    this.entries.clear();
  }

  /** Discards everything, dirty or not (the structures were rebuilt elsewhere). */
  reset(): void {
    this.entries.clear();
    this.dirtyCount = 0;
  }

  /** The ordering hooks before units are written: `victim` alone (an eviction), or every dirty unit. */
  private beforeWrite(victim?: number): void {
    this.beforeWriteEvent?.();
    if ((this.dependsOn || this.flushBeforeWrite) && this.allUnreachable(victim)) {
      // Nothing on the disk reaches these units yet: what they depend on is written, not flushed, and the
      // hooks stay set; the write that makes them reachable flushes first (write-order.ts, writeOut).
      const dep = this.dependsOn;
      if (dep && (dep.hasDirty() || dep.dependsOn || dep.flushBeforeWrite)) dep.writeDirty();
      return;
    }
    const dep = this.dependsOn;
    if (dep) {
      this.dependsOn = null;
      if (dep.hasDirty() || dep.dependsOn || dep.flushBeforeWrite) {
        dep.writeDirty();
      }
      this.sync(dep.purpose);
      this.flushBeforeWrite = false;
    }
    if (this.flushBeforeWrite) {
      this.flushBeforeWrite = false;
      this.sync("guest-data");
    }
  }

  private allUnreachable(victim: number | undefined): boolean {
    const f = this.unreachable;
    // `any` first: the walk over the cache below runs only while some table is unreachable at all.
    if (!f || this.asQemu || !f.any()) return false;
    if (victim !== undefined) return f.at(victim);
    for (const [offset, e] of this.entries) if (e.dirty && !f.at(offset)) return false;
    return true;
  }

  private insert(offset: number, e: Entry): void {
    while (this.entries.size >= this.capacity) {
      const [victim, ve] = this.entries.entries().next().value as [number, Entry];
      if (ve.dirty) {
        this.beforeWrite(victim);
        this.writeUnit(victim, ve);
        this.dirtyCount--;
      }
      this.entries.delete(victim);
    }
    this.entries.set(offset, e);
  }
}
