/**
 * `journal`: refcounts exact, but every metadata change (L2 slices, L1 entries, refcount entries) first goes
 * to a journal as a checksummed, sequenced transaction; one flush commits it. The tables themselves are
 * written in place lazily: at a checkpoint (when the journal is full, and at close) or when the cache evicts
 * them (after committing). The format and the replay are in journal-format.ts.
 *
 * Ordering: COW data before the transaction that maps it (a flush before the commit when the transaction maps
 * a copied cluster, as eager's "COW data before the L2 entry"); a table is written in place only after the
 * transaction holding its latest change is committed; decrements are applied after the commit that dropped the
 * reference. The journal bit (incompatible) is set from open to close, so QEMU refuses the image while refcow
 * holds it; a clean close checkpoints, frees the journal and leaves plain qcow2.
 */
import { performance } from "node:perf_hooks";
import { encodeL1 } from "../format/l1l2.js";
import { EagerScheme } from "./eager.js";
import {
  encodeJournalExtension,
  encodeTransaction,
  EXT_REFCOW_JOURNAL,
  INCOMPAT_REFCOW_JOURNAL,
  JOURNAL_DATA_START,
  journalHeader,
  type JournalLocation,
  type JournalRecord,
} from "./journal-format.js";
import { hasJournalToReplay, recoverAfterLoad, recoverBeforeLoad } from "./recovery.js";
import type { SchemeDefinition, SchemeHost } from "./scheme.js";

/** Journal size: 1 MiB, at least 2 clusters. */
const JOURNAL_BYTES = 1024 * 1024;

export class JournalScheme extends EagerScheme {
  override readonly name = "journal";
  override readonly flushesRefcounts = false;
  private loc!: JournalLocation;
  private seq = 1n;
  private pos = JOURNAL_DATA_START;
  private readonly pendingL2 = new Set<number>();
  private readonly pendingRc = new Map<number, number>();
  /** L1 entries journaled but not yet written in place. */
  private readonly l1Unwritten = new Set<number>();
  private busy = false;
  /** The table events subscribed to at attach, dropped at close. */
  private unsubscribe: (() => void)[] = [];
  /**
   * Clusters the journal holds records for since the last checkpoint. Were one freed and reused, a replay
   * would write the old record over whatever it held next: they stay in use until the checkpoint.
   */
  private readonly journaled = new Set<number>();
  /** Records of the transactions committed since the journal was last emptied (what a replay would write). */
  private committed: JournalRecord[] = [];
  private readonly costs = { transactions: 0, records: 0, journalBytes: 0, checkpoints: 0, checkpointMs: 0 };

  override attach(host: SchemeHost): void {
    super.attach(host);
    const cs = host.clusterSize;
    const clusters = Math.max(2, Math.ceil(JOURNAL_BYTES / cs));
    const offset = this.refcounts.allocate(clusters);
    this.loc = { offset, clusters };
    // A random first sequence number: bytes left in these clusters by an earlier journal can never pass as
    // transactions of this one.
    this.seq = BigInt(Math.floor(host.random() * 2 ** 48)) + 1n;
    host.file.write(journalHeader(this.seq), offset, "journal");
    this.refcounts.cache.writeDirty();
    host.order.sync("journal");
    host.header.extensions = host.header.extensions.filter((e) => e.type !== EXT_REFCOW_JOURNAL);
    host.header.extensions.push({ type: EXT_REFCOW_JOURNAL, data: encodeJournalExtension(this.loc) });
    // The extension is durable before the bit that makes it matter (the header cluster's write may tear).
    host.writeHeader();
    host.header.incompatibleFeatures |= INCOMPAT_REFCOW_JOURNAL;
    host.writeIncompatibleFeatures();
    // A table unit is written in place only once its latest change is committed.
    this.unsubscribe = [
      host.tables.l2Cache.subscribe({ dirtied: (o) => this.pendingL2.add(o), beforeWrite: () => this.commit() }),
      this.refcounts.subscribe({
        changed: (o, len) => this.pendingRc.set(o, Math.max(len, this.pendingRc.get(o) ?? 0)),
        inUse: (c) => this.journaled.has(c),
      }),
      this.refcounts.cache.subscribe({ beforeWrite: () => this.commit() }),
    ];
  }

