/**
 * The write-after-snapshot benchmark: refcow (every scheme) vs QEMU (`qemu-img bench`, standard and
 * lazy_refcounts) vs a raw file, in the same run, on the same workload.
 *
 * Workload `rand4k-per-cluster`: N clusters of 64 KiB, each allocated beforehand; then 4 KiB writes, one per
 * cluster in random order, in phase `in-place` (overwriting) and phase `post-snapshot` (right after an
 * internal snapshot, so every write hits a shared cluster). Workload `seq`: the same writes in cluster order.
 * In writeback a flush follows every 64 writes and the last one; its time is part of `amortized_us` (phase
 * time / writes), not of the per-write median. Every refcow figure comes with the per-write I/O breakdown.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { diffCosts } from "../io/accounting-file.js";
import { createImagePath, openImagePath } from "../engine/open-path.js";
import type { Qcow2Image } from "../engine/qcow2-image.js";
import { ALLOC_POLICIES, type AllocPolicyName, type CacheMode, type CostBreakdown } from "../engine/types.js";
import { SCHEME_NAMES } from "../schemes/index.js";
import { closeAllWorkers, openServedImage } from "../worker/index.js";
import { readTrace, type Trace } from "../vm/trace.js";

export const CLUSTER = 65536;
export const WRITE = 4096;
export const FLUSH_EVERY = 64;

export interface BenchOptions {
  clusters: number;
  reps: number;
  schemes: string[];
  /** Allocation policies for the refcow rows (default first-fit only). */
  allocs: AllocPolicyName[];
  caches: CacheMode[];
  workloads: ("rand4k-per-cluster" | "seq" | "trace")[];
  /** The guest disk trace the `trace` workload replays (src/vm/trace.ts format). */
  traceFile?: string;
  qemu: boolean;
  inProcess: boolean;
  /** Allocated sizes (bytes) for the snapshot/open/close timings; empty to skip. */
  opSizes: number[];
  dir: string;
  progress: (msg: string) => void;
}

export interface PurposeRow {
  ops: number;
  bytes: number;
  flushes: number;
  us: number;
  /** The part of `us` spent in flushes. */
  flush_us?: number;
}

export interface ResultRow {
  source: "refcow" | "qemu" | "raw";
  scheme: string;
  /** Allocation policy (refcow rows). */
  alloc?: AllocPolicyName;
  cache: CacheMode | "n/a";
  workload: string;
  phase: string;
  median_us: number;
  p99_us: number | null;
  amortized_us: number;
  runs: number;
  size_bytes?: number;
  /** Per-guest-write I/O by purpose (refcow rows only). */
  breakdown?: Record<string, PurposeRow>;
  /** Latency at the percentiles 0, 1, ..., 100 (µs), for the CDF plots; absent where only an average exists. */
  cdf_us?: number[];
}

/** The operations a benchmark needs, served in-process or by a worker. */
interface BenchDisk {
  read(offset: number, length: number): unknown;
  write(offset: number, data: Uint8Array): void | Promise<void>;
  flush(): void | Promise<void>;
  snapshotCreate(name: string): unknown;
  snapshotDelete(name: string): unknown;
  stats(): CostBreakdown | Promise<CostBreakdown>;
  close(): void | Promise<void>;
}

async function openBenchDisk(file: string, scheme: string, alloc: AllocPolicyName, cache: CacheMode, inProcess: boolean): Promise<BenchDisk> {
  if (inProcess) {
    const img = openImagePath(file, { scheme, alloc, cache }) as Qcow2Image;
    return img;
  }
  const c = await openServedImage(file, { scheme, alloc, cache });
  return {
    read: (o, l) => c.read(o, l),
    write: (o, d) => c.write(o, d),
    flush: () => c.flush(),
    snapshotCreate: (n) => c.snapshotCreate(n),
    snapshotDelete: (n) => c.snapshotDelete(n),
    stats: async () => ((await c.stats()) ?? {}) as CostBreakdown,
    close: () => c.close(),
  };
}

function order(n: number, workload: string, seed: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (workload === "seq") return idx;
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

/** Latency at every whole percentile, 0..100. */
export function percentiles(xs: number[]): number[] {
  if (!xs.length) return [];
  const s = [...xs].sort((a, b) => a - b);
  return Array.from({ length: 101 }, (_, p) => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]);
}

