/**
 * The write-after-snapshot benchmark: refcow (every scheme, through the ring and through its NBD export),
 * QEMU (qemu-nbd on a qcow2 with the same options, standard and lazy_refcounts) and a raw file (through
 * qemu-nbd, the ring, and pwrite), in the same run, driven by one load generator (load.ts) with one clock.
 *
 * Phases per source (sources.ts prepares every file the same way before any clock): `in-place` overwrites
 * allocated clusters; `post-snapshot` writes them again right after an internal snapshot (every write hits
 * a shared cluster); `after-delete` deletes the snapshot and writes clusters never written before (each
 * write allocates while the delete left free clusters inside the file). The raw file runs the same three
 * phases over its own preallocated bytes: its figure per phase is the floor for that phase.
 *
 * Repetitions are rounds: each round runs every source once for every cache mode and pattern, in an order
 * rotated from round to round, so drift over the run hits every source alike; round i of every source uses
 * the same request sequence, and ratios are computed within a round (report.ts). Every row keeps its
 * per-round figures (`reps`). fio replays the same sequences against the NBD exports as a cross-check.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { diffCosts } from "../io/accounting-file.js";
import { createImagePath, openImagePath } from "../engine/open-path.js";
import type { Qcow2Image } from "../engine/qcow2-image.js";
import { ALLOC_POLICIES, type AllocPolicyName, type CacheMode, type CostBreakdown, type FlushOrder } from "../engine/types.js";
import { SCHEME_NAMES } from "../schemes/index.js";
import { amortized, cdf, percentile, spread, summarize } from "../stats/latency.js";
import { type FailedSource, failureLine, failureOf, requireCleanImage, requireNoCorruption } from "./failures.js";
import { closeAllWorkers } from "../worker/index.js";
import { readTrace, type Trace } from "../vm/trace.js";
import { type FioResult, runFio } from "./fio.js";
import { CLUSTER, nowUs, type Pattern, runWritePhase, WRITE, writeOffsets } from "./load.js";
import { betweenPhases, detectTools, openSession, prepareFile, type SourceSpec, sourceName, sourceUnavailable, startNbdServer, type Tools, type Transport } from "./sources.js";

export { CLUSTER, FLUSH_EVERY, WRITE } from "./load.js";
export { type FailedSource, qemuCheckVerdict } from "./failures.js";

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
  /** The guest disk trace the `trace` workload replays (src/vm/trace.ts format). */
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
  /**
   * Called after the host operation between two phases of the write matrix (the snapshot, its delete), before
   * the next phase opens the file: a hook for fault injection (the tests corrupt an image here).
   */
  onPhaseBoundary?: (e: { spec: SourceSpec; cache: CacheMode; workload: Pattern; phase: string; file: string }) => void;
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
}

/**
 * The phases of the write workloads: `in-place` overwrites allocated clusters; `post-snapshot` writes the
 * same clusters right after an internal snapshot (every write hits a shared cluster); `after-delete`
 * deletes the snapshot, then writes clusters never written before, so every write allocates while the
 * delete has left free clusters inside the file (this is where the allocation policies differ).
 */
export const PHASES = ["in-place", "post-snapshot", "after-delete"] as const;

/** One round of one phase of one source. */
interface PhaseRun {
  writeUs: number[];
  flushUs: number[];
  wallUs: number;
  writes: number;
  costs?: CostBreakdown;
  /** Time to close the image after the phase (a scheme's deferred work done at close shows here). */
  closeUs?: number;
}

function perWrite(costs: CostBreakdown, writes: number): Record<string, PurposeRow> {
  const out: Record<string, PurposeRow> = {};
  for (const [k, c] of Object.entries(costs)) {
    if (!c) continue;
    out[k] = {
      ops: (c.reads + c.writes) / writes,
      bytes: (c.readBytes + c.writeBytes) / writes,
      flushes: c.flushes / writes,
      us: c.timeNs / 1000 / writes,
      flush_us: (c.flushNs ?? 0) / 1000 / writes,
    };
  }
  return out;
}