  override referenced(): void {}


  flushMetadata(): void {
    this.commit();
    // The tables that dropped references are committed: the decrements follow (in the next transaction).
    if (this.refcounts.hasPending()) this.refcounts.applyPending();
  }

  /** Journals every pending change as one transaction and flushes once; a plain flush when nothing changed. */
  private commit(): void {
    if (this.busy) return;
    const host = this.host;
    const tables = host.tables;
    for (const i of tables.dirtyL1) this.l1Unwritten.add(i);
    const records = this.collect();
    if (records.length === 0) {
      host.order.sync("guest-data");
      return;
    }
    const room = this.loc.clusters * host.clusterSize;
    let txn = encodeTransaction(this.seq, records);
    if (this.pos + txn.length > room) {
      // Full. The tables in the cache mix committed and uncommitted changes, so they cannot go in place
      // yet: the committed transactions go in place first (what a replay would do) and the journal is emptied.
      this.emptyJournal();
      txn = encodeTransaction(this.seq, records);
      if (this.pos + txn.length > room) {
        this.writeInPlaceOrdered();
        return;
      }
    }
    for (const r of records) {
      for (let c = Math.floor(r.offset / host.clusterSize); c <= Math.floor((r.offset + r.data.length - 1) / host.clusterSize); c++) this.journaled.add(c);
    }
    // COW data must be durable before the transaction that maps it, and so must a new or copied L2 table
    // (written whole outside the cache, possibly over a reused cluster) before the L1 entry that links it: a
    // transaction that reached the disk counts as committed whatever else did.
    // The journal orders its commit itself: the caches' dependencies are taken over here.
    const dataPending = host.order.takeDependencies();
    if (dataPending || tables.dirtyL1.size > 0) host.order.sync("guest-data");
    host.file.write(txn, this.loc.offset + this.pos, "journal");
    host.order.sync("journal");
    this.committed.push(...records);
    this.pos += txn.length;
    this.seq++;
    this.costs.transactions++;
    this.costs.records += records.length;
    this.costs.journalBytes += txn.length;
    this.pendingL2.clear();
    this.pendingRc.clear();
    tables.dirtyL1.clear();
  }

  private collect(): JournalRecord[] {
    const { tables, clusterSize: cs } = this.host;
    const records: JournalRecord[] = [];
    for (const slice of this.pendingL2) {
      const buf = tables.l2Cache.peek(slice);
      if (buf) records.push({ offset: slice, data: buf.slice() });
    }
    // Refcount entries, coalesced into runs of neighbouring bytes.
    const rc = [...this.pendingRc].sort((a, b) => a[0] - b[0]);
    for (let i = 0; i < rc.length; ) {
      const start = rc[i][0];
      let end = start + rc[i][1];
      let j = i + 1;
      while (j < rc.length && rc[j][0] <= end + 8 && Math.floor(rc[j][0] / cs) === Math.floor(start / cs)) {
        end = Math.max(end, rc[j][0] + rc[j][1]);
        j++;
      }
      const block = Math.floor(start / cs) * cs;
      const buf = this.refcounts.cache.peek(block);
      if (buf) records.push({ offset: start, data: buf.slice(start - block, end - block) });
      i = j;
    }
    if (tables.dirtyL1.size) {
      for (const i of [...tables.dirtyL1].sort((a, b) => a - b)) {
        const e = new Uint8Array(8);
        encodeL1(new DataView(e.buffer), 0, tables.l1[i], tables.l1Copied[i]);
        records.push({ offset: this.host.header.l1TableOffset + i * 8, data: e });
      }
    }
    return records;
  }