export function quantile(xs: number[], q: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

const nowUs = () => Number(process.hrtime.bigint()) / 1000;

async function phase(disk: BenchDisk, cache: CacheMode, offsets: number[], data: Uint8Array): Promise<{ lat: number[]; totalUs: number }> {
  const lat: number[] = [];
  const t0 = nowUs();
  for (let i = 0; i < offsets.length; i++) {
    const t = nowUs();
    await disk.write(offsets[i], data);
    lat.push(nowUs() - t);
    if (cache === "writeback" && ((i + 1) % FLUSH_EVERY === 0 || i === offsets.length - 1)) await disk.flush();
  }
  return { lat, totalUs: nowUs() - t0 };
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

function addBreakdown(a: Record<string, PurposeRow>, b: Record<string, PurposeRow>, reps: number): void {
  for (const [k, v] of Object.entries(b)) {
    const t = (a[k] ??= { ops: 0, bytes: 0, flushes: 0, us: 0 });
    t.ops += v.ops / reps;
    t.bytes += v.bytes / reps;
    t.flushes += v.flushes / reps;
    t.us += v.us / reps;
    t.flush_us = (t.flush_us ?? 0) + (v.flush_us ?? 0) / reps;
  }
}

/**
 * The phases of the write workloads: `in-place` overwrites allocated clusters; `post-snapshot` writes the
 * same clusters right after an internal snapshot (every write hits a shared cluster); `after-delete`
 * deletes the snapshot, then writes clusters never written before, so every write allocates while the
 * delete has left free clusters inside the file (this is where the allocation policies differ).
 */
export const PHASES = ["in-place", "post-snapshot", "after-delete"] as const;

async function refcowRows(opts: BenchOptions, scheme: string, alloc: AllocPolicyName, cache: CacheMode, workload: string): Promise<ResultRow[]> {
  const n = opts.clusters;
  const data = new Uint8Array(WRITE).fill(0xa5);
  const acc: Record<string, { lat: number[]; total: number; breakdown: Record<string, PurposeRow> }> = {};
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `refcow-${scheme}-${alloc}-${cache}-${workload}-${rep}.qcow2`);
    // The first n clusters are the working set; the next n are allocated only in phase after-delete.
    createImagePath(file, { size: 2 * n * CLUSTER });
    // Allocate every working cluster first (not measured).
    const prep = openImagePath(file, { cache: "writeback" });
    const fill = new Uint8Array(CLUSTER).fill(1);
    for (let c = 0; c < n; c++) prep.write(c * CLUSTER, fill);
    prep.close();
    const disk = await openBenchDisk(file, scheme, alloc, cache, opts.inProcess);
    const perm = order(n, workload, 1234 + rep);
    const working = perm.map((c) => c * CLUSTER + WRITE);
    const fresh = perm.map((c) => (n + c) * CLUSTER + WRITE);
    for (const ph of PHASES) {
      if (ph === "post-snapshot") {
        await disk.snapshotCreate("s");
        await disk.flush();
      } else if (ph === "after-delete") {
        // Deleting the snapshot frees the clusters the post-snapshot writes copied away from: holes inside
        // the file that first-fit fills and append leaves for `refcow compact`.
        await disk.snapshotDelete("s");
        await disk.flush();
      }
      const offsets = ph === "after-delete" ? fresh : working;
      const before = await disk.stats();
      const r = await phase(disk, cache, offsets, data);
      const after = await disk.stats();
      const a = (acc[ph] ??= { lat: [], total: 0, breakdown: {} });
      for (const x of r.lat) a.lat.push(x);
      a.total += r.totalUs / n / opts.reps;
      addBreakdown(a.breakdown, perWrite(diffCosts(after, before), n), opts.reps);
    }
    await disk.close();
    fs.rmSync(file, { force: true });
  }
  return Object.entries(acc).map(([ph, a]) => ({
    source: "refcow",
    scheme,
    alloc,
    cache,
    workload,
    phase: ph,
    median_us: quantile(a.lat, 0.5),
    p99_us: quantile(a.lat, 0.99),
    amortized_us: a.total,
    runs: opts.reps,
    breakdown: a.breakdown,
    cdf_us: percentiles(a.lat),
  }));
}

/** The run time `qemu-img bench` prints ("Run completed in N seconds."); an error quoting its output if absent. */
export function qemuBenchSeconds(out: string, command: string): number {
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  const t = m ? Number(m[1]) : NaN;
  if (!Number.isFinite(t)) throw new Error(`${command}: no run time in its output ("Run completed in N seconds." expected):\n${out.trim()}`);
  return t;
}

