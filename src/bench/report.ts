/**
 * Benchmark output: the printed table (every figure with its min–max over rounds, every ratio like for like
 * and computed round by round, see ratios.ts), results.json, and report.md with a paragraph whose every
 * number comes from the rows and names the transport it was measured through.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { FioRow, MissingSource, ResultRow } from "./matrix.js";
import { COST_GROUPS, groupTimes, hostTotals } from "./cost-groups.js";
import { schemeLabel } from "./scheme-label.js";
import { guestRows, type GuestResult } from "./guest-results.js";
import { guestAnswer, guestSectionMarkdown } from "./guest-section.js";
import { renderHtml, type ResultsFile } from "./report-html.js";
import { baseRow, formatRatio, ratio, ratioOf } from "./ratios.js";
import type { Spread } from "../stats/latency.js";
import {
  f1,
  FIO_CHECK_HEAD,
  FIO_DEPTH_HEAD,
  fioCheckCells,
  fioCrossCheck,
  fioDepthRows,
  FLUSH_SPLIT_HEAD,
  flushSplitCells,
  flushSplits,
  padTable,
  rowName,
  sr,
  WRITE_HEAD,
  writeCells,
  writeRowsOf,
} from "./report-tables.js";

/** Everything the tables and the paragraph are drawn from. */
export type ReportInput = Pick<ResultsFile, "rows" | "guest" | "fio" | "missing">;

export function table(rows: ResultRow[], fio: FioRow[] = [], missing: MissingSource[] = []): string {
  const write = writeRowsOf(rows);
  let out = padTable([WRITE_HEAD, ...write.map((r) => writeCells(rows, r))]);
  const broken = write.filter((r) => r.breakdown);
  if (broken.length) {
    out += "\nwhere a write's I/O time goes (µs per write; flush time taken out of each purpose):\n";
    out += padTable([["source (transport)", "cache", "workload", "phase", ...COST_GROUPS], ...broken.map((r) => { const g = groupTimes(r.breakdown); return [rowName(r), String(r.cache), r.workload, r.phase, ...COST_GROUPS.map((k) => f1(g[k]))]; })]);
  }
  const splits = flushSplits(rows);
  if (splits.length) out += "\nflush policy, post-snapshot (cost per write above the raw file through the same transport):\n" + padTable([FLUSH_SPLIT_HEAD, ...splits.map(flushSplitCells)]);
  const check = fioCrossCheck(rows, fio);
  if (check.length) out += "\nfio (ioengine=nbd, iodepth 1, the same requests) beside the bench's own figures:\n" + padTable([FIO_CHECK_HEAD, ...check.map(fioCheckCells)]);
  const depth = fioDepthRows(fio);
  if (depth.length) out += "\nfio random 4 KiB writes, writeback, refcow nbd vs qemu-nbd (same image options):\n" + padTable([FIO_DEPTH_HEAD, ...depth]);
  const ops = rows.filter((r) => r.workload === "snapshot-ops");
  if (ops.length) {
    out += "\nsnapshot / open / close timings (median ms over rounds, in-process):\n";
    const sizes = [...new Set(ops.map((r) => r.size_bytes!))];
    const names = [...new Set(ops.map((r) => r.phase))];
    const schemes = [...new Set(ops.map((r) => schemeLabel(r)))];
    const lines = [["scheme", "allocated", ...names]];
    for (const size of sizes) for (const s of schemes) lines.push([s, `${Math.round(size / 2 ** 20)} MiB`, ...names.map((n) => f1((ops.find((r) => schemeLabel(r) === s && r.size_bytes === size && r.phase === n)?.median_us ?? NaN) / 1000))]);
    out += padTable(lines);
  }
  if (missing.length) out += "\nmissing sources (their rows are absent):\n" + missing.map((m) => `  ${m.source}: ${m.reason}\n`).join("");
  out +=
    "\n(median and p99: per-request write latency, submission to completion, flushes excluded; per write, amortized: phase wall time / writes, flush waits included; " +
    "each figure is the median over rounds with its min–max; ratios use the amortized figure, round by round, between rows of the same workload, cache mode and transport; writeback flushes every 64 writes.)\n";
  return out;
}