function addBreakdown(a: Record<string, PurposeRow>, b: Record<string, PurposeRow>, weight: number): void {
  for (const [k, v] of Object.entries(b)) {
    const t = (a[k] ??= { ops: 0, bytes: 0, flushes: 0, us: 0, flush_us: 0 });
    t.ops += v.ops * weight;
    t.bytes += v.bytes * weight;
    t.flushes += v.flushes * weight;
    t.us += v.us * weight;
    t.flush_us = (t.flush_us ?? 0) + (v.flush_us ?? 0) * weight;
  }
}

/** Sums cost breakdowns (the segments of one phase). */
function addCosts(a: CostBreakdown, b: CostBreakdown): CostBreakdown {
  const out: CostBreakdown = { ...a };
  for (const [k, v] of Object.entries(b) as Array<[keyof CostBreakdown, NonNullable<CostBreakdown[keyof CostBreakdown]>]>) {
    if (!v) continue;
    const t = out[k];
    out[k] = t ? (Object.fromEntries(Object.keys(v).map((f) => [f, ((t as unknown as Record<string, number>)[f] ?? 0) + (v as unknown as Record<string, number>)[f]!])) as unknown as typeof v) : { ...v };
  }
  return out;
}

/** A result row from the rounds of one cell: every figure by src/stats, per round, then over rounds. */
function rowFromRuns(base: Omit<ResultRow, "median_us" | "p99_us" | "amortized_us" | "runs">, runs: PhaseRun[]): ResultRow {
  const per = runs.map((r) => ({ s: summarize(r.writeUs), amortized: amortized(r.wallUs, r.writes) }));
  const med = spread(per.map((p) => p.s.median));
  const p99 = spread(per.map((p) => p.s.p99));
  const am = spread(per.map((p) => p.amortized));
  const pooled = runs.flatMap((r) => r.writeUs);
  const flushes = runs.flatMap((r) => r.flushUs);
  const row: ResultRow = {
    ...base,
    median_us: med.median,
    median_us_min: med.min,
    median_us_max: med.max,
    p90_us: spread(per.map((p) => p.s.p90)).median,
    p99_us: p99.median,
    p99_us_min: p99.min,
    p99_us_max: p99.max,
    p999_us: spread(per.map((p) => p.s.p999)).median,
    max_us: Math.max(...per.map((p) => p.s.max)),
    amortized_us: am.median,
    amortized_us_min: am.min,
    amortized_us_max: am.max,
    runs: runs.length,
    reps: runs.map((r, i) => ({ median_us: per[i]!.s.median, p99_us: per[i]!.s.p99, amortized_us: per[i]!.amortized, ...(r.closeUs !== undefined ? { amortized_close_us: amortized(r.wallUs + r.closeUs, r.writes) } : {}) })),
    cdf_us: cdf(pooled),
  };
  if (flushes.length) row.flush_median_us = percentile(flushes, 50);
  const closed = runs.filter((r) => r.closeUs !== undefined);
  if (closed.length) {
    row.close_us = spread(closed.map((r) => r.closeUs!)).median;
    const withClose = spread(closed.map((r) => amortized(r.wallUs + r.closeUs!, r.writes)));
    row.amortized_close_us = withClose.median;
    row.amortized_close_us_min = withClose.min;
    row.amortized_close_us_max = withClose.max;
  }
  const withCosts = runs.filter((r) => r.costs);
  if (withCosts.length) {
    const b: Record<string, PurposeRow> = {};
    for (const r of withCosts) addBreakdown(b, perWrite(r.costs!, r.writes), 1 / withCosts.length);
    row.breakdown = b;
    let bytes = 0;
    for (const r of withCosts) for (const c of Object.values(r.costs!)) if (c) bytes += c.writeBytes / r.writes / withCosts.length;
    row.host_write_bytes = bytes;
  }
  return row;
}