/** qemu-img bench is sequential with a step: one 4 KiB write per cluster, in cluster order. */
function qemuRows(opts: BenchOptions, flavour: "std" | "lazy_refcounts", cache: CacheMode): ResultRow[] {
  const n = opts.clusters;
  const times: Record<string, number[]> = Object.fromEntries(PHASES.map((p) => [p, []]));
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `qemu-${flavour}-${cache}-${rep}.qcow2`);
    const o = flavour === "lazy_refcounts" ? "cluster_size=65536,lazy_refcounts=on" : "cluster_size=65536";
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", o, file, String(2 * n * CLUSTER)]);
    execFileSync("qemu-io", ["-c", `write -P 1 0 ${n * CLUSTER}`, file], { stdio: "ignore" });
    for (const ph of PHASES) {
      if (ph === "post-snapshot") execFileSync("qemu-img", ["snapshot", "-c", "s", file]);
      if (ph === "after-delete") execFileSync("qemu-img", ["snapshot", "-d", "s", file]);
      const start = (ph === "after-delete" ? n * CLUSTER : 0) + WRITE;
      const args = ["bench", "-w", "-t", cache, "-s", String(WRITE), "-S", String(CLUSTER), "-o", String(start), "-c", String(n), "-d", "1", "-f", "qcow2"];
      if (cache === "writeback") args.push(`--flush-interval=${FLUSH_EVERY}`);
      const out = execFileSync("qemu-img", [...args, file]).toString();
      times[ph].push((qemuBenchSeconds(out, `qemu-img ${args.join(" ")} ${file}`) * 1e6) / n);
    }
    fs.rmSync(file, { force: true });
  }
  return Object.entries(times).map(([ph, t]) => ({
    source: "qemu",
    scheme: flavour,
    cache,
    workload: "seq",
    phase: ph,
    median_us: quantile(t, 0.5),
    p99_us: null,
    amortized_us: quantile(t, 0.5),
    runs: t.length,
  }));
}

function rawRows(opts: BenchOptions, cache: CacheMode, workload: string): ResultRow[] {
  const n = opts.clusters;
  const lat: number[] = [];
  let total = 0;
  const data = new Uint8Array(WRITE).fill(0xa5);
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `raw-${cache}-${rep}.img`);
    fs.writeFileSync(file, new Uint8Array(n * CLUSTER).fill(1));
    const fd = fs.openSync(file, "r+");
    const offsets = order(n, workload, 1234 + rep).map((c) => c * CLUSTER + WRITE);
    const t0 = nowUs();
    for (let i = 0; i < n; i++) {
      const t = nowUs();
      fs.writeSync(fd, data, 0, WRITE, offsets[i]);
      if (cache === "writethrough") fs.fdatasyncSync(fd);
      lat.push(nowUs() - t);
      if (cache === "writeback" && ((i + 1) % FLUSH_EVERY === 0 || i === n - 1)) fs.fdatasyncSync(fd);
    }
    total += (nowUs() - t0) / n / opts.reps;
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  return [{ source: "raw", scheme: "none", cache, workload, phase: "in-place", median_us: quantile(lat, 0.5), p99_us: quantile(lat, 0.99), amortized_us: total, runs: opts.reps, cdf_us: percentiles(lat) }];
}

/** Snapshot create/apply/delete, open, close and recovery (open of an image left dirty) per scheme and size. */
function opRows(opts: BenchOptions, scheme: string, alloc: AllocPolicyName, size: number): ResultRow[] {
  const rows: ResultRow[] = [];
  const times: Record<string, number[]> = {};
  const time = (name: string, f: () => void) => {
    const t = nowUs();
    f();
    (times[name] ??= []).push(nowUs() - t);
  };
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `ops-${scheme}-${alloc}-${size}-${rep}.qcow2`);
    createImagePath(file, { size });
    const prep = openImagePath(file, { cache: "unsafe" });
    const sector = new Uint8Array(512).fill(3);
    for (let off = 0; off < size; off += CLUSTER) prep.write(off, sector); // every cluster allocated
    prep.close();
    let img!: Qcow2Image;
    time("open", () => (img = openImagePath(file, { scheme, alloc }) as Qcow2Image));
    time("snapshot-create", () => img.snapshotCreate("a"));
    img.write(0, new Uint8Array(WRITE));
    time("snapshot-apply", () => img.snapshotApply("a"));
    img.snapshotCreate("b");
    time("snapshot-delete", () => img.snapshotDelete("b"));
    img.write(CLUSTER, new Uint8Array(WRITE));
    img.flush();
    const crashed = `${file}.crashed`;
    execFileSync("cp", ["--sparse=always", file, crashed]); // what a killed process leaves after its last flush
    time("close", () => img.close());
    time("recovery", () => openImagePath(crashed, { scheme, alloc }).close());
    fs.rmSync(file, { force: true });
    fs.rmSync(crashed, { force: true });
  }
  for (const [name, t] of Object.entries(times)) {
    rows.push({ source: "refcow", scheme, alloc, cache: "writeback", workload: "snapshot-ops", phase: name, median_us: quantile(t, 0.5), p99_us: null, amortized_us: quantile(t, 0.5), runs: t.length, size_bytes: size });
  }
  return rows;
}