/** Where a write's I/O time goes, by cost group, as shares of the accounted time. */
function shares(r: ResultRow): Record<string, number> {
  const g = groupTimes(r.breakdown);
  const total = Object.values(g).reduce((a, b) => a + b, 0);
  return Object.fromEntries(Object.entries(g).map(([k, v]) => [k, total ? v / total : 0]));
}

const rt = (s: Spread | undefined) => (s ? formatRatio(s) : "?");
const fig = (r: ResultRow) => `${f1(r.amortized_us)} µs (${f1(r.amortized_us_min ?? r.amortized_us)}–${f1(r.amortized_us_max ?? r.amortized_us)})`;

/**
 * When a row's close costs much of what its phase did (a scheme that defers work, as log's copies, until the
 * log fills, the idle time or the close: a phase too short to fill the log pays none of it), the figure
 * with the close counted, beside the in-place row's, so the deferred work is not read as removed.
 */
function closeNote(rows: ResultRow[], r: ResultRow): string {
  if (r.amortized_close_us === undefined || r.amortized_close_us < 1.2 * r.amortized_us) return "";
  const base = baseRow(rows, r, "vs in-place")?.amortized_close_us;
  return `; counting its close, which carries work it deferred, ${f1(r.amortized_close_us)} µs per write${base ? ` against ${f1(base)} µs in place (${(r.amortized_close_us / base).toFixed(2)}×, ratio of the medians)` : ""}`;
}