/** The sources of the write matrix, in their base order (each round rotates it). */
export function benchSources(opts: BenchOptions): SourceSpec[] {
  const local: Transport = opts.inProcess ? "in-process" : "ring";
  const out: SourceSpec[] = [];
  for (const scheme of opts.schemes) for (const alloc of opts.allocs) out.push({ source: "refcow", scheme, alloc, transport: local });
  if (opts.qemuOrder && opts.schemes.includes("eager")) out.push({ source: "refcow", scheme: "eager", order: "qemu", alloc: opts.allocs[0], transport: local });
  out.push({ source: "raw", scheme: "none", transport: local });
  out.push({ source: "raw", scheme: "none", transport: "direct" });
  if (opts.qemu) {
    // Every scheme through refcow's NBD export, beside qemu-nbd: the like-for-like comparison with QEMU.
    for (const scheme of opts.schemes) out.push({ source: "refcow", scheme, transport: "nbd" });
    out.push({ source: "qemu", scheme: "std", transport: "nbd" });
    out.push({ source: "qemu", scheme: "lazy_refcounts", transport: "nbd" });
    out.push({ source: "raw", scheme: "none", transport: "nbd" });
  }
  return out;
}

/** The fields of a failed entry that say which source it was. */
function specFields(s: SourceSpec): Pick<FailedSource, "name" | "source" | "scheme" | "order" | "alloc" | "transport"> {
  return { name: sourceName(s), source: s.source, scheme: s.scheme, ...(s.order ? { order: s.order } : {}), ...(s.alloc ? { alloc: s.alloc } : {}), transport: s.transport };
}

const specKey = (s: SourceSpec) => `${s.source}/${s.scheme}/${s.order ?? ""}/${s.alloc ?? ""}/${s.transport}`;
const slug = (s: SourceSpec) => specKey(s).replace(/[^a-z0-9_-]+/gi, "-");

/** One source through the three phases on a freshly prepared file; the file is checked, then removed. */
async function runSource(opts: BenchOptions, spec: SourceSpec, cache: CacheMode, pattern: Pattern, round: number, tools: Tools): Promise<Map<string, PhaseRun>> {
  const n = opts.clusters;
  const data = new Uint8Array(WRITE).fill(0xa5);
  const file = path.join(opts.dir, `${slug(spec)}-${cache}-${pattern}.img`);
  const socket = path.join(opts.dir, "nbd.sock");
  const out = new Map<string, PhaseRun>();
  prepareFile(spec, file, n);
  const seed = 1234 + round;
  for (const ph of PHASES) {
    if (ph === "post-snapshot") betweenPhases(spec, file, "snapshot");
    if (ph === "after-delete") betweenPhases(spec, file, "delete");
    if (ph !== "in-place") opts.onPhaseBoundary?.({ spec, cache, workload: pattern, phase: ph, file });
    const offsets = writeOffsets(n, pattern, seed, ph === "after-delete" ? n : 0);
    const session = await openSession(spec, file, cache, socket);
    let run: PhaseRun | undefined;
    try {
      const before = await session.stats?.();
      const r = await runWritePhase(session.target, cache, offsets, data);
      const after = await session.stats?.();
      run = { ...r, writes: offsets.length, costs: before && after ? diffCosts(after, before) : undefined };
      out.set(ph, run);
    } finally {
      const t = performance.now();
      await session.close();
      if (run) run.closeUs = (performance.now() - t) * 1000;
    }
  }
  if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
  fs.rmSync(file, { force: true });
  return out;
}

