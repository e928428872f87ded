/**
 * What a benchmark run measures: the options of `refcow bench` and `refcow experiment`'s host matrix, their
 * defaults (full and --quick) and the parsing of the allocation-policy list.
 */
import * as os from "node:os";
import * as path from "node:path";
import { ALLOC_POLICIES, type AllocPolicyName, type CacheMode } from "../engine/types.js";
import type { Pattern, SourceSpec } from "../report/results.js";
import { SCHEME_NAMES } from "../schemes/index.js";
import type { ShardPlan } from "./shard.js";

export type Workload = Pattern | "trace";

export interface BenchOptions {
  clusters: number;
  /** Rounds: every source runs once per round. */
  reps: number;
  schemes: string[];
  /** Allocation policies for the refcow rows (default first-fit only). */
  allocs: AllocPolicyName[];
  caches: CacheMode[];
  workloads: Workload[];
  /** The guest disk trace the `trace` workload replays (src/guest/trace.ts format). */
  traceFile?: string;
  /** QEMU's and the NBD sources (qemu-nbd std and lazy_refcounts, the raw file through qemu-nbd, refcow's export). */
  qemu: boolean;
  /** refcow's ring sources run in-process instead (transport `in-process`). */
  inProcess: boolean;
  /** eager with QEMU 7.2's flush order beside the schemes (the flush-policy split). */
  qemuOrder: boolean;
  /** The fio cross-check of the NBD sources, in the same run. */
  fio: boolean;
  /** fio random writes in writeback at these queue depths, refcow's export against qemu-nbd (empty to skip). */
  fioDepths: number[];
  /** Allocated sizes (bytes) for the snapshot/open/close timings; empty to skip. */
  opSizes: number[];
  dir: string;
  progress: (msg: string) => void;
  /** Copy every COW even where the file system could share it (`--no-reflink`: REFCOW_REFLINK=0 for the run). */
  noReflink?: boolean;
  /** `--shard i/N`: which cells of the matrix this run owns (shard.ts); absent: all of them. */
  shard?: ShardPlan;
  /**
   * Called after the host operation between two phases of the write matrix (the snapshot, its delete), before
   * the next phase opens the file: a hook for fault injection (the tests corrupt an image here).
   */
  onPhaseBoundary?: (e: { spec: SourceSpec; cache: CacheMode; workload: Pattern; phase: string; file: string }) => void;
}

export function defaultOptions(quick: boolean): BenchOptions {
  return {
    clusters: quick ? 200 : 2000,
    reps: 3,
    schemes: [...SCHEME_NAMES],
    allocs: ["first-fit"],
    caches: ["writethrough", "writeback"],
    workloads: ["rand4k-per-cluster", "seq"],
    qemu: true,
    inProcess: false,
    qemuOrder: true,
    fio: true,
    fioDepths: [1, 16],
    opSizes: quick ? [8 << 20, 32 << 20, 128 << 20] : [1 << 30, 4 * 2 ** 30, 16 * 2 ** 30],
    dir: path.join(os.tmpdir(), `refcow-bench-${process.pid}`),
    progress: () => {},
  };
}

/** `--alloc first-fit,append`: the allocation policies to run. */
export function parseAllocList(s: string): AllocPolicyName[] {
  const list = s.split(",").filter((x) => x);
  for (const a of list) {
    if (!(ALLOC_POLICIES as readonly string[]).includes(a)) throw new Error(`unknown allocation policy '${a}' (available: ${ALLOC_POLICIES.join(", ")})`);
  }
  if (!list.length) throw new Error("--alloc needs at least one allocation policy");
  return list as AllocPolicyName[];
}
