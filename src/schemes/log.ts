/**
 * `log`: no copy on write on the path of a guest write. A write to a cluster shared with a snapshot writes
 * only the guest's bytes, as one checksummed record appended to a data log inside the image (log-format.ts),
 * and becomes a pending copy (log-pending.ts): old host cluster, new host cluster (allocated at the apply),
 * written ranges with where their bytes are. Reads of the cluster merge the records' bytes over the old
 * cluster, whatever reads (guest reads, the NBD export, convert, snapshot VM state: the engine's read path).
 * The copy of the untouched ranges (the fill), the L2 entries and the refcounts are deferred and done in
 * batches ("apply"): when idle, when the log or the pending state fills, before any structural change
 * (snapshot create/apply/delete, zeroes, discard, resize, compaction), and at close.
 *
 * Cost: writethrough, one record write and the write's one flush — what an in-place write costs; writeback,
 * one record write, made durable by the guest's next flush. The log area is written whole once when it is
 * made, so appending to it never needs a file-system allocation at the flush (writing the guest's bytes into
 * a new cluster instead was measured at 2.7× the in-place cost per write, amortized, on ext4: each new
 * cluster is an allocation the flush must commit). It is made off the write path (`prepare`): when a
 * snapshot is created, and when a writable open finds snapshots (after it has replayed any log left
 * behind); an image without snapshots has no shared cluster to write and never gets one. A read-only open
 * attaches no scheme and writes nothing. The close frees it again, and cuts the file back when the area ends
 * it, so an open and a close without writes leave the file as QEMU expects it and as long as it was.
 *
 * Refcounts are eager's: exact on disk at each apply, which copies (fill: data before the entry; shared
 * instead of copied where the file shares extents, as the engine's own COW: cow-copy.ts), flushes,
 * writes refcounts and tables in eager's order, then starts an empty log. A crash before the end of an apply
 * leaves the log's records, replayed at the next open through the ordinary write path (a record applied twice
 * leaves what once does); the incompatible bit (log-format.ts) is set while the log may hold records not
 * applied, so QEMU refuses such an image. Until an apply the on-disk L2 entry points to the old cluster (the
 * snapshot's data); a crash leaks at worst the new clusters of an apply in progress, as eager's crashes do.
 * In-place writes and writes to unallocated clusters keep the engine's path.
 *
 * Memory: at most `maxPending` pending copies (default 1024: 64 MiB of fill debt with 64 KiB clusters), each
 * one object plus at most one segment per 512-byte sector written; beyond, the scheme applies early. The log
 * is a 16th of the disk, between 64 KiB and 4 MiB (`logBytes`); 4 MiB holds ~900 records of 4 KiB.
 * Both are options of the scheme (LOG_SCHEME_OPTIONS: `pending`, `log-size`; `--scheme-opt` on the command
 * line).
 */
import { performance } from "node:perf_hooks";
import { EagerScheme } from "./eager.js";
import type { PlanOutcome, WritePlan } from "../engine/data/write-plan.js";
import type { SchemeDefinition, SchemeHost } from "./scheme.js";
import { hasDataLogToReplay, recoverDataLog, refuseReadOnlyDataLog } from "./log-recovery.js";
import { UnsupportedFeatureError } from "../format/errors.js";
import { type PendingCopy, PendingState, performRuns } from "./log-pending.js";
import type { ResolvedSchemeOptions, SchemeOptionSpec } from "./scheme-options.js";
import {
  encodeLogExtension,
  encodeLogHeader,
  encodeRecordInto,
  EXT_REFCOW_DATA_LOG,
  INCOMPAT_REFCOW_DATA_LOG,
  LOG_DATA_START,
  type LogLocation,
  MAX_LOG_BYTES,
  RECORD_HEADER,
  recordBytes,
} from "./log-format.js";

/** Size of the data log area: 4 MiB, at least 2 clusters. */
const LOG_BYTES = 4 * 1024 * 1024;
const MIN_LOG_BYTES = 64 * 1024;
const MAX_PENDING = 1024;

export interface LogSchemeOptions {
  /** Size of the log area in bytes (at least 2 clusters). */
  logBytes?: number;
  /** How many pending copies may wait for an apply. */
  maxPending?: number;
}

/** The scheme's options by their command-line names (scheme-options.ts validates them). */
export const LOG_SCHEME_OPTIONS: readonly SchemeOptionSpec[] = [
  { name: "pending", kind: "count", min: 1, max: 1 << 20, help: "pending copies held before an early apply", defaultText: String(MAX_PENDING) },
  // The largest log an open accepts (log-format.ts): a bigger one would make the image unreadable.
  { name: "log-size", kind: "size", min: MIN_LOG_BYTES, max: MAX_LOG_BYTES, help: "size of the data log area", defaultText: "a 16th of the disk, 64 KiB to 4 MiB" },
];