/** The write matrix: rounds × cache modes × patterns × sources (rotated per round). */
async function writeMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  const patterns = opts.workloads.filter((w): w is Pattern => w !== "trace");
  if (!patterns.length) return;
  const all = benchSources(opts);
  const sources: SourceSpec[] = [];
  for (const s of all) {
    const why = sourceUnavailable(s, tools);
    if (why) results.missing.push({ source: sourceName(s), reason: why });
    else sources.push(s);
  }
  const acc = new Map<string, { spec: SourceSpec; cache: CacheMode; pattern: Pattern; phase: string; runs: PhaseRun[] }>();
  const total = opts.reps * opts.caches.length * patterns.length * sources.length;
  let step = 0;
  const failed = new Set<string>();
  for (let round = 0; round < opts.reps; round++) {
    for (const cache of opts.caches) {
      for (const pattern of patterns) {
        const k = sources.length ? (round * 5) % sources.length : 0;
        const ordered = [...sources.slice(k), ...sources.slice(0, k)];
        if (round % 2 === 1) ordered.reverse();
        for (const spec of ordered) {
          step++;
          const key = `${specKey(spec)}|${cache}|${pattern}`;
          if (failed.has(key)) continue;
          opts.progress(`write matrix ${step}/${total}: round ${round + 1}/${opts.reps}, ${cache}, ${pattern}, ${sourceName(spec)}`);
          let phases: Map<string, PhaseRun>;
          try {
            phases = await runSource(opts, spec, cache, pattern, round, tools);
          } catch (e) {
            failed.add(key);
            const f = failureOf(e, { part: "write matrix", ...specFields(spec), cache, workload: pattern, round: round + 1 });
            results.failed.push(f);
            opts.progress(`  FAILED: ${f.reason}`);
            continue;
          }
          for (const [phase, run] of phases) {
            const a = acc.get(`${key}|${phase}`) ?? { spec, cache, pattern, phase, runs: [] };
            a.runs.push(run);
            acc.set(`${key}|${phase}`, a);
          }
        }
      }
    }
  }
  for (const a of acc.values()) {
    if (failed.has(`${specKey(a.spec)}|${a.cache}|${a.pattern}`)) continue;
    const { spec } = a;
    results.rows.push(
      rowFromRuns(
        { source: spec.source, scheme: spec.scheme, ...(spec.order ? { order: spec.order } : {}), ...(spec.alloc ? { alloc: spec.alloc } : {}), transport: spec.transport, cache: a.cache, workload: a.pattern, phase: a.phase },
        a.runs,
      ),
    );
  }
}

/** Rounds of the fio runs: at least three, so that every fio figure and ratio has a median and a range. */
export const FIO_MIN_ROUNDS = 3;

/**
 * fio against the NBD sources on freshly prepared files: the cross-check (queue depth 1, every cache mode and
 * pattern, refcow's export under every scheme, qemu-nbd on the qcow2 and on the raw file, the same iolog for
 * all) and the queue-depth benchmark (random writes in writeback at `fioDepths`, the same sources but the raw
 * file). Rounds as the write matrix's: each round runs every source once per cell, the sources alternating
 * (an order rotated from round to round, reversed every other round), round i of every source on the same
 * requests; at least FIO_MIN_ROUNDS rounds. A source's rows are used only when every image it left passed
 * qemu-img check; a source that throws or fails the check is a failed entry for that cell.
 */
