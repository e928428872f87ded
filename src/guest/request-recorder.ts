/**
 * RequestRecorder: the measurement of the guest's disk requests, for both disk devices (the IDE's
 * HdaAdapter and the virtio-blk device, src/v86). A device reports to it as its observer
 * (src/v86/disk-device.ts); the recorder labels each request with the `phase` current at its submission
 * (the runner sets it), keeps one record per request and sums each phase.
 *
 * Records: submission time, the time queued behind earlier requests (IDE: one request at a time; virtio:
 * 0), submit→complete latency, the queue depth met, and, when the disk reports them, its own service time
 * and ring time — so that the emulator's, the device's and the ring's shares of the latency can be told
 * apart (decomposition.ts). A virtio-blk record also has when the disk resolved the request, when the
 * guest was told, its virtio type and status. Records (and so traces) hold the reads, writes and flushes
 * that succeeded; virtio-blk's other requests (get-id, discards, write-zeroes, failures) are counted only.
 *
 * Per phase: requests, bytes and summed latency per op, the most requests in flight at once, and for
 * virtio-blk the queue notifications, used-ring publications (batches), interrupts, discards,
 * write-zeroes and errors.
 */
import type { DiskOp, DiskRequestObserver, RequestCompletion, RequestSubmission } from "../v86/disk-device.js";
import { S_OK, T_DISCARD, T_FLUSH, T_IN, T_OUT, T_WRITE_ZEROES } from "../v86/virtio-blk.js";

export type { DiskOp };

export interface DiskRequestRecord {
  op: DiskOp;
  /** Byte offset (0 for a flush). */
  offset: number;
  /** Byte length (0 for a flush). */
  length: number;
  /** The recorder's `phase` when the request was submitted. */
  phase: string;
  /** performance.now() at submission, in ms. */
  submitted: number;
  /** Time spent queued behind earlier requests, in ms. */
  queuedMs: number;
  /** Submission to completion, in ms (queue wait included). */
  latencyMs: number;
  /** The backend's own time for the request, in ms, when the disk's completion carries it (DiskTiming). */
  serviceMs?: number;
  /** Submission to completion at the disk's transport (the DiskClient), in ms, when the disk reports it. */
  ringMs?: number;
  /** A write whose data v86 passed in its reusable PIO buffer (absent: DMA, or not known). */
  pio?: true;
  /** Requests outstanding at the device when this one was submitted, itself included. */
  depth?: number;
}

/** A virtio-blk request record: the IDE record plus when the disk and the guest saw it complete. */
export interface VirtioRequestRecord extends DiskRequestRecord {
  depth: number;
  /** performance.now() when the disk resolved the request (for a flush: the engine's flush done), ms. */
  diskDone: number;
  /** performance.now() when the guest was told (used ring written), ms. */
  completed: number;
  /** Virtio request type (T_*), for the record kinds DiskOp cannot name (discard, write-zeroes, get-id). */
  type: number;
  /** Status the guest got. */
  status: number;
}

export interface PhaseSummary {
  reads: number;
  writes: number;
  flushes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Sum of submit→complete latencies per op, in ms. */
  readMs: number;
  writeMs: number;
  flushMs: number;
  /** Most requests the device had outstanding at once (queued or running), in this phase. */
  maxInFlight: number;
}

export interface VirtioPhaseSummary extends PhaseSummary {
  /** Interrupts raised, and used-ring publications (batches of completions), while this phase was current. */
  interrupts: number;
  batches: number;
  /** The driver's queue notifications (writes of queue notify) while this phase was current. */
  notifies: number;
  discards: number;
  writeZeroes: number;
  errors: number;
}

export interface RequestRecorderOptions {
  /** The device is virtio-blk: its phase summaries carry the virtio counters (default false: IDE). */
  virtio?: boolean;
  /** Keep per-request records in `records` (default true). */
  record?: boolean;
  /** Stop keeping records after this many (counters go on; default 1,000,000). */
  maxRecords?: number;
}

export class RequestRecorder implements DiskRequestObserver<string> {
  /** Label recorded with each request (the runner sets it: "boot", "workload", ...). */
  phase = "boot";
  /** Per-request records (see `takeRecords`). */
  records: DiskRequestRecord[] = [];
  readonly phases = new Map<string, PhaseSummary>();
  /** IDE writes v86 passed through its PIO buffer / as a DMA transfer (when the adapter can tell). */
  pioWrites = 0;
  dmaWrites = 0;
  readonly virtio: boolean;
  private readonly keepRecords: boolean;
  private readonly maxRecords: number;

