/**
 * The records a benchmark run leaves in results.json and the report reads back: result rows (one per source,
 * cache mode, workload and phase, with their per-round figures), fio's rows, the sources left out or failed,
 * the guest runs, and how a source is named. The runners in src/bench write them; nothing here runs anything.
 */
import type { AllocPolicyName, CacheMode, FlushOrder } from "../engine/types.js";

/** How the load generator reached the image. */
export type Transport = "ring" | "in-process" | "nbd" | "direct";

/** The write workloads' request patterns (src/bench/load.ts generates them). */
export type Pattern = "rand4k-per-cluster" | "seq";

/** The identity of a source: which engine or file, under which scheme, reached through which transport. */
export interface SourceSpec {
  source: "refcow" | "qemu" | "raw";
  /** refcow's scheme; QEMU's `std` or `lazy_refcounts`; `none` for the raw file. */
  scheme: string;
  /** The eager scheme's flush order, when not refcow's own. */
  order?: FlushOrder;
  alloc?: AllocPolicyName;
  transport: Transport;
}

/** One line naming a source, as the progress and the report print it. */
export function sourceName(s: Pick<SourceSpec, "source" | "scheme" | "order" | "alloc" | "transport">): string {
  const who =
    s.source === "qemu"
      ? s.scheme === "std"
        ? "QEMU"
        : "QEMU lazy_refcounts"
      : s.source === "raw"
        ? "raw file"
        : `${s.scheme}${s.order === "qemu" ? " --order qemu" : ""}${s.alloc && s.alloc !== "first-fit" ? `+${s.alloc}` : ""}`;
  return `${who} (${s.transport})`;
}

export interface PurposeRow {
  ops: number;
  bytes: number;
  flushes: number;
  us: number;
  /** The part of `us` spent in flushes. */
  flush_us?: number;
}

/** One round's figures of a row (µs): what ratios are computed from, round by round. */
export interface RepFigures {
  median_us: number;
  p99_us: number;
  amortized_us: number;
  /** (Phase wall time + close) ÷ writes. */
  amortized_close_us?: number;
}

export interface ResultRow {
  source: "refcow" | "qemu" | "raw";
  scheme: string;
  /** eager's flush order when it is QEMU's (`--order qemu`). */
  order?: FlushOrder;
  /** Allocation policy (refcow rows). */
  alloc?: AllocPolicyName;
  /** How the load generator reached the image: `ring`, `in-process`, `nbd` or `direct` (absent for guest rows). */
  transport?: Transport;
  cache: CacheMode | "n/a";
  workload: string;
  phase: string;
  /** Per-request write latency (flushes excluded): median over rounds of each round's median, and its range. */
  median_us: number;
  median_us_min?: number;
  median_us_max?: number;
  p90_us?: number;
  /** Median over rounds of each round's p99, and its range. */
  p99_us: number | null;
  p99_us_min?: number;
  p99_us_max?: number;
  p999_us?: number;
  max_us?: number;
  /** Phase wall time ÷ writes (flush waits included), median over rounds, and its range. */
  amortized_us: number;
  amortized_us_min?: number;
  amortized_us_max?: number;
  /** Median latency of the load generator's flushes (writeback). */
  flush_median_us?: number;
  runs: number;
  /** Per-round figures, in round order. */
  reps?: RepFigures[];
  size_bytes?: number;
  /** Per-guest-write I/O by purpose (refcow ring and in-process rows), mean over rounds. */
  breakdown?: Record<string, PurposeRow>;
  /** Latency at the percentiles 0, 1, ..., 100 (µs) of all rounds pooled, for the CDF plots. */
  cdf_us?: number[];
  /** `qemu-img check` of the images this source left, when not clean. */
  check?: string;
  /** Close after the phase (µs), median over rounds: deferred work (a scheme's fills) done at close. */
  close_us?: number;
  /** (Phase wall time + close) ÷ writes, median over rounds, and its range: amortized with everything deferred included. */
  amortized_close_us?: number;
  amortized_close_us_min?: number;
  amortized_close_us_max?: number;
  /** Bytes written to the host file per guest write during the phase (refcow ring and in-process rows). */
  host_write_bytes?: number;
}

/** One round of fio on one cell. */
export interface FioRep {
  iops: number;
  clat_p50_us: number;
  clat_p99_us: number;
}

/**
 * fio's figures for one cell (the cross-check, or the queue-depth benchmark): each the median over rounds of
 * the per-round figure, with its range; `reps` keeps the rounds, in round order, for ratios by round.
 */
export interface FioRow {
  source: "refcow" | "qemu" | "raw";
  scheme: string;
  transport: "nbd";
  cache: CacheMode;
  workload: Pattern;
  phase: string;
  iodepth: number;
  writes: number;
  iops: number;
  iops_min?: number;
  iops_max?: number;
  clat_p50_us: number;
  clat_p50_us_min?: number;
  clat_p50_us_max?: number;
  clat_p99_us: number;
  runs?: number;
  reps?: FioRep[];
}

/** A source the run left out, and why. */
export interface MissingSource {
  source: string;
  reason: string;
  /** Left out because the command line asked for it (--no-qemu): not a failure. */
  asked?: boolean;
}

export interface BenchResults {
  rows: ResultRow[];
  fio: FioRow[];
  missing: MissingSource[];
  /** Sources that threw, or left an image qemu-img check did not pass: their figures are not used. */
  failed: FailedSource[];
  /** The run was one shard of the matrix (`--shard i/N`): which, and its cells. */
  shard?: ShardRecord;
}

/** One shard of the matrix (`refcow bench --shard i/N`; src/bench/shard.ts). */
export interface Shard {
  /** 1-based: 1..count. */
  index: number;
  count: number;
}

