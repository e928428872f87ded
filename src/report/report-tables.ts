/**
 * The report's tables, shared by the printed text, report.md and report.html: the write table (figures with
 * their min–max over rounds, like-for-like ratios), the fio cross-check and queue-depth tables, and the
 * flush-policy split.
 */
import { type FailedSource, type FioRow, type ResultRow, sourceName } from "./results.js";
import { hostTotals } from "./cost-groups.js";
import { schemeLabel } from "./scheme-label.js";
import { baseRow, formatRatio, QEMU_BASE, ratioOf, type RatioKind } from "./ratios.js";
import { ratioByRounds, spread, type Spread } from "../stats/latency.js";

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
    r.amortized_close_us !== undefined ? withRange(r.amortized_close_us, r.amortized_close_us_min, r.amortized_close_us_max) : "",
  ];
}

export const WRITE_HEAD = [
  "source (transport)",
  "cache",
  "workload",
  "phase",
  "median µs per request (min–max)",
  "p99 µs per request (min–max)",
  "amortized µs/write (min–max)",
  "runs",
  "vs in-place (amortized)",
  "vs QEMU std (amortized)",
  "vs raw (amortized)",
  "host KiB/w (mean)",
  "flushes/w (mean)",
  "close ms (median)",
  "amortized µs/write with close (min–max)",
];

/** What every column's statistic is, under the full table. */
export const STATISTICS_NOTE =
  "median and p99: per-request write latency, submission to completion, flushes excluded; amortized: phase wall time ÷ writes, flush waits included; " +
  "with close: (phase wall time + close) ÷ writes; host KiB/w and flushes/w: means over rounds; each other figure is the median over rounds with its min–max; " +
  "ratios use the amortized figure, computed within each round between rows of the same workload, cache mode and transport, then the median with min–max; writeback flushes every 64 writes";

/** A failed source's reason, short enough for a table cell (the failed-sources list has it whole). */
export function shortReason(f: FailedSource, max = 90): string {
  const text = f.check ? `qemu-img check: ${f.check}` : (f.reason.split("\n")[0] ?? f.reason);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The failed entries that stand where write-table rows would be (write matrix and trace replay). */
export const failedWriteEntries = (failed: readonly FailedSource[]) => failed.filter((f) => f.part === "write matrix" || f.part === "trace replay");

/** The write table's cells of a source that failed: its name, where, and why, in place of its figures. */
export function failedWriteCells(f: FailedSource): string[] {
  const cells = [f.name, f.cache ?? "", f.workload ?? "", "every phase", `FAILED${f.round !== undefined ? ` in round ${f.round}` : ""}: ${shortReason(f, 60)}`];
  while (cells.length < WRITE_HEAD.length) cells.push("");
  return cells;
}

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

export const FIO_CHECK_HEAD = ["source (transport)", "cache", "workload", "phase", "fio clat p50 µs (min–max)", "bench median µs per request (min–max)", "fio clat p99 µs (median)", "bench p99 µs (median)", "rounds", "fio p50 within the bench's spread"];

export function fioCheckCells(x: ReturnType<typeof fioCrossCheck>[number]): string[] {
  const { f, bench } = x;
  return [
    sourceName(f),
    f.cache,
    f.workload,
    f.phase,
    withRange(f.clat_p50_us, f.clat_p50_us_min, f.clat_p50_us_max),
    bench ? withRange(bench.median_us, bench.median_us_min, bench.median_us_max) : "-",
    f1(f.clat_p99_us),
    bench ? f1(bench.p99_us) : "-",
    `${f.runs ?? 1} / ${bench?.runs ?? "-"}`,
    x.agrees === undefined ? "no bench row" : x.agrees ? "yes" : "no",
  ];
}

/** A fio row's rounds (one round for a results file written before fio ran in rounds). */
const fioReps = (f: FioRow) => f.reps ?? [{ iops: f.iops, clat_p50_us: f.clat_p50_us, clat_p99_us: f.clat_p99_us }];

/** refcow's export / qemu-nbd std IOPS of two fio rows, computed within each round, then median (min–max). */
export function fioIopsRatio(r: FioRow, q: FioRow): Spread {
  return ratioByRounds(fioReps(r).map((x) => x.iops), fioReps(q).map((x) => x.iops));
}

/**
 * The queue-depth benchmark: random 4 KiB writes in writeback, every source through NBD (refcow's export under
 * each scheme, qemu-nbd std), per phase and queue depth; each IOPS figure with its ratio to qemu-nbd's.
 */
export function fioDepthRows(fio: FioRow[]): string[][] {
  const out: string[][] = [];
  const mine = fio.filter((f) => f.workload === "rand4k-per-cluster" && f.cache === "writeback" && f.source !== "raw");
  const depths = [...new Set(mine.map((f) => f.iodepth))].sort((a, b) => a - b);
  for (const phase of ["in-place", "post-snapshot"]) {
    for (const d of depths) {
      const here = mine.filter((f) => f.phase === phase && f.iodepth === d);
      const q = here.find((f) => f.source === "qemu" && f.scheme === QEMU_BASE);
      for (const r of [...here.filter((f) => f.source === "refcow"), ...(q ? [q] : [])]) {
        out.push([
          phase,
          String(d),
          r.source === "qemu" ? "qemu-nbd (QEMU std)" : `refcow nbd, ${r.scheme}`,
          withRange(r.iops, r.iops_min, r.iops_max),
          f1(r.clat_p50_us),
          f1(r.clat_p99_us),
          String(r.runs ?? 1),
          r === q ? "1 (base)" : q ? formatRatio(fioIopsRatio(r, q)) : "no qemu-nbd row",
        ]);
      }
    }
  }
  return out;
}

export const FIO_DEPTH_HEAD = ["phase", "iodepth", "source (nbd)", "IOPS, median (min–max)", "clat p50 µs (median)", "clat p99 µs (median)", "rounds", "IOPS ÷ qemu-nbd's, per round: median (min–max)"];

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

