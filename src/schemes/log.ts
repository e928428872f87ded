/**
 * `log`: no copy on write on the path of a guest write. A write to a cluster shared with a snapshot writes
 * only the guest's bytes and becomes a pending copy (log-pending.ts); the copy of the untouched ranges and the
 * L2 entry and refcount changes are deferred and done in batches ("apply"): when idle, when the data log or
 * the pending state fills, before any structural change (snapshot, zeroes, discard, resize), and at close.
 * Refcounts are eager's: exact on disk at each apply (a crash leaks at worst the new clusters of an apply in
 * progress, as eager's crashes do).
 *
 * Where the guest's bytes go:
 *  - writeback (delayed COW): into the new cluster, allocated at the first write. At the guest's flush the
 *    bytes written since the last flush are appended to the data log (one write of consecutive records) and
 *    flushed with it, so the flush does not wait for fills; until the apply, nothing but the log makes them
 *    reachable after a crash.
 *  - writethrough: as one checksummed record in the data log, made durable by the write's one flush (the
 *    cost of an in-place write); the new cluster is allocated at the apply.
 * Reads of a cluster with a pending copy merge the guest's bytes (new cluster or record) over the old
 * cluster, whatever reads: guest reads, the NBD export, convert, map's data (the engine's read path).
 *
 * Crash: the on-disk L2 entry points to the old cluster (the snapshot's data) until the apply, which copies
 * (fill: data before the entry), flushes, writes refcounts and tables in eager's order, then starts an empty
 * log. A crash before the end of an apply leaves the log's records, replayed at the next open through the
 * ordinary write path (replaying a record twice is harmless); the incompatible bit (log-format.ts) is set
 * while the log may hold records not applied, so QEMU refuses such an image. Unflushed writes are lost, as in
 * any writeback cache. In-place writes and writes to unallocated clusters keep the engine's path.
 *
 * Memory: at most `maxPending` pending copies (default 1024: 64 MiB of fill debt with 64 KiB clusters), each
 * one object plus at most one segment per 512-byte sector written; beyond, the scheme applies early.
 */
import { performance } from "node:perf_hooks";
import { EagerScheme } from "./eager.js";
import type { WritePlan } from "../engine/write-plan.js";
import type { SchemeHost } from "./scheme.js";
import { UnsupportedFeatureError } from "../format/errors.js";
import { PendingState, performRuns } from "./log-pending.js";
import {
  encodeLogExtension,
  encodeLogHeader,
  encodeRecord,
  EXT_REFCOW_DATA_LOG,
  INCOMPAT_REFCOW_DATA_LOG,
  LOG_DATA_START,
  type LogLocation,
  RECORD_HEADER,
  recordBytes,
} from "./log-format.js";

/** Size of the data log area: 4 MiB, at least 2 clusters. */
const LOG_BYTES = 4 * 1024 * 1024;
const MAX_PENDING = 1024;

export interface LogSchemeOptions {
  logBytes?: number;
  maxPending?: number;
  /**
   * Where the guest's bytes of a post-snapshot write go until the apply: "log" (default, both cache modes; a
   * writeback record is made durable by the guest's next flush) or "cluster" (writeback only: the new
   * cluster, logged at the guest's flush). "cluster" costs a file-system allocation per new cluster at each
   * flush (measured: 2.7× the in-place cost per write, amortized, on ext4), "log" writes into the log area,
   * allocated and written once when the log is made.
   */
  into?: "log" | "cluster";
}

export class LogScheme extends EagerScheme {
  override readonly name = "log";
  private loc: LogLocation | undefined;
  private seq = 1n;
  private pos = LOG_DATA_START;
  private pending!: PendingState;
  /** Writes into new clusters not yet in the log (writeback): guest offset and length, in order. */
  private unlogged: { gc: number; inCluster: number; length: number }[] = [];
  /** Whether the incompatible bit is set on disk (the log may hold records). */
  private bitSet = false;
  private applying = false;
  private readonly logBytes: number;
  private readonly maxPending: number;
  private into: "log" | "cluster" = "log";
  private readonly intoOption: "log" | "cluster";
  private readonly costs = { records: 0, logBytes: 0, applies: 0, applied: 0, fillBytes: 0, fillIos: 0, applyMs: 0, earlyApplies: 0 };

  constructor(opts: LogSchemeOptions = {}) {
    super();
    this.logBytes = opts.logBytes ?? LOG_BYTES;
    this.maxPending = opts.maxPending ?? MAX_PENDING;
    this.intoOption = opts.into ?? "log";
  }

  override attach(host: SchemeHost): void {
    if (host.header.version !== 3) {
      throw new UnsupportedFeatureError("the 'log' refcount scheme needs a version 3 (compat=1.1) image: version 2 has no feature bit to protect its data log");
    }
    super.attach(host);
    this.pending = new PendingState(host.clusterSize, this.maxPending);
    this.into = host.cacheMode === "writeback" ? this.intoOption : "log";
  }

