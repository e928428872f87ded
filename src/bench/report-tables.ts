/**
 * The report's tables, shared by the printed text, report.md and report.html: the write table (figures with
 * their min–max over rounds, like-for-like ratios), the fio cross-check and queue-depth tables, and the
 * flush-policy split.
 */
import type { FioRow, ResultRow } from "./matrix.js";
import { hostTotals } from "./cost-groups.js";
import { schemeLabel } from "./scheme-label.js";
import { baseRow, formatRatio, ratioOf, type RatioKind } from "./ratios.js";
import { sourceName } from "./sources.js";
import { spread, type Spread } from "../stats/latency.js";

export const f1 = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));

/** "38 (31–45)": a figure with its range over rounds; the bare figure when there is no range. */
export function withRange(median: number | null | undefined, min?: number, max?: number): string {
  if (median === null || median === undefined) return "-";
  return min !== undefined && max !== undefined && (min !== median || max !== median) ? `${f1(median)} (${f1(min)}–${f1(max)})` : f1(median);
}

/** The rows of the write workloads, the trace and the guest runs (not the snapshot operations). */
export const writeRowsOf = (rows: ResultRow[]) => rows.filter((r) => r.workload !== "snapshot-ops");

/** A row's name: who, and through which transport. */
export const rowName = (r: ResultRow) => (r.transport ? sourceName({ ...r, transport: r.transport }) : `${schemeLabel(r)} (guest)`);

const RATIOS: RatioKind[] = ["vs in-place", "vs qemu", "vs raw"];

export function padTable(lines: string[][]): string {
  const w = lines[0]!.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  return lines.map((l) => l.map((c, i) => c.padEnd(w[i]!)).join("  ").trimEnd()).join("\n") + "\n";
}

/** The write table's cells of one row (shared by the text and HTML tables). */
export function writeCells(rows: ResultRow[], r: ResultRow): string[] {
  const host = r.breakdown ? hostTotals(r.breakdown) : undefined;
  return [
    rowName(r),
    String(r.cache),
    r.workload,
    r.phase,
    withRange(r.median_us, r.median_us_min, r.median_us_max),
    withRange(r.p99_us, r.p99_us_min, r.p99_us_max),
    withRange(r.amortized_us, r.amortized_us_min, r.amortized_us_max),
    String(r.runs),
    ...RATIOS.map((k) => formatRatio(ratioOf(rows, r, k))),
    host ? (host.bytes / 1024).toFixed(1) : "",
    host ? host.flushes.toFixed(2) : "",
    r.close_us !== undefined ? (r.close_us / 1000).toFixed(1) : "",
    r.amortized_close_us !== undefined ? f1(r.amortized_close_us) : "",
  ];
}

export const WRITE_HEAD = ["source (transport)", "cache", "workload", "phase", "median µs (min–max)", "p99 µs (min–max)", "per write µs, amortized (min–max)", "runs", "vs in-place", "vs qemu", "vs raw", "host KiB/w", "flushes/w", "close ms", "per write µs, with close"];

/** The fio rows at queue depth 1 beside the bench's own figures for the same cell. */
export function fioCrossCheck(rows: ResultRow[], fio: FioRow[]): Array<{ f: FioRow; bench?: ResultRow; agrees?: boolean }> {
  return fio
    .filter((f) => f.iodepth === 1)
    .map((f) => {
      const bench = rows.find((r) => r.source === f.source && r.scheme === f.scheme && !r.order && r.transport === f.transport && r.cache === f.cache && r.workload === f.workload && r.phase === f.phase);
      // fio's histogram is exact to a few percent; a round's median is within its min–max: both widened by 10 %.
      const agrees = bench ? f.clat_p50_us >= (bench.median_us_min ?? bench.median_us) * 0.9 && f.clat_p50_us <= (bench.median_us_max ?? bench.median_us) * 1.1 : undefined;
      return { f, bench, agrees };
    });
}

export const FIO_CHECK_HEAD = ["source (transport)", "cache", "workload", "phase", "fio clat p50 µs", "bench median µs (min–max)", "fio clat p99 µs", "bench p99 µs", "within the spread"];

export function fioCheckCells(x: ReturnType<typeof fioCrossCheck>[number]): string[] {
  const { f, bench } = x;
  return [
    sourceName(f),
    f.cache,
    f.workload,
    f.phase,
    f1(f.clat_p50_us),
    bench ? withRange(bench.median_us, bench.median_us_min, bench.median_us_max) : "-",
    f1(f.clat_p99_us),
    bench ? f1(bench.p99_us) : "-",
    x.agrees === undefined ? "no bench row" : x.agrees ? "yes" : "no",
  ];
}