/** What a shard's results.json records: which shard, the cells it owned, and every cell of the matrix. */
export interface ShardRecord extends Shard {
  cells: string[];
  matrix: string[];
}

/** A merge of shards (`refcow report DIR...`): how many there were and which were merged. */
export interface MergedShards {
  count: number;
  merged: number[];
  /** Cells of the matrix no merged shard ran (their shard's folder was not given). */
  missingCells: string[];
}

/**
 * The phases of the write workloads: `in-place` overwrites allocated clusters; `post-snapshot` writes the
 * same clusters right after an internal snapshot (every write hits a shared cluster); `after-delete`
 * deletes the snapshot, then writes clusters never written before, so every write allocates while the
 * delete has left free clusters inside the file (this is where the allocation policies differ).
 */
export const PHASES = ["in-place", "post-snapshot", "after-delete"] as const;

/** The part of a run a failure happened in. */
export type FailurePart = "write matrix" | "trace replay" | "fio" | "snapshot-ops" | "guest" | "host matrix";

export interface FailedSource {
  part: FailurePart;
  /** A guest run's emulator and backend (GuestResult's), when not v86 on refcow. */
  emulator?: "v86" | "qemu";
  backend?: string;
  /** The source as the report names it: "eager (ring)", "QEMU (nbd)", "owner (guest)". */
  name: string;
  source?: "refcow" | "qemu" | "raw";
  scheme?: string;
  order?: FlushOrder;
  alloc?: AllocPolicyName;
  transport?: Transport;
  cache?: string;
  workload?: string;
  /** fio's queue depth. */
  iodepth?: number;
  /** The round (1-based; a guest run's repetition) it failed in. */
  round?: number;
  /** Why: the exception's text, or "the image it left fails qemu-img check: <verdict>". */
  reason: string;
  /** qemu-img check's verdict, when the image it left did not pass. */
  check?: string;
}

/** One latency column of a phase, µs (src/guest/decomposition.ts). */
export interface GuestLatencyColumn {
  count: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

export interface GuestPhase {
  name: string;
  reads: number;
  writes: number;
  flushes: number;
  write_median_us: number;
  write_p99_us: number;
  /** Median time the engine itself spent per write (no emulator, ring or event-loop delay). */
  engine_write_median_us?: number;
  read_median_us?: number;
  flush_median_us?: number;
  /** Write latency at the percentiles 0..100 (µs). */
  write_cdf_us?: number[];
  /** The phase's writes by four clocks: the guest program, the device adapter, the ring, the engine. */
  app_us?: GuestLatencyColumn;
  device_us?: GuestLatencyColumn;
  ring_us?: GuestLatencyColumn;
  engine_us?: GuestLatencyColumn;
  /** median(app) − median(engine): what the emulator adds to the engine's time. */
  emulator_us?: number;
  /** The guest clock's rate error against the host's over the phase, ppm. */
  clock_drift_ppm?: number;
  /** Host wall time of the phase, ms, from the guest announcing it to its end (its fsync included). */
  duration_ms?: number;
}

export interface GuestSnapshotTiming {
  drainMs?: number;
  flushMs?: number;
  diskSnapshotMs?: number;
  vmStateBytes?: number;
  vmStateSerializeMs?: number;
  vmStateWriteMs?: number;
}

export interface GuestResult {
  /** The emulator the guest ran under: "v86" (when absent) or "qemu" (src/guest/qemu-run.ts). */
  emulator?: "v86" | "qemu";
  /**
   * The image's block driver under the guest's disk: "refcow" (when absent; under v86 the worker ring, under
   * QEMU `refcow nbd` through QEMU's nbd driver), "qemu" (QEMU's qcow2) or "qemu-lazy" (lazy_refcounts=on).
   */
  backend?: string;
  /** QEMU's accelerator ("kvm", "tcg", "tcg (kvm failed: ...)"). */
  accel?: string;
  /** refcow's scheme, or the backend's name for QEMU's own driver. */
  scheme: string;
  cache: ResultRow["cache"];
  workload: string;
  savevm: boolean;
  /** The guest's disk device ("ide" when absent) and the guest program's queue depth (1 when absent). */
  disk?: string;
  iodepth?: number;
  /** Host ms from constructing the emulator to the guest's prompt. */
  bootMs: number;
  warm: boolean;
  phases: GuestPhase[];
  snapshot?: GuestSnapshotTiming;
  /** `qemu-img check` verdict on the image the run left ("clean", or what it reported). */
  check?: string;
  /** Host load averages (1, 5, 15 min) when the run ended: guest latencies are host time. */
  loadAverage?: number[];
  /** Repetition number (1-based) of this (scheme, cache) cell. */
  rep?: number;
  /** The IDE transfer mode the guest kernel used (libata's, e.g. XFER_MW_DMA_2). */
  transferMode?: string;
  /** The cuts of the guest-to-engine delay that were on (src/guest/latency-cuts.ts). */
  cuts?: string;
}

/** results.json: what a run measured, on which machine, and what it could not measure. */
export interface ResultsFile {
  generated: string;
  /** refcow's version (and commit) that produced the figures; shards merge only within one version. */
  version?: string;
  machine: Record<string, string>;
  options?: unknown;
  rows: ResultRow[];
  /** fio's figures: the cross-check and the queue-depth benchmark. */
  fio?: FioRow[];
  /** Sources the run left out, and why. */
  missing?: MissingSource[];
  /** Sources that threw or left an image qemu-img check did not pass, and why (their figures are not used). */
  failed?: FailedSource[];
  guest?: GuestResult[];
  /** Set by a shard's run (`refcow bench --shard i/N`). */
  shard?: ShardRecord;
  /** Set by a merge of shards. */
  shards?: MergedShards;
}