  /**
   * Creates the log at the first write that needs it (after the open has replayed any log left behind):
   * its clusters counted, its header written, the extension durable before any record relies on it.
   */
  private ensureLog(): void {
    if (this.loc) return;
    const img = this.host;
    const cs = img.clusterSize;
    const clusters = Math.max(2, Math.ceil(this.logBytes / cs));
    const offset = this.refcounts.allocate(clusters);
    this.loc = { offset, clusters };
    // A random first sequence number: records an earlier log left in these clusters never pass as this one's.
    this.seq = BigInt(Math.floor(img.random() * 2 ** 48)) + 1n;
    // The whole area is written once (zeroes), so that appending a record later is a write into allocated
    // blocks: a flush after it costs what one after an in-place write does (no file-system allocation).
    const zero = new Uint8Array(Math.min(clusters * cs, 1 << 20));
    for (let pos = 0; pos < clusters * cs; pos += zero.length) img.file.write(zero.subarray(0, Math.min(zero.length, clusters * cs - pos)), offset + pos, "journal");
    img.file.write(encodeLogHeader(this.seq), offset, "journal");
    this.refcounts.cache.writeDirty();
    img.order.sync("journal");
    img.header.extensions = img.header.extensions.filter((e) => e.type !== EXT_REFCOW_DATA_LOG);
    img.header.extensions.push({ type: EXT_REFCOW_DATA_LOG, data: encodeLogExtension(this.loc) });
    img.writeHeader();
  }

  private get room(): number {
    this.ensureLog();
    return this.loc!.clusters * this.host.clusterSize;
  }

  // ------------------------------------------------------------------------------------------ the write plan

  carryOut(plan: WritePlan): boolean {
    const img = this.host;
    const cs = img.clusterSize;
    let p = this.pending.get(plan.gc);
    if (!p) {
      if (plan.action !== "allocate" || plan.cowSource !== "cluster" || plan.extended || !plan.oldHost) return false;
      // A write too large for the log takes the engine's path (its copy is small beside it), after the
      // pending state, so that nothing it holds is older than what the engine writes.
      if (recordBytes(plan.data.length) > this.room / 4) return false;
    } else if (recordBytes(plan.data.length) > this.room / 4) {
      this.apply();
      return false;
    }
    if (!p) p = this.pending.begin(plan.gc, plan.oldHost, this.into === "log" ? -1 : this.allocateNew());
    if (this.into === "log") {
      const at = this.append([{ guest: plan.gc * cs + plan.inCluster, data: plan.data }]);
      this.pending.written(plan.gc, plan.inCluster, plan.data.length, at[0]!);
    } else {
      if (p.newHost < 0) p.newHost = this.allocateNew();
      img.file.write(plan.data, p.newHost + plan.inCluster, "guest-data");
      this.pending.written(plan.gc, plan.inCluster, plan.data.length, p.newHost + plan.inCluster);
      this.unlogged.push({ gc: plan.gc, inCluster: plan.inCluster, length: plan.data.length });
    }
    if (this.pending.size > this.maxPending) {
      this.costs.earlyApplies++;
      this.apply();
    }
    return true;
  }

  private allocateNew(): number {
    return this.refcounts.allocate(1);
  }

  /** Serves reads of clusters with a pending copy: the guest's bytes over the old cluster. */
  readHeld(gc: number, inCluster: number, dst: Uint8Array): boolean {
    const p = this.pending.get(gc);
    if (!p) return false;
    const file = this.host.file;
    this.pending.read(p, inCluster, dst, (buf, off) => file.read(buf, off, "guest-data"));
    return true;
  }

  // ----------------------------------------------------------------------------------------------- the log

  /**
   * Appends records (one write: they are consecutive) and returns the host offset of each one's data. Sets
   * the incompatible bit first when the log was empty (both reach the disk with the caller's flush). A log
   * too full to take them is applied and emptied first.
   */
  private append(items: { guest: number; data: Uint8Array }[]): number[] {
    const img = this.host;
    let total = 0;
    for (const it of items) total += recordBytes(it.data.length);
    if (this.pos + total > this.room) {
      this.apply();
      if (this.pos + total > this.room) throw new Error(`data log records of ${total} bytes do not fit a log of ${this.room} bytes`);
    }
    if (!this.bitSet) {
      // The extension is durable since attach; the bit (8 bytes in the first sector) goes with this write's flush.
      img.header.incompatibleFeatures |= INCOMPAT_REFCOW_DATA_LOG;
      this.writeBits();
      this.bitSet = true;
    }
    const buf = new Uint8Array(total);
    const at: number[] = [];
    let p = 0;
    for (const it of items) {
      const rec = encodeRecord(this.seq++, it.guest, it.data);
      buf.set(rec, p);
      at.push(this.loc!.offset + this.pos + p + RECORD_HEADER);
      p += rec.length;
    }
    img.file.write(buf, this.loc!.offset + this.pos, "journal");
    this.pos += total;
    this.costs.records += items.length;
    this.costs.logBytes += total;
    return at;
  }