async function fioMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  if (!opts.fio && !opts.fioDepths.length) return;
  if (!tools.fio) {
    results.missing.push({ source: "fio cross-check", reason: "fio with its nbd engine not found (install fio)" });
    return;
  }
  const candidates: SourceSpec[] = [...opts.schemes.map((scheme): SourceSpec => ({ source: "refcow", scheme, transport: "nbd" })), { source: "qemu", scheme: "std", transport: "nbd" }, { source: "raw", scheme: "none", transport: "nbd" }];
  const specs: SourceSpec[] = [];
  for (const s of candidates) {
    const why = sourceUnavailable(s, tools);
    if (!why) specs.push(s);
    else if (!results.missing.some((m) => m.source === `fio: ${sourceName(s)}`)) results.missing.push({ source: `fio: ${sourceName(s)}`, reason: why });
  }
  const cells: Array<{ cache: CacheMode; pattern: Pattern; depth: number; phases: string[] }> = [];
  if (opts.fio) for (const cache of opts.caches) for (const pattern of opts.workloads.filter((w): w is Pattern => w !== "trace")) cells.push({ cache, pattern, depth: 1, phases: ["in-place", "post-snapshot"] });
  for (const depth of opts.fioDepths) if (!cells.some((c) => c.cache === "writeback" && c.pattern === "rand4k-per-cluster" && c.depth === depth)) cells.push({ cache: "writeback", pattern: "rand4k-per-cluster", depth, phases: ["in-place", "post-snapshot"] });
  const n = opts.clusters;
  const rounds = Math.max(FIO_MIN_ROUNDS, opts.reps);
  const acc = new Map<string, { spec: SourceSpec; cell: (typeof cells)[number]; phases: Map<string, FioResult[]> }>();
  const failed = new Set<string>();
  for (let round = 0; round < rounds; round++) {
    for (const cell of cells) {
      const here = specs.filter((s) => cell.depth === 1 || s.source !== "raw");
      const k = here.length ? round % here.length : 0;
      const ordered = [...here.slice(k), ...here.slice(0, k)];
      if (round % 2 === 1) ordered.reverse();
      for (const spec of ordered) {
        const key = `${specKey(spec)}|${cell.cache}|${cell.pattern}|${cell.depth}`;
        if (failed.has(key)) continue;
        opts.progress(`fio round ${round + 1}/${rounds}: ${cell.cache}, ${cell.pattern}, iodepth ${cell.depth}, ${sourceName(spec)}`);
        const file = path.join(opts.dir, `fio-${slug(spec)}.img`);
        const socket = path.join(opts.dir, "fio.sock");
        const got = new Map<string, FioResult>();
        try {
          prepareFile(spec, file, n);
          for (const phase of cell.phases) {
            if (phase === "post-snapshot") betweenPhases(spec, file, "snapshot");
            const server = await startNbdServer(spec, file, cell.cache, socket);
            try {
              got.set(phase, await runFio(socket, writeOffsets(n, cell.pattern, 1234 + round), WRITE, cell.cache, cell.depth, path.join(opts.dir, "fio")));
            } finally {
              await server.stop();
            }
          }
          // Checked before any of its figures is kept.
          if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
          const a = acc.get(key) ?? { spec, cell, phases: new Map<string, FioResult[]>() };
          for (const [phase, r] of got) a.phases.set(phase, [...(a.phases.get(phase) ?? []), r]);
          acc.set(key, a);
        } catch (e) {
          failed.add(key);
          const f = failureOf(e, { part: "fio", ...specFields(spec), cache: cell.cache, workload: cell.pattern, iodepth: cell.depth, round: round + 1 });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
    }
  }
  for (const [key, a] of acc) {
    if (failed.has(key)) continue;
    for (const [phase, runs] of a.phases) {
      const iops = spread(runs.map((r) => r.iops));
      const p50 = spread(runs.map((r) => r.clat_p50_us));
      results.fio.push({
        source: a.spec.source,
        scheme: a.spec.scheme,
        transport: "nbd",
        cache: a.cell.cache,
        workload: a.cell.pattern,
        phase,
        iodepth: a.cell.depth,
        writes: runs[0]!.writes,
        iops: iops.median,
        iops_min: iops.min,
        iops_max: iops.max,
        clat_p50_us: p50.median,
        clat_p50_us_min: p50.min,
        clat_p50_us_max: p50.max,
        clat_p99_us: spread(runs.map((r) => r.clat_p99_us)).median,
        runs: runs.length,
        reps: runs.map((r) => ({ iops: r.iops, clat_p50_us: r.clat_p50_us, clat_p99_us: r.clat_p99_us })),
      });
    }
  }
}

/** What the trace replay needs of an image: the requests a guest trace holds, and the host's snapshot. */
interface ReplayDisk {
  read(offset: number, length: number): unknown;
  write(offset: number, data: Uint8Array): unknown;
  flush(): unknown;
  snapshotCreate?(name: string): unknown;
  stats?(): CostBreakdown | Promise<CostBreakdown>;
  close(): unknown;
}

async function openReplayDisk(file: string, spec: SourceSpec, cache: CacheMode): Promise<ReplayDisk> {
  const format = spec.source === "raw" ? "raw" : "qcow2";
  const scheme = spec.source === "raw" ? undefined : spec.scheme;
  if (spec.transport === "in-process") return openImagePath(file, { scheme, alloc: spec.alloc, order: spec.order, cache, format }) as ReplayDisk;
  const { openServedImage } = await import("../worker/index.js");
  const c = await openServedImage(file, { scheme, alloc: spec.alloc, order: spec.order, cache, format });
  return {
    read: (o, l) => c.read(o, l),
    write: (o, d) => c.write(o, d),
    flush: () => c.flush(),
    snapshotCreate: format === "qcow2" ? (name) => c.snapshotCreate(name) : undefined,
    stats: async () => ((await c.stats()) ?? {}) as CostBreakdown,
    close: () => c.close(),
  };
}

/**
 * One replay of a guest disk trace, request by request in its order: writes (of a fixed pattern; traces keep
 * no data), reads, flushes, and the host's snapshots. A refcow source replays it on a fresh qcow2 of the
 * trace's size and cluster size, the raw file on a sparse file of that size, both through the same
 * transport. A host event (the snapshot) runs outside every phase's clock and cost counters: the phase's
 * clock and counters stop for the flush and the snapshot and start again after them.
 */
async function traceRun(opts: BenchOptions, trace: Trace, spec: SourceSpec, cache: CacheMode, round: number, tools: Tools): Promise<Map<string, PhaseRun>> {
  const maxLen = Math.max(512, ...trace.events.map((e) => e.length));
  const data = new Uint8Array(maxLen).fill(0x5a);
  const file = path.join(opts.dir, `trace-${slug(spec)}-${cache}-${round}.img`);
  fs.rmSync(file, { force: true });
  if (spec.source === "raw") {
    fs.writeFileSync(file, "");
    fs.truncateSync(file, trace.header.size);
  } else createImagePath(file, { size: trace.header.size, clusterSize: trace.header.clusterSize });
  const disk = await openReplayDisk(file, spec, cache);
  const out = new Map<string, PhaseRun>();
  let current: PhaseRun | undefined;
  let currentName: string | undefined;
  let segStart = 0;
  let segBefore: CostBreakdown | undefined;
  const pause = async () => {
    if (!current) return;
    current.wallUs += nowUs() - segStart;
    const after = await disk.stats?.();
    if (after && segBefore) current.costs = addCosts(current.costs ?? {}, diffCosts(after, segBefore));
  };
  const resume = async () => {
    segBefore = await disk.stats?.();
    segStart = nowUs();
  };
  try {
    for (const e of trace.events) {
      const phase = e.phase || "(none)";
      if (!current || currentName !== phase) {
        await pause();
        current = out.get(phase) ?? { writeUs: [], flushUs: [], wallUs: 0, writes: 0 };
        currentName = phase;
        out.set(phase, current);
        await resume();
      }
      if (e.op === "s") {
        await pause();
        await disk.flush();
        await disk.snapshotCreate?.(e.name ?? "trace");
        await resume();
        continue;
      }
      const t = nowUs();
      if (e.op === "w") {
        await disk.write(e.offset, data.subarray(0, e.length));
        current.writeUs.push(nowUs() - t);
        current.writes++;
      } else if (e.op === "r") await disk.read(e.offset, e.length);
      else if (e.op === "f") {
        await disk.flush();
        current.flushUs.push(nowUs() - t);
      }
    }
    await pause();
  } finally {
    await disk.close();
  }
  try {
    if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
  } finally {
    fs.rmSync(file, { force: true });
  }
  for (const [k, v] of out) if (!v.writes) out.delete(k);
  return out;
}

/** The trace replay, round after round (sources rotated); a source that throws or fails qemu-img check is a failed entry. */
async function traceMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  if (!opts.workloads.includes("trace")) return;
  if (!opts.traceFile) throw new Error("the trace workload needs a trace file (--trace FILE, written by `refcow run --trace`)");
  const trace = readTrace(opts.traceFile);
  const transport: Transport = opts.inProcess ? "in-process" : "ring";
  const specs: SourceSpec[] = [];
  for (const scheme of opts.schemes) for (const alloc of opts.allocs) specs.push({ source: "refcow", scheme, alloc, transport });
  specs.push({ source: "raw", scheme: "none", transport });
  const acc = new Map<string, { spec: SourceSpec; cache: CacheMode; phase: string; runs: PhaseRun[] }>();
  const failed = new Set<string>();
  for (let round = 0; round < opts.reps; round++) {
    for (const cache of opts.caches) {
      const k = (round * 3) % specs.length;
      for (const spec of [...specs.slice(k), ...specs.slice(0, k)]) {
        const cell = `${specKey(spec)}|${cache}`;
        if (failed.has(cell)) continue;
        opts.progress(`trace replay, round ${round + 1}/${opts.reps}, ${cache}, ${sourceName(spec)} (${trace.events.length} requests)`);
        let phases: Map<string, PhaseRun>;
        try {
          phases = await traceRun(opts, trace, spec, cache, round, tools);
        } catch (e) {
          failed.add(cell);
          const f = failureOf(e, { part: "trace replay", ...specFields(spec), cache, workload: "trace", round: round + 1 });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
          continue;
        }
        for (const [phase, run] of phases) {
          const key = `${cell}|${phase}`;
          const a = acc.get(key) ?? { spec, cache, phase, runs: [] };
          a.runs.push(run);
          acc.set(key, a);
        }
      }
    }
  }
  for (const a of acc.values()) {
    const { spec } = a;
    if (failed.has(`${specKey(spec)}|${a.cache}`)) continue;
    results.rows.push(rowFromRuns({ source: spec.source, scheme: spec.scheme, ...(spec.alloc ? { alloc: spec.alloc } : {}), transport: spec.transport, cache: a.cache, workload: "trace", phase: a.phase }, a.runs));
  }
}