export function answer(rows: ResultRow[], fio: FioRow[] = [], missing: MissingSource[] = []): string {
  // Paragraphs: one per cache mode, then the flush policy, fio, and the rest.
  const paras: string[] = [];
  let parts: string[] = [];
  const paragraph = () => {
    if (parts.length) paras.push(parts.join(" "));
    parts = [];
  };
  const firstFit = (r: ResultRow) => !r.alloc || r.alloc === "first-fit";
  const workload = "rand4k-per-cluster";
  const post = rows.filter((r) => r.source === "refcow" && r.phase === "post-snapshot" && r.workload === workload && firstFit(r) && !r.order);
  for (const cache of [...new Set(post.map((r) => r.cache))]) {
    const local = post.filter((r) => r.cache === cache && (r.transport === "ring" || r.transport === "in-process"));
    const eager = local.find((r) => r.scheme === "eager");
    if (eager) {
      const sh = shares(eager);
      const top = Object.entries(sh).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`).join(", ");
      parts.push(
        `In ${cache}, a random 4 KiB write right after a snapshot costs ${fig(eager)} per write with eager refcounts through the ${eager.transport}, ` +
          `${rt(ratioOf(rows, eager, "vs in-place"))} the same write in place and ${rt(ratioOf(rows, eager, "vs raw"))} the raw file through the ${eager.transport}; ` +
          `its I/O time goes to ${top}, with ${hostTotals(eager.breakdown).flushes.toFixed(2)} flushes per write.`,
      );
    }
    if (local.length > 1) {
      const best = [...local].sort((a, b) => a.amortized_us - b.amortized_us)[0]!;
      const worst = [...local].sort((a, b) => b.amortized_us - a.amortized_us)[0]!;
      parts.push(`The fastest scheme after a snapshot in ${cache} (${best.transport}) is ${best.scheme} at ${fig(best)} (${rt(ratioOf(rows, best, "vs in-place"))} its in-place cost)${closeNote(rows, best)}, the slowest ${worst.scheme} at ${fig(worst)}.`);
    }
    const nbd = post.filter((r) => r.cache === cache && r.transport === "nbd");
    for (const r of nbd) {
      const q = baseRow(rows, r, "vs qemu");
      if (!q) continue;
      const rin = baseRow(rows, r, "vs in-place");
      const qin = rin && baseRow(rows, rin, "vs qemu");
      parts.push(
        `Through NBD (${cache}), refcow ${r.scheme} costs ${fig(r)} per post-snapshot write against ${fig(q)} for ${rowName(q)}: ${rt(ratio(r, q))}; ` +
          `QEMU's own post-snapshot write is ${rt(ratioOf(rows, q, "vs in-place"))} its in-place one and ${rt(ratioOf(rows, q, "vs raw"))} the raw file through qemu-nbd` +
          (rin && qin ? `; in place refcow ${r.scheme} through NBD costs ${fig(rin)} against ${fig(qin)} (${rt(ratio(rin, qin))}).` : "."),
      );
    }
    if (!nbd.length) {
      const q = rows.find((r) => r.source === "qemu" && r.scheme === "std" && r.cache === cache && r.phase === "post-snapshot" && r.workload === workload);
      if (q) parts.push(`QEMU std through qemu-nbd (${cache}) pays ${fig(q)} per post-snapshot write, ${rt(ratioOf(rows, q, "vs in-place"))} its in-place cost and ${rt(ratioOf(rows, q, "vs raw"))} the raw file through qemu-nbd; refcow's own NBD export was not measured, so no refcow/QEMU ratio is given.`);
    }
    paragraph();
  }
  for (const s of flushSplits(rows).filter((x) => x.workload === workload)) {
    if (!s.qemuOrder || !s.eager) continue;
    parts.push(
      `Flush policy (${s.cache}, post-snapshot): eager with QEMU 7.2's cache dependencies (--order qemu, ring) issues ${s.qemuOrder.flushes.toFixed(2)} flushes per write instead of ${s.eager.flushes.toFixed(2)} and costs ${sr(s.qemuOrder.excess)} µs per write above the raw file through the ring, against ${sr(s.eager.excess)} µs with refcow's order` +
        (s.qemu ? `; QEMU std through qemu-nbd costs ${sr(s.qemu.excess)} µs above the raw file through qemu-nbd.` : "."),
    );
  }
  paragraph();
  const depth = fioDepthRows(fio);
  if (depth.length) parts.push(`fio (random 4 KiB writes, writeback, refcow nbd / qemu-nbd IOPS): ${depth.map((d) => `${d[0]} at iodepth ${d[1]} ${d[8]}`).join(", ")}.`);
  const check = fioCrossCheck(rows, fio).filter((c) => c.agrees === false);
  if (check.length) parts.push(`fio's clat p50 falls outside the bench's spread in ${check.length} of ${fioCrossCheck(rows, fio).length} cells (see the fio table).`);
  // The load generator's own NBD client against fio's (libnbd), where the server adds least: the raw file.
  const floor = fioCrossCheck(rows, fio).filter((c) => c.f.source === "raw" && c.f.cache === "writeback" && c.bench);
  if (floor.length) {
    parts.push(
      `On the raw file through qemu-nbd in writeback, where the server adds least, the bench's median against fio's clat p50 is ` +
        `${floor.map((c) => `${f1(c.bench!.median_us)} / ${f1(c.f.clat_p50_us)} µs (${c.f.workload}, ${c.f.phase})`).join(", ")}: the difference is the two clients' own cost (Node against libnbd), the same for every NBD source.`,
    );
  }
  paragraph();
  const afterDelete = rows.filter((r) => r.source === "refcow" && r.phase === "after-delete" && r.workload === workload);
  const appended = afterDelete.filter((r) => r.alloc === "append");
  if (appended.length) {
    const pairs = appended
      .map((a) => ({ a, ff: afterDelete.find((r) => firstFit(r) && !r.order && r.scheme === a.scheme && r.cache === a.cache && r.transport === a.transport) }))
      .filter((x) => x.ff)
      .map((x) => `${x.a.scheme} ${x.a.cache} ${f1(x.a.amortized_us)} µs appending vs ${f1(x.ff!.amortized_us)} µs reusing (${x.a.transport})`);
    if (pairs.length) parts.push(`Allocating writes after the snapshot is deleted (free clusters inside the file): ${pairs.join("; ")}.`);
  }
  const ops = rows.filter((r) => r.workload === "snapshot-ops" && r.phase === "snapshot-create" && firstFit(r));
  if (ops.length) {
    const largest = Math.max(...ops.map((r) => r.size_bytes!));
    const at = ops.filter((r) => r.size_bytes === largest).sort((a, b) => a.median_us - b.median_us);
    parts.push(`Snapshot creation with ${Math.round(largest / 2 ** 20)} MiB allocated takes ${at.map((r) => `${f1(r.median_us / 1000)} ms (${r.scheme})`).join(", ")}.`);
  }
  if (missing.length) parts.push(`Not measured: ${missing.map((m) => `${m.source} (${m.reason})`).join("; ")}.`);
  paragraph();
  return paras.join("\n\n");
}