  /**
   * Writes the committed transactions in place (as a replay would), flushes, and starts an empty journal.
   * Uncommitted changes stay in the cache, to be journaled next.
   */
  private emptyJournal(): void {
    const host = this.host;
    this.busy = true;
    try {
      for (const r of this.committed) host.file.write(r.data, r.offset, "journal");
      host.order.sync("journal");
      this.resetJournal();
    } finally {
      this.busy = false;
    }
  }

  /** A new journal header: transactions before `seq` are obsolete; clusters they held records for are free to go. */
  private resetJournal(): void {
    this.host.file.write(journalHeader(this.seq), this.loc.offset, "journal");
    this.host.order.sync("journal");
    this.pos = JOURNAL_DATA_START;
    this.committed = [];
    const freed = [...this.journaled];
    this.journaled.clear();
    for (const c of freed) if (this.refcounts.get(c) === 0) this.refcounts.noteFreed(c);
    this.costs.checkpoints++;
  }

  /**
   * A transaction larger than the whole journal (the journal is empty now): its tables go in place with
   * eager's ordering instead — COW data, then refcount blocks, then L2 tables, then L1 entries, each flushed.
   */
  private writeInPlaceOrdered(): void {
    const { tables, order } = this.host;
    this.busy = true;
    try {
      order.takeDependencies();
      order.sync("guest-data");
      this.refcounts.cache.writeDirty();
      order.sync("refcount");
      tables.l2Cache.writeDirty();
      order.sync("l2");
      for (const i of this.l1Unwritten) tables.dirtyL1.add(i);
      this.l1Unwritten.clear();
      tables.writeDirtyL1();
      order.sync("l1");
    } finally {
      this.busy = false;
    }
    this.pendingL2.clear();
    this.pendingRc.clear();
  }

  /**
   * Writes every table in place and empties the journal. Everything is committed first, so that a crash in
   * the middle replays to the state of the last transaction, whatever part of the in-place writes arrived.
   */
  checkpoint(): void {
    const { tables, order } = this.host;
    const t = performance.now();
    this.commit();
    this.busy = true;
    try {
      order.takeDependencies();
      tables.l2Cache.writeDirty();
      this.refcounts.cache.writeDirty();
      for (const i of this.l1Unwritten) tables.dirtyL1.add(i);
      this.l1Unwritten.clear();
      tables.writeDirtyL1();
      order.sync("journal");
      this.resetJournal();
    } finally {
      this.busy = false;
    }
    this.costs.checkpointMs += performance.now() - t;
  }

  report(): Record<string, number> {
    return { ...this.costs };
  }

  override close(): void {
    const host = this.host;
    this.checkpoint();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    // The journal goes away: the header forgets it first (a crash in between leaks the area, no worse), the
    // bit before the extension.
    host.header.incompatibleFeatures &= ~INCOMPAT_REFCOW_JOURNAL;
    host.writeIncompatibleFeatures();
    host.header.extensions = host.header.extensions.filter((e) => e.type !== EXT_REFCOW_JOURNAL);
    host.writeHeader();
    for (let i = 0; i < this.loc.clusters; i++) this.refcounts.change(this.loc.offset / host.clusterSize + i, -1);
    this.refcounts.cache.writeDirty();
    host.order.sync("refcount");
  }
}

export const JOURNAL_SCHEME: SchemeDefinition = {
  name: "journal",
  make: () => new JournalScheme(),
  features: [{ type: 0, bit: 32, name: "refcow journal" }],
  extensions: [{ type: EXT_REFCOW_JOURNAL, name: "refcow journal" }],
  ioPurposes: [{ purpose: "journal", costGroup: "refcount/owner/journal metadata" }],
  recovery: { pendingBeforeLoad: hasJournalToReplay, beforeLoad: recoverBeforeLoad, afterLoad: recoverAfterLoad },
};