/** Snapshot create/apply/delete, open, close and recovery (open of an image left dirty) per scheme and size. */
function opRows(opts: BenchOptions, scheme: string, alloc: AllocPolicyName, size: number, tools: Tools): ResultRow[] {
  const rows: ResultRow[] = [];
  const times: Record<string, number[]> = {};
  const recovered = new Set<string>();
  const time = (name: string, f: () => void) => {
    const t = nowUs();
    f();
    (times[name] ??= []).push(nowUs() - t);
  };
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `ops-${scheme}-${alloc}-${size}-${rep}.qcow2`);
    const crashed = `${file}.crashed`;
    try {
      createImagePath(file, { size });
      const prep = openImagePath(file, { cache: "unsafe" });
      const sector = new Uint8Array(512).fill(3);
      for (let off = 0; off < size; off += CLUSTER) prep.write(off, sector); // every cluster allocated
      prep.close();
      let img!: Qcow2Image;
      time("open", () => (img = openImagePath(file, { scheme, alloc }) as Qcow2Image));
      try {
        time("snapshot-create", () => img.snapshotCreate("a"));
        img.write(0, new Uint8Array(WRITE));
        time("snapshot-apply", () => img.snapshotApply("a"));
        img.snapshotCreate("b");
        time("snapshot-delete", () => img.snapshotDelete("b"));
        img.write(CLUSTER, new Uint8Array(WRITE));
        img.flush();
        execFileSync("cp", ["--sparse=always", file, crashed]); // what a killed process leaves after its last flush
      } catch (e) {
        try {
          img.close();
        } catch {
          /* the first error says why */
        }
        throw e;
      }
      time("close", () => img.close());
      time("recovery", () => openImagePath(crashed, { scheme, alloc }).close());
      // The timings count only when both images are sound: the closed one clean, the recovered one with at
      // most leaked clusters (what a crash may cost), which its row names.
      if (tools.qemuImg) {
        requireCleanImage(file, "the image after the snapshot operations and close");
        recovered.add(requireNoCorruption(crashed, "the image recovered after the crash"));
      }
    } finally {
      fs.rmSync(file, { force: true });
      fs.rmSync(crashed, { force: true });
    }
  }
  for (const [name, t] of Object.entries(times)) {
    const s = spread(t);
    const leaks = name === "recovery" ? [...recovered].filter((v) => v !== "clean") : [];
    rows.push({ source: "refcow", scheme, alloc, transport: "in-process", cache: "writeback", workload: "snapshot-ops", phase: name, median_us: s.median, median_us_min: s.min, median_us_max: s.max, p99_us: null, amortized_us: s.median, runs: s.runs, size_bytes: size, ...(leaks.length ? { check: `recovered image: ${leaks.join("; ")}` } : {}) });
  }
  return rows;
}