  /** The incompatible feature field alone, not flushed (the caller's next flush carries it). */
  private writeBits(): void {
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, this.host.header.incompatibleFeatures);
    this.host.file.write(field, 72, "header");
  }

  /** At a guest flush (writeback): what was written into new clusters since the last one goes to the log. */
  beforeFlush(): void {
    if (this.applying || this.unlogged.length === 0) return;
    const img = this.host;
    const cs = img.clusterSize;
    const items: { guest: number; data: Uint8Array }[] = [];
    for (const u of this.unlogged) {
      const p = this.pending.get(u.gc);
      if (!p) continue; // applied since
      const data = new Uint8Array(u.length);
      img.file.read(data, p.newHost + u.inCluster, "journal");
      items.push({ guest: u.gc * cs + u.inCluster, data });
    }
    this.unlogged = [];
    if (!items.length) return;
    let total = 0;
    for (const it of items) total += recordBytes(it.data.length);
    if (this.pos + total > this.room || total > this.room / 2) {
      // More than the log takes: the flush waits for the apply instead.
      this.apply();
      return;
    }
    this.append(items);
  }

  // --------------------------------------------------------------------------------------------- the apply

  /**
   * Applies everything pending: the fill (coalesced), a flush, the L2 entries and refcounts through the
   * engine's flush ordering, then an empty log. A crash anywhere in it replays the log at the next open.
   */
  apply(): void {
    if (this.applying) return;
    const img = this.host;
    const cs = img.clusterSize;
    const t = performance.now();
    this.applying = true;
    try {
      const copies = this.pending.all();
      if (copies.length) {
        for (const p of copies) if (p.newHost < 0) p.newHost = this.allocateNew();
        const runs = PendingState.fillRuns(copies, cs);
        performRuns(
          runs,
          (buf, off) => {
            img.file.read(buf, off, "cow-read");
            this.costs.fillIos++;
          },
          (buf, off) => {
            img.file.write(buf, off, "cow-write");
            this.costs.fillIos++;
            this.costs.fillBytes += buf.length;
          },
        );
        // The links set the L2 cache's "data first" flag: the engine's flush syncs the fill before the tables.
        for (const p of copies) img.link(p.gc, p.newHost);
        this.pending.clear();
        this.unlogged = [];
        img.flushMetadata();
        this.costs.applies++;
        this.costs.applied += copies.length;
      }
      this.resetLog();
    } finally {
      this.applying = false;
    }
    this.costs.applyMs += performance.now() - t;
  }

  /** Starts an empty log (a new first sequence number) and clears the bit; both ride the next flush. */
  private resetLog(): void {
    if (!this.loc) return;
    if (this.pos === LOG_DATA_START && !this.bitSet) return;
    const img = this.host;
    this.seq += 1n + BigInt(Math.floor(img.random() * 1024));
    img.file.write(encodeLogHeader(this.seq), this.loc!.offset, "journal");
    this.pos = LOG_DATA_START;
    if (this.bitSet) {
      img.header.incompatibleFeatures &= ~INCOMPAT_REFCOW_DATA_LOG;
      this.writeBits();
      this.bitSet = false;
    }
  }

  /** Before a structural change (snapshot, zeroes, discard, resize, compaction): nothing pending. */
  settle(): void {
    if (this.pending.size || this.pos > LOG_DATA_START) this.apply();
    if (this.bitSet) this.host.order.sync("journal");
  }

  /** Work for idle time: one apply. Returns whether work remains. */
  idle(): boolean {
    if (this.pending.size === 0) return false;
    this.apply();
    this.host.order.sync("journal");
    return false;
  }

  hasIdleWork(): boolean {
    return this.pending.size > 0;
  }

  /** Applies everything and flushes: every acknowledged write is in place and durable, the log empty. */
  checkpoint(): void {
    this.apply();
    this.host.flushMetadata();
  }

  report(): Record<string, number> {
    return { ...this.costs, pending: this.pending.size };
  }

  override close(): void {
    const img = this.host;
    this.apply();
    img.flushMetadata();
    if (!this.loc) return;
    // The log goes away: the bit first (durable), then the extension, then its clusters.
    if (img.header.incompatibleFeatures & INCOMPAT_REFCOW_DATA_LOG) {
      img.header.incompatibleFeatures &= ~INCOMPAT_REFCOW_DATA_LOG;
      img.writeIncompatibleFeatures();
    }
    img.header.extensions = img.header.extensions.filter((e) => e.type !== EXT_REFCOW_DATA_LOG);
    img.writeHeader();
    for (let i = 0; i < this.loc.clusters; i++) this.refcounts.change(this.loc!.offset / img.clusterSize + i, -1);
    this.refcounts.cache.writeDirty();
    img.order.sync("refcount");
  }
}