  constructor(options: RequestRecorderOptions = {}) {
    this.virtio = options.virtio ?? false;
    this.keepRecords = options.record ?? true;
    this.maxRecords = options.maxRecords ?? 1_000_000;
  }

  submitted(req: RequestSubmission): string {
    if (req.pio === true) this.pioWrites++;
    else if (req.pio === false) this.dmaWrites++;
    const s = this.summary(this.phase);
    if (req.depth > s.maxInFlight) s.maxInFlight = req.depth;
    return this.phase;
  }

  completed(phase: string, req: RequestCompletion): void {
    if (req.virtio) this.virtioCompleted(phase, req, req.virtio.type, req.virtio.status);
    else this.ideCompleted(phase, req);
  }

  notified(): void {
    this.virtioSummary(this.phase).notifies++;
  }

  published(interrupted: boolean): void {
    const s = this.virtioSummary(this.phase);
    s.batches++;
    if (interrupted) s.interrupts++;
  }

  summary(phase: string): PhaseSummary {
    let s = this.phases.get(phase);
    if (!s) {
      s = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0, readMs: 0, writeMs: 0, flushMs: 0, maxInFlight: 0 };
      if (this.virtio) Object.assign(s, { interrupts: 0, batches: 0, notifies: 0, discards: 0, writeZeroes: 0, errors: 0 });
      this.phases.set(phase, s);
    }
    return s;
  }

  /** Returns the records kept so far and starts a new list. */
  takeRecords(): DiskRequestRecord[] {
    const r = this.records;
    this.records = [];
    return r;
  }

  private virtioSummary(phase: string): VirtioPhaseSummary {
    if (!this.virtio) throw new Error("a virtio-blk device reports to a recorder made for IDE (new RequestRecorder({ virtio: true }))");
    return this.summary(phase) as VirtioPhaseSummary;
  }

  private keeping(): boolean {
    return this.keepRecords && this.records.length < this.maxRecords;
  }

  /** Only requests that succeeded reach here (see DiskRequestObserver). */
  private ideCompleted(phase: string, req: RequestCompletion): void {
    const latency = req.completed - req.submitted;
    const s = this.summary(phase);
    if (req.op === "read") {
      s.reads++;
      s.bytesRead += req.length;
      s.readMs += latency;
    } else if (req.op === "write") {
      s.writes++;
      s.bytesWritten += req.length;
      s.writeMs += latency;
    } else {
      s.flushes++;
      s.flushMs += latency;
    }
    if (!this.keeping()) return;
    this.records.push({
      op: req.op,
      offset: req.offset,
      length: req.length,
      phase,
      submitted: req.submitted,
      queuedMs: req.started - req.submitted,
      latencyMs: latency,
      ...(req.serviceMs !== undefined ? { serviceMs: req.serviceMs } : {}),
      ...(req.ringMs !== undefined ? { ringMs: req.ringMs } : {}),
      ...(req.pio ? { pio: true as const } : {}),
      depth: req.depth,
    });
  }

  private virtioCompleted(phase: string, req: RequestCompletion, type: number, status: number): void {
    const s = this.virtioSummary(phase);
    const latency = req.completed - req.submitted;
    if (status !== S_OK) s.errors++;
    else if (type === T_IN) {
      s.reads++;
      s.bytesRead += req.length;
      s.readMs += latency;
    } else if (type === T_OUT) {
      s.writes++;
      s.bytesWritten += req.length;
      s.writeMs += latency;
    } else if (type === T_FLUSH) {
      s.flushes++;
      s.flushMs += latency;
    } else if (type === T_DISCARD) s.discards++;
    else if (type === T_WRITE_ZEROES) s.writeZeroes++;
    const recordable = status === S_OK && (type === T_FLUSH || ((type === T_IN || type === T_OUT) && req.length > 0));
    if (!recordable || !this.keeping()) return;
    const record: VirtioRequestRecord = {
      op: req.op,
      offset: req.offset,
      length: req.length,
      phase,
      submitted: req.submitted,
      queuedMs: 0,
      latencyMs: latency,
      ...(req.serviceMs !== undefined ? { serviceMs: req.serviceMs } : {}),
      depth: req.depth,
      diskDone: req.diskDone,
      completed: req.completed,
      type,
      status,
    };
    this.records.push(record);
  }
}