export async function runMatrix(opts: BenchOptions, tools: Tools = detectTools()): Promise<BenchResults> {
  const results: BenchResults = { rows: [], fio: [], missing: [], failed: [] };
  fs.mkdirSync(opts.dir, { recursive: true });
  if (!opts.qemu) results.missing.push({ source: "QEMU (qemu-nbd), the raw file through qemu-nbd, refcow's NBD export and fio", reason: "left out (--no-qemu)", asked: true });
  // Each part records what fails in it and the run goes on: an exception never costs the figures already taken.
  const part = async (name: FailedSource["part"], run: () => Promise<void>) => {
    try {
      await run();
    } catch (e) {
      const f = failureOf(e, { part: name, name });
      results.failed.push(f);
      opts.progress(`  FAILED: ${failureLine(f)}`);
    }
  };
  try {
    await part("write matrix", () => writeMatrix(opts, tools, results));
    await part("trace replay", () => traceMatrix(opts, tools, results));
    if (opts.qemu) await part("fio", () => fioMatrix(opts, tools, results));
    // Snapshot operations allocate little (an L1 copy, refcount blocks, a table): timed under the first
    // allocation policy asked for only, which keeps the 16 GiB runs of the full matrix to one per scheme.
    const opAlloc = opts.allocs[0] ?? "first-fit";
    for (const size of opts.opSizes) {
      for (const scheme of opts.schemes) {
        opts.progress(`snapshot/open/close timings: ${scheme} ${opAlloc}, ${Math.round(size / 2 ** 20)} MiB allocated`);
        try {
          results.rows.push(...opRows(opts, scheme, opAlloc, size, tools));
        } catch (e) {
          const f = failureOf(e, { part: "snapshot-ops", name: `${scheme} (in-process)`, source: "refcow", scheme, alloc: opAlloc, transport: "in-process", workload: `snapshot-ops ${Math.round(size / 2 ** 20)} MiB` });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
        }
      }
    }
  } finally {
    await closeAllWorkers();
  }
  return results;
}

/**
 * 1 when a source is missing that was not left out on request (install what the message names, or pass
 * --no-qemu) or when a source failed; 0 otherwise. Says why on `err`.
 */
export function benchExitStatus(results: BenchResults, err: (line: string) => void): number {
  const unasked = results.missing.filter((m) => !m.asked);
  for (const m of unasked) err(`refcow: ${m.source} not measured: ${m.reason}\n`);
  for (const f of results.failed) err(`refcow: failed: ${failureLine(f)}\n`);
  if (unasked.length && !results.failed.length) err("refcow: sources are missing (pass --no-qemu to leave QEMU's and the NBD sources out on purpose)\n");
  return unasked.length || results.failed.length ? 1 : 0;
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

export function machine(dir: string): Record<string, string> {
  const sh = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
    } catch {
      return "unknown";
    }
  };
  const cpu = fs.readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
  return {
    cpu: `${cpu} (${os.cpus().length} cores)`,
    kernel: os.release(),
    filesystem: sh("stat", ["-f", "-c", "%T", dir]),
    node: process.version,
    qemu: sh("qemu-img", ["--version"]).split("\n")[0],
  };
}