/** Per-phase latency, time and I/O of one replay, accumulated over repetitions. */
interface PhaseAcc {
  lat: number[];
  writes: number;
  totalUs: number;
  costs: CostBreakdown[];
}

/**
 * Replays a guest disk trace, request by request in its order, on a fresh image of the trace's size and
 * cluster size: writes (of a fixed pattern; traces keep no data), reads, flushes and the host's snapshots.
 * One row per phase that wrote, with the write latencies and the phase's I/O per write.
 */
async function traceRows(opts: BenchOptions, trace: Trace, scheme: string, alloc: AllocPolicyName, cache: CacheMode): Promise<ResultRow[]> {
  const maxLen = Math.max(512, ...trace.events.map((e) => e.length));
  const data = new Uint8Array(maxLen).fill(0x5a);
  const acc = new Map<string, PhaseAcc>();
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `trace-${scheme}-${alloc}-${cache}-${rep}.qcow2`);
    createImagePath(file, { size: trace.header.size, clusterSize: trace.header.clusterSize });
    const disk = await openBenchDisk(file, scheme, alloc, cache, opts.inProcess);
    let current: string | undefined;
    let phaseStart = 0;
    let before: CostBreakdown = {};
    const endPhase = async () => {
      if (current === undefined) return;
      const a = acc.get(current)!;
      a.totalUs += nowUs() - phaseStart;
      a.costs.push(diffCosts(await disk.stats(), before));
    };
    for (const e of trace.events) {
      if (e.phase !== current) {
        await endPhase();
        current = e.phase;
        if (!acc.has(current)) acc.set(current, { lat: [], writes: 0, totalUs: 0, costs: [] });
        before = await disk.stats();
        phaseStart = nowUs();
      }
      const t = nowUs();
      if (e.op === "w") {
        await disk.write(e.offset, data.subarray(0, e.length));
        const a = acc.get(current)!;
        a.lat.push(nowUs() - t);
        a.writes++;
      } else if (e.op === "r") await disk.read(e.offset, e.length);
      else if (e.op === "f") await disk.flush();
      else if (e.op === "s") {
        await disk.flush();
        await disk.snapshotCreate(e.name ?? "trace");
      }
    }
    await endPhase();
    await disk.close();
    fs.rmSync(file, { force: true });
  }
  const rows: ResultRow[] = [];
  for (const [ph, a] of acc) {
    if (!a.writes) continue;
    const breakdown: Record<string, PurposeRow> = {};
    const perRep = a.writes / opts.reps;
    for (const c of a.costs) addBreakdown(breakdown, perWrite(c, perRep), opts.reps);
    rows.push({
      source: "refcow",
      scheme,
      alloc,
      cache,
      workload: "trace",
      phase: ph || "(none)",
      median_us: quantile(a.lat, 0.5),
      p99_us: quantile(a.lat, 0.99),
      amortized_us: a.totalUs / a.writes,
      runs: opts.reps,
      breakdown,
      cdf_us: percentiles(a.lat),
    });
  }
  return rows;
}

