/**
 * Write ordering: every flush dependency of the engine is stated here.
 *
 * Metadata reaches the disk in this order on every flush (and before any out-of-order eviction):
 *   1. guest data and COW copies (written at once, never cached; a copy shared by a clone instead — from the
 *      old cluster, its subclusters or a backing file, data/cow-fill.ts — is such a write: issued where the
 *      copy was written, durable at the same flush, with no rule of its own)
 *   2. refcount blocks holding the increments for new clusters       — then flush
 *   3. L2 tables that point to the new clusters                        — then flush if the L1 changed
 *   4. L1 entries that point to new or copied L2 tables                — then flush
 *   5. decrements of clusters dropped by 3 and 4 (applied in memory now, written at the next flush)
 * so a crash at any point leaves at worst leaked clusters, never a reference without a count.
 *
 * The flush before 3 is left out when every L2 slice to be written lies in a table no L1 entry on the disk
 * points to yet (ActiveTables.unlinked: a table the write path just allocated or copied from a shared one,
 * whose L1 entry is still dirty) — the first write into a freshly copied L2 table after a snapshot. Why a
 * crash stays safe: until step 4 the L1 table on the disk points to the old table (the snapshot's, or none),
 * so whatever part of 1–3 reached the disk, torn or not, is unreachable: the image reads as before the write,
 * and a count the disk already holds for the new data cluster or table is a leak at worst, as before. Step 4
 * is always preceded by a flush (writeOut below; resizeL1, the snapshot operations and the journal's commit
 * flush before they write L1 entries, and they clear the dirty entries, which ends "unlinked"), so 1–3 are
 * durable before anything points to them; the decrements of 5 still wait for the flush after 4. The
 * refcount blocks 3 depends on are still written before it (only their flush is deferred), so a scheme that
 * does not write them at a flush cannot leave the L1 entry's flush without them. eager --order qemu keeps
 * QEMU's flushes (MetadataCache.setDependencyAsQemu turns the shortcut off).
 *
 * Partial write-back (MetadataCache.writeUnit): a dirty table is written by its changed 4 KiB pages only,
 * a run of adjacent ones per write, all of them where the whole table was written before (in its step, after
 * the same hooks and flushes). The rules above are between steps, never within one, so they are untouched.
 * Why it is as safe against a torn write as the whole write: the pages left out hold on the disk exactly what
 * the cache holds (a unit is read from the disk or written whole before it is partly written, and every
 * change to it names the bytes it changed), so writing them would change nothing. A whole-table write is not
 * atomic either: a crash can leave any subset of its pages (or sectors) new, and the states a crash can leave
 * during the partial write are among those. Whatever a crash leaves is the old or the new content of each
 * page, as before; the next flush makes all of them durable, as before.
 *
 * The rules between the caches are carried by the caches' hooks (MetadataCache.dependsOn, flushBeforeWrite),
 * so that an eviction between flushes keeps them too; this module is the only place that sets them.
 *
 * Group commit (open/serving-cache.ts) shares these flushes among the writes a server holds together: the engine
 * runs in writeback, the server issues the writes of its batch, then one flush of the image (writeOut), and
 * only then sends their completions. One flush for the data of every write in the batch (rule 1 → 3: the
 * l2Cache's flushBeforeWrite, set by the first write that needs it, makes the first L2 write-out sync once),
 * then one before their L1 entries and one at the end — not three per write. Why the rules still hold:
 *   - every rule is between what is on the disk and what the caches write next, checked when a cache writes
 *     (at the flush, or at an eviction in the middle of the batch), whatever number of writes filled them: a
 *     sync before an L2 slice covers every data write issued before it, the batch's included, so no entry on
 *     the disk ever points to data that is not durable, and no count is missing under a reference;
 *   - a crash in the middle of the batch leaves a state a writeback run of the same writes could leave
 *     (leaks at worst, as above), and none of the batch's writes had been answered: the server sends no
 *     completion before the flush returns, so "completed ⇒ durable" holds as with a flush per write;
 *   - a later write of the batch into a cluster an earlier one allocated writes into a cluster no entry on
 *     the disk reaches yet: a crash before the flush reads the old data there, and neither write was answered.
 * The crash harness checks it at every crash point (harness/group-commit-crash.ts).
 */