/** The whole answer paragraph: host benchmark first, then the guest runs. */
export function fullAnswer(results: ReportInput): string {
  return [answer(results.rows, results.fio ?? [], results.missing ?? []), guestAnswer(results.guest ?? [])].filter(Boolean).join("\n\n");
}

function markdown(results: ResultsFile, answerText: string): string {
  const m = results.machine;
  const allRows = [...results.rows, ...guestRows(results.guest ?? [])];
  return [
    "# refcow: write latency after an internal snapshot",
    "",
    `Generated ${results.generated} on ${m.cpu}, kernel ${m.kernel}, ${m.filesystem}, Node ${m.node}, ${m.qemu}.`,
    "",
    "## Answer",
    "",
    answerText,
    "",
    "## Figures",
    "",
    "```",
    table(allRows, results.fio ?? [], results.missing ?? []).trimEnd(),
    "```",
    "",
    guestSectionMarkdown(results.guest ?? [], results.rows),
    "Charts: report.html.",
    "",
  ].join("\n");
}

/** Writes results.json, report.md and report.html into `dir`. */
export async function writeOutputs(dir: string, bench: { rows: ResultRow[]; fio?: FioRow[]; missing?: MissingSource[] }, machineInfo: Record<string, string>, options: unknown, guest: GuestResult[] = []): Promise<void> {
  const results: ResultsFile = { generated: new Date().toISOString(), machine: machineInfo, options, rows: bench.rows, fio: bench.fio ?? [], missing: bench.missing ?? [], guest };
  await writeReport(dir, results, true);
}

/** Renders the report files of a results object (also used to re-render a saved results.json). */
export async function writeReport(dir: string, results: ResultsFile, writeJson: boolean): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const answerText = fullAnswer(results);
  if (writeJson) fs.writeFileSync(path.join(dir, "results.json"), JSON.stringify(results, null, 2));
  fs.writeFileSync(path.join(dir, "report.md"), markdown(results, answerText));
  fs.writeFileSync(path.join(dir, "report.html"), await renderHtml(results, answerText));
}

/** Reads a results.json, with a clear error when it is not one. */
export function loadResults(file: string): ResultsFile {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: not a readable JSON file (${(e as Error).message})`);
  }
  const r = data as Partial<ResultsFile>;
  if (!r || typeof r !== "object" || !Array.isArray(r.rows)) throw new Error(`${file}: not a refcow results file (no "rows" array)`);
  for (const [i, row] of r.rows.entries()) {
    if (!row || typeof row.source !== "string" || typeof row.phase !== "string" || typeof row.median_us !== "number") {
      throw new Error(`${file}: row ${i} lacks source, phase or median_us`);
    }
  }
  return {
    generated: String(r.generated ?? "unknown"),
    machine: r.machine ?? {},
    options: r.options,
    rows: r.rows,
    fio: Array.isArray(r.fio) ? r.fio : [],
    missing: Array.isArray(r.missing) ? r.missing : [],
    guest: Array.isArray(r.guest) ? r.guest : [],
  };
}