/** The same trace on a preallocated raw file: pwrite, and fdatasync at each flush (and each write in writethrough). */
function rawTraceRows(opts: BenchOptions, trace: Trace, cache: CacheMode): ResultRow[] {
  const maxLen = Math.max(512, ...trace.events.map((e) => e.length));
  const data = new Uint8Array(maxLen).fill(0x5a);
  const acc = new Map<string, { lat: number[]; totalUs: number }>();
  for (let rep = 0; rep < opts.reps; rep++) {
    const file = path.join(opts.dir, `trace-raw-${cache}-${rep}.img`);
    fs.writeFileSync(file, "");
    fs.truncateSync(file, trace.header.size);
    const fd = fs.openSync(file, "r+");
    let current: string | undefined;
    let phaseStart = 0;
    for (const e of trace.events) {
      if (e.phase !== current) {
        if (current !== undefined) acc.get(current)!.totalUs += nowUs() - phaseStart;
        current = e.phase;
        if (!acc.has(current)) acc.set(current, { lat: [], totalUs: 0 });
        phaseStart = nowUs();
      }
      const t = nowUs();
      if (e.op === "w") {
        fs.writeSync(fd, data, 0, e.length, e.offset);
        if (cache === "writethrough") fs.fdatasyncSync(fd);
        acc.get(current)!.lat.push(nowUs() - t);
      } else if (e.op === "r") fs.readSync(fd, data, 0, e.length, e.offset);
      else if (e.op === "f" && cache !== "unsafe") fs.fdatasyncSync(fd);
    }
    if (current !== undefined) acc.get(current)!.totalUs += nowUs() - phaseStart;
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
  return [...acc]
    .filter(([, a]) => a.lat.length)
    .map(([ph, a]) => ({ source: "raw" as const, scheme: "none", cache, workload: "trace", phase: ph || "(none)", median_us: quantile(a.lat, 0.5), p99_us: quantile(a.lat, 0.99), amortized_us: a.totalUs / a.lat.length, runs: opts.reps, cdf_us: percentiles(a.lat) }));
}

export async function runMatrix(opts: BenchOptions): Promise<ResultRow[]> {
  const rows: ResultRow[] = [];
  fs.mkdirSync(opts.dir, { recursive: true });
  try {
    for (const workload of opts.workloads) {
      if (workload === "trace") {
        if (!opts.traceFile) throw new Error("the trace workload needs a trace file (--trace FILE, written by `refcow run --trace`)");
        const trace = readTrace(opts.traceFile);
        for (const cache of opts.caches) {
          for (const scheme of opts.schemes) {
            for (const alloc of opts.allocs) {
              opts.progress(`refcow ${scheme} ${alloc} ${cache} trace replay (${trace.events.length} requests)`);
              rows.push(...(await traceRows(opts, trace, scheme, alloc, cache)));
            }
          }
          opts.progress(`raw file ${cache} trace replay`);
          rows.push(...rawTraceRows(opts, trace, cache));
        }
        continue;
      }
      for (const cache of opts.caches) {
        for (const scheme of opts.schemes) {
          for (const alloc of opts.allocs) {
            opts.progress(`refcow ${scheme} ${alloc} ${cache} ${workload}`);
            rows.push(...(await refcowRows(opts, scheme, alloc, cache, workload)));
          }
        }
        opts.progress(`raw file ${cache} ${workload}`);
        rows.push(...rawRows(opts, cache, workload));
      }
    }
    if (opts.qemu) {
      for (const cache of opts.caches) {
        for (const flavour of ["std", "lazy_refcounts"] as const) {
          opts.progress(`qemu-img bench ${flavour} ${cache}`);
          rows.push(...qemuRows(opts, flavour, cache));
        }
      }
    }
    // Snapshot operations allocate little (an L1 copy, refcount blocks, a table): timed under the first
    // allocation policy asked for only, which keeps the 16 GiB runs of the full matrix to one per scheme.
    const opAlloc = opts.allocs[0] ?? "first-fit";
    for (const size of opts.opSizes) {
      for (const scheme of opts.schemes) {
        opts.progress(`snapshot/open/close timings: ${scheme} ${opAlloc}, ${Math.round(size / 2 ** 20)} MiB allocated`);
        rows.push(...opRows(opts, scheme, opAlloc, size));
      }
    }
  } finally {
    await closeAllWorkers();
  }
  return rows;
}

export function defaultOptions(quick: boolean): BenchOptions {
  return {
    clusters: quick ? 300 : 2000,
    reps: quick ? 1 : 3,
    schemes: [...SCHEME_NAMES],
    allocs: ["first-fit"],
    caches: ["writethrough", "writeback"],
    workloads: quick ? ["rand4k-per-cluster"] : ["rand4k-per-cluster", "seq"],
    qemu: true,
    inProcess: false,
    opSizes: quick ? [16 << 20, 64 << 20, 256 << 20] : [1 << 30, 4 * 2 ** 30, 16 * 2 ** 30],
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