import type { IoPurpose } from "../../io/block-file.js";
import type { AccountingFile } from "../../io/accounting-file.js";
import type { ActiveTables } from "../tables/active-tables.js";
import type { RefcountStore } from "./refcounts.js";
import type { CacheMode } from "../types.js";

export class WriteOrder {
  constructor(
    private readonly file: AccountingFile,
    private readonly cacheMode: CacheMode,
    private readonly tables: ActiveTables,
    /** The refcount store exists only once the image's tables are loaded. */
    private readonly refcounts: () => RefcountStore,
  ) {
    // Slices of tables nothing on the disk reaches yet are written without the flush before 3 (see above).
    tables.l2Cache.unreachable = { any: () => tables.hasUnlinked(), at: (slice) => tables.unlinked(slice) };
  }

  /** Flushes the file unless cache=unsafe, tagged with the structure whose ordering (or durability) it provides. */
  sync(purpose: IoPurpose = "other"): void {
    if (this.cacheMode === "unsafe") return;
    this.file.flush(purpose);
  }

  /** Rule 1 → 3: data just written (guest data, a COW copy, a zeroed cluster) before the L2 entry that maps it. */
  dataBeforeL2(): void {
    this.tables.l2Cache.flushBeforeWrite = true;
  }

  /** Rule 2 → 3: the refcount block counting a new cluster before the L2 (or L1) entry that references it. */
  refcountsBeforeL2(): void {
    this.tables.l2Cache.dependsOn = this.refcounts().cache;
  }

  /** Rule 2 → 3 stated as QEMU 7.2's perform_cow does (eager --order qemu): the data flag first, then QEMU's set_dependency. */
  refcountsBeforeL2AsQemu(): void {
    const l2 = this.tables.l2Cache;
    l2.flushBeforeWrite = true;
    l2.setDependencyAsQemu(this.refcounts().cache);
  }

  /** Rule 3 → 5 stated as QEMU 7.2 does: a decrement applied at once waits for the L2 table that dropped the reference. */
  l2BeforeRefcountsAsQemu(): void {
    this.refcounts().cache.setDependencyAsQemu(this.tables.l2Cache);
  }

  /** Whether data written since the last flush must become durable before the L2 entries that map it. */
  get dataPending(): boolean {
    return this.tables.l2Cache.flushBeforeWrite;
  }

  /**
   * For a scheme that orders its commit itself (the journal): forgets the dependencies between the caches.
   * Returns whether data was waiting to be made durable before the tables (the caller must flush it first).
   */
  takeDependencies(): boolean {
    const l2 = this.tables.l2Cache;
    const data = l2.flushBeforeWrite;
    l2.flushBeforeWrite = false;
    l2.dependsOn = null;
    return data;
  }

  /**
   * The standard write-out, steps 2 to 5 above. `writeRefcounts`: whether refcount blocks are written at a
   * flush (false for schemes that keep them for eviction or close).
   */
  writeOut(writeRefcounts: boolean): void {
    const rc = this.refcounts();
    const l2 = this.tables.l2Cache;
    let last: IoPurpose = "guest-data";
    if (writeRefcounts && rc.cache.hasDirty()) {
      rc.cache.writeDirty();
      last = "refcount";
    }
    if (l2.hasDirty()) {
      // The cache's hooks flush first when the tables depend on refcount blocks or on COW data.
      l2.writeDirty();
      last = "l2";
    }
    if (this.tables.dirtyL1.size > 0) {
      this.sync(last); // the L2 tables (and their counts) before the L1 entries that point to them
      this.tables.writeDirtyL1();
      last = "l1";
    }
    this.sync(last);
    // The tables that dropped references are durable now: the decrements may follow.
    if (rc.hasPending()) rc.applyPending();
  }
}