/** The queue-depth benchmark: refcow's export against qemu-nbd std, random writes in writeback. */
export function fioDepthRows(fio: FioRow[]): string[][] {
  const out: string[][] = [];
  const depths = [...new Set(fio.filter((f) => f.workload === "rand4k-per-cluster" && f.cache === "writeback").map((f) => f.iodepth))].sort((a, b) => a - b);
  for (const phase of ["in-place", "post-snapshot"]) {
    for (const d of depths) {
      const get = (source: string) => fio.find((f) => f.source === source && f.cache === "writeback" && f.workload === "rand4k-per-cluster" && f.phase === phase && f.iodepth === d && f.source !== "raw");
      const r = get("refcow");
      const q = get("qemu");
      if (!r && !q) continue;
      out.push([phase, String(d), r ? r.iops.toFixed(0) : "-", r ? f1(r.clat_p50_us) : "-", r ? f1(r.clat_p99_us) : "-", q ? q.iops.toFixed(0) : "-", q ? f1(q.clat_p50_us) : "-", q ? f1(q.clat_p99_us) : "-", r && q ? `${(r.iops / q.iops).toFixed(2)}×` : "-"]);
    }
  }
  return out;
}

export const FIO_DEPTH_HEAD = ["phase", "iodepth", "refcow nbd IOPS", "clat p50 µs", "clat p99 µs", "qemu-nbd IOPS", "clat p50 µs", "clat p99 µs", "refcow / qemu-nbd IOPS"];

/**
 * The flush-policy split, per cache mode and pattern, post-snapshot: each source's cost per write above the
 * raw file through the same transport (µs), and refcow's flushes per write: eager, eager --order qemu (ring)
 * and QEMU std (nbd). The difference between eager --order qemu and eager is the flush policy; what
 * eager --order qemu leaves above QEMU's own excess is the rest (COW, refcount work, the implementation).
 */
export interface FlushSplit {
  cache: string;
  workload: string;
  eager?: { excess: Spread; flushes: number };
  qemuOrder?: { excess: Spread; flushes: number };
  qemu?: { excess: Spread };
}

function excessOverRaw(rows: ResultRow[], r: ResultRow | undefined): Spread | undefined {
  if (!r) return undefined;
  const raw = baseRow(rows, r, "vs raw");
  if (!raw) return undefined;
  const n = Math.min(r.reps?.length ?? 0, raw.reps?.length ?? 0);
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(r.reps![i]!.amortized_us - raw.reps![i]!.amortized_us);
  return xs.length ? spread(xs) : undefined;
}

export function flushSplits(rows: ResultRow[]): FlushSplit[] {
  const out: FlushSplit[] = [];
  const post = rows.filter((r) => r.phase === "post-snapshot" && (r.workload === "rand4k-per-cluster" || r.workload === "seq"));
  const cells = [...new Set(post.map((r) => `${r.cache}|${r.workload}`))];
  for (const c of cells) {
    const [cache, workload] = c.split("|") as [string, string];
    const inCell = post.filter((r) => r.cache === cache && r.workload === workload);
    const eager = inCell.find((r) => r.source === "refcow" && r.scheme === "eager" && !r.order && (r.transport === "ring" || r.transport === "in-process") && (!r.alloc || r.alloc === "first-fit"));
    const qo = inCell.find((r) => r.source === "refcow" && r.scheme === "eager" && r.order === "qemu");
    const qemu = inCell.find((r) => r.source === "qemu" && r.scheme === "std" && r.transport === "nbd");
    const split: FlushSplit = { cache, workload };
    const e = excessOverRaw(rows, eager);
    if (e) split.eager = { excess: e, flushes: hostTotals(eager!.breakdown).flushes };
    const q = excessOverRaw(rows, qo);
    if (q) split.qemuOrder = { excess: q, flushes: hostTotals(qo!.breakdown).flushes };
    const qq = excessOverRaw(rows, qemu);
    if (qq) split.qemu = { excess: qq };
    if (split.eager || split.qemuOrder || split.qemu) out.push(split);
  }
  return out;
}

export const sr = (s: Spread | undefined) => (s ? withRange(s.median, s.min, s.max) : "-");

export const FLUSH_SPLIT_HEAD = ["cache", "workload", "eager (ring): µs/w over raw (ring)", "flushes/w", "eager --order qemu (ring): µs/w over raw (ring)", "flushes/w", "QEMU std (nbd): µs/w over raw (nbd)"];

export function flushSplitCells(s: FlushSplit): string[] {
  return [s.cache, s.workload, sr(s.eager?.excess), s.eager ? s.eager.flushes.toFixed(2) : "-", sr(s.qemuOrder?.excess), s.qemuOrder ? s.qemuOrder.flushes.toFixed(2) : "-", sr(s.qemu?.excess)];
}