/** LogScheme's constructor options from validated scheme options. */
export function logSchemeOptions(o: ResolvedSchemeOptions): LogSchemeOptions {
  return { maxPending: o["pending"], logBytes: o["log-size"] };
}

export class LogScheme extends EagerScheme {
  override readonly name = "log";
  private loc: LogLocation | undefined;
  private seq = 1n;
  private pos = LOG_DATA_START;
  private pending!: PendingState;
  /** Whether the incompatible bit is set on disk (the log may hold records). */
  private bitSet = false;
  private applying = false;
  private readonly logBytes: number | undefined;
  private readonly maxPending: number;
  private scratch = new Uint8Array(0);
  private readonly costs = { records: 0, logBytes: 0, applies: 0, applied: 0, fillBytes: 0, fillIos: 0, applyMs: 0, earlyApplies: 0 };

  constructor(opts: LogSchemeOptions = {}) {
    super();
    this.logBytes = opts.logBytes;
    this.maxPending = opts.maxPending ?? MAX_PENDING;
  }

  override attach(host: SchemeHost): void {
    if (host.header.version !== 3) {
      throw new UnsupportedFeatureError("the 'log' refcount scheme needs a version 3 (compat=1.1) image: version 2 has no feature bit to protect its data log");
    }
    super.attach(host);
    this.pending = new PendingState(host.clusterSize, this.maxPending);
  }

  /**
   * The active layer may share clusters from now on (a snapshot was created, or the open found snapshots and
   * has replayed any log left behind): the log is made now, so that the first write to a shared cluster
   * costs a record like any other.
   */
  prepare(): void {
    if (this.host.snapshots.list().length) this.ensureLog();
  }

  /**
   * Creates the log (at `prepare`; at a write only if nothing prepared it): its clusters counted, its header
   * written, the extension durable before any record relies on it. A crash before the extension is durable
   * leaks the area (counted, referenced by nothing), as an allocation of eager's does; after it, the next
   * open finds the extension without the bit and frees the area (log-recovery.ts).
   */
  private ensureLog(): void {
    if (this.loc) return;
    const img = this.host;
    const cs = img.clusterSize;
    const bytes = this.logBytes ?? Math.min(LOG_BYTES, Math.max(MIN_LOG_BYTES, Math.floor(img.diskSize / 16)));
    const clusters = Math.max(2, Math.ceil(bytes / cs));
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

  carryOut(plan: WritePlan): PlanOutcome {
    const cs = this.host.clusterSize;
    const held = this.pending.get(plan.gc);
    if (!held && (plan.action !== "allocate" || plan.cowSource !== "cluster" || plan.extended || !plan.oldHost)) return "declined";
    const bytes = recordBytes(plan.data.length);
    // A write too large for the log takes the engine's path (its copy is small beside it), after what is
    // pending, so that nothing held is older than what the engine writes.
    if (bytes > this.room / 4) {
      if (!held) return "declined";
      this.apply();
      return "replan";
    }
    if (this.pos + bytes > this.room) {
      // The log is full: everything is applied, and the engine plans this write again on the tables as
      // they are now (the cluster it maps may be the new one, written in place).
      this.apply();
      return "replan";
    }
    if (!held) this.pending.begin(plan.gc, plan.oldHost, -1);
    const at = this.append(plan.gc * cs + plan.inCluster, plan.data);
    this.pending.written(plan.gc, plan.inCluster, plan.data.length, at);
    if (this.pending.size > this.maxPending) {
      this.costs.earlyApplies++;
      this.apply();
    }
    return "carried";
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
   * Appends one record (the caller made sure it fits) and returns the host offset of its data. Sets the
   * incompatible bit first when the log was empty (both reach the disk with the caller's flush).
   */
  private append(guest: number, data: Uint8Array): number {
    const img = this.host;
    if (!this.bitSet) {
      // The extension is durable since the log was made; the bit (8 bytes in the first sector) goes with
      // this write's flush: a record is committed by the flush after it, and that flush carries the bit.
      img.header.incompatibleFeatures |= INCOMPAT_REFCOW_DATA_LOG;
      this.writeBits();
      this.bitSet = true;
    }
    // One buffer for every record (written at once, never kept): no allocation of a zeroed record per write.
    if (this.scratch.length < recordBytes(data.length)) this.scratch = new Uint8Array(recordBytes(data.length));
    const rec = encodeRecordInto(this.scratch, this.seq++, guest, data);
    const at = this.loc!.offset + this.pos;
    img.file.write(rec, at, "data-log");
    this.pos += rec.length;
    this.costs.records++;
    this.costs.logBytes += rec.length;
    return at + RECORD_HEADER;
  }

  /** The incompatible feature field alone, not flushed (the caller's next flush carries it). */
  private writeBits(): void {
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, this.host.header.incompatibleFeatures);
    this.host.file.write(field, 72, "header");
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
        // New clusters in the order of the old ones: where the old clusters are neighbours the new ones are
        // too, and the fill of one cluster's tail and the next one's head is one copy (or one clone).
        for (const p of [...copies].sort((a, b) => a.oldHost - b.oldHost)) if (p.newHost < 0) p.newHost = this.allocateNew();
        const shared = this.shareWhole(copies);
        const runs = PendingState.fillRuns(copies.filter((p) => !shared.has(p)), cs).concat(PendingState.fillRuns([...shared], cs, undefined, false));
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

  /**
   * Where the file shares extents (XFS with reflink, btrfs: cow-copy.ts), each new cluster is made to share
   * its old one whole — neighbours in one clone, as the apply allocates them in the old ones' order — so that
   * only the guest's bytes remain to be copied over it from the log. Returns the copies shared so. A copy
   * whose new cluster already holds some of the guest's bytes, or that cannot be shared whole, is left to
   * the fill.
   */
  private shareWhole(copies: readonly PendingCopy[]): Set<PendingCopy> {
    const cs = this.host.clusterSize;
    const shared = new Set<PendingCopy>();
    const candidates = copies.filter((p) => p.ranges.segs.every((s) => s.host < p.newHost || s.host >= p.newHost + cs)).sort((a, b) => a.newHost - b.newHost);
    for (let i = 0; i < candidates.length; ) {
      let j = i + 1;
      while (j < candidates.length && j - i < 256 && candidates[j]!.oldHost === candidates[j - 1]!.oldHost + cs && candidates[j]!.newHost === candidates[j - 1]!.newHost + cs) j++;
      const first = candidates[i]!;
      // Shared in part only (an old cluster ending past the end of the file): the fill copies those whole,
      // over what was shared.
      if (this.host.shareCopy({ src: first.oldHost, dst: first.newHost, length: (j - i) * cs }).length === 0) {
        for (let k = i; k < j; k++) shared.add(candidates[k]!);
      }
      i = j;
    }
    return shared;
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
    // The log goes away: the bit first (durable), then the extension and its clusters' counts, with one flush
    // (writeHeader's). Either may reach the disk without the other: the extension gone with the counts not
    // yet zero leaks the area; the counts zero with the extension still there is an extension whose area
    // the next open frees again, skipping what is free already or referenced (log-recovery.ts).
    if (img.header.incompatibleFeatures & INCOMPAT_REFCOW_DATA_LOG) {
      img.header.incompatibleFeatures &= ~INCOMPAT_REFCOW_DATA_LOG;
      img.writeIncompatibleFeatures();
    }
    img.header.extensions = img.header.extensions.filter((e) => e.type !== EXT_REFCOW_DATA_LOG);
    const { offset, clusters } = this.loc;
    for (let i = 0; i < clusters; i++) this.refcounts.change(offset / img.clusterSize + i, -1);
    this.refcounts.cache.writeDirty();
    img.writeHeader();
    this.loc = undefined;
    // An area that ends the file (made at the end, nothing allocated after it) goes with the file's tail, once
    // its counts are durably zero: a crash before the cut leaves free clusters at the end, which QEMU accepts.
    if (offset + clusters * img.clusterSize >= img.file.size()) {
      img.truncateFile(offset);
    }
  }
}

export const LOG_SCHEME: SchemeDefinition = {
  name: "log",
  make: (o) => new LogScheme(logSchemeOptions(o)),
  options: LOG_SCHEME_OPTIONS,
  features: [{ type: 0, bit: 33, name: "refcow data log" }],
  extensions: [{ type: EXT_REFCOW_DATA_LOG, name: "refcow data log" }],
  // The record of a post-snapshot write holds the guest's bytes: it is the guest write, made elsewhere. The
  // log's area is read and made with the journal's purpose.
  ioPurposes: [
    { purpose: "data-log", costGroup: "guest data" },
    { purpose: "journal", costGroup: "refcount/owner/journal metadata" },
  ],
  recovery: { pendingAfterAttach: hasDataLogToReplay, afterAttach: (host) => void recoverDataLog(host), refuseReadOnly: refuseReadOnlyDataLog },
};
