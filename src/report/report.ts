/**
 * Benchmark output: the printed table (every figure with its min–max over rounds, every ratio like for like
 * and computed round by round, see ratios.ts), results.json, and report.md. Each report leads with the answer
 * (answer.ts: a table per cache mode and at most three sentences), then the figures behind it in prose, every
 * number from the rows with the transport it was measured through; then the sources that failed or are
 * missing, each with its reason, and the full tables.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { FailedSource, FioRow, GuestResult, MissingSource, ResultRow, ResultsFile, ShardRecord } from "./results.js";
import { type AnswerModel, answerText, buildAnswer } from "./answer.js";
import { failureLine } from "./failures.js";
import { COST_GROUPS, groupTimes, hostTotals } from "./cost-groups.js";
import { schemeLabel } from "./scheme-label.js";
import { guestRows, v86Failures, v86Runs } from "./guest-results.js";
import { EMULATOR_NOTE, emulatorTable, hasOtherEmulators } from "./emulator-section.js";
import { guestAnswer, guestSectionMarkdown, textTable } from "./guest-section.js";
import { renderHtml } from "./report-html.js";
import { baseRow, formatRatio, QEMU_BASE, ratioOf } from "./ratios.js";
import type { Spread } from "../stats/latency.js";
import {
  f1,
  FIO_CHECK_HEAD,
  FIO_DEPTH_HEAD,
  fioCheckCells,
  failedWriteCells,
  failedWriteEntries,
  fioCrossCheck,
  fioDepthRows,
  fioIopsRatio,
  STATISTICS_NOTE,
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

/** Everything the tables and the paragraphs are drawn from. */
export type ReportInput = Pick<ResultsFile, "rows" | "guest" | "fio" | "missing" | "failed" | "options">;

export function table(rows: ResultRow[], fio: FioRow[] = [], missing: MissingSource[] = [], failed: FailedSource[] = []): string {
  const write = writeRowsOf(rows);
  let out = padTable([WRITE_HEAD, ...write.map((r) => writeCells(rows, r)), ...failedWriteEntries(failed).map(failedWriteCells)]);
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
    for (const r of ops.filter((x) => x.check)) out += `  ${schemeLabel(r)}, ${Math.round(r.size_bytes! / 2 ** 20)} MiB: ${r.check} (qemu-img check; a crash may leak clusters, as under QEMU)\n`;
  }
  if (failed.length) out += "\nfailed sources (no figures of theirs are used):\n" + failed.map((f) => `  ${failureLine(f)}\n`).join("");
  if (missing.length) out += "\nmissing sources (their rows are absent):\n" + missing.map((m) => `  ${m.source}: ${m.reason}\n`).join("");
  out += `\n(${STATISTICS_NOTE})\n`;
  return out;
}



/** Where a write's I/O time goes, by cost group, as shares of the accounted time. */
function shares(r: ResultRow): Record<string, number> {
  const g = groupTimes(r.breakdown);
  const total = Object.values(g).reduce((a, b) => a + b, 0);
  return Object.fromEntries(Object.entries(g).map(([k, v]) => [k, total ? v / total : 0]));
}

const rt = (s: Spread | undefined) => (s && s.runs ? formatRatio(s) : "?");
const fig = (r: ResultRow) => `${f1(r.amortized_us)} µs (${f1(r.amortized_us_min ?? r.amortized_us)}–${f1(r.amortized_us_max ?? r.amortized_us)})`;

/**
 * The figures behind the answer, in prose, one paragraph per subject: per cache mode eager's post-snapshot
 * write and where its time goes, and every source through NBD; the flush policy; fio; allocation after a
 * delete, snapshot creation, and what failed or is missing. Every figure is amortized per write (median over
 * rounds, min–max) unless it says otherwise, every ratio computed within each round.
 */
export function details(rows: ResultRow[], fio: FioRow[] = [], missing: MissingSource[] = [], failed: FailedSource[] = []): string[] {
  const paras: string[] = [];
  let parts: string[] = [];
  const paragraph = () => {
    if (parts.length) paras.push(parts.join(" "));
    parts = [];
  };
  const firstFit = (r: ResultRow) => !r.alloc || r.alloc === "first-fit";
  const workload = "rand4k-per-cluster";
  const post = rows.filter((r) => r.phase === "post-snapshot" && r.workload === workload && firstFit(r) && !r.order);
  for (const cache of [...new Set(post.map((r) => String(r.cache)))]) {
    const eager = post.find((r) => r.source === "refcow" && r.scheme === "eager" && r.cache === cache && (r.transport === "ring" || r.transport === "in-process"));
    if (eager) {
      const sh = shares(eager);
      const top = Object.entries(sh).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`).join(", ");
      parts.push(
        `In ${cache}, a random 4 KiB write right after a snapshot costs ${fig(eager)} amortized per write with eager refcounts through the ${eager.transport}, ` +
          `${rt(ratioOf(rows, eager, "vs in-place"))} the same write in place and ${rt(ratioOf(rows, eager, "vs raw"))} the raw file through the ${eager.transport}; ` +
          `its I/O time goes to ${top}, with ${hostTotals(eager.breakdown).flushes.toFixed(2)} flushes per write (mean over rounds).`,
      );
    }
    const nbd = post.filter((r) => r.cache === cache && r.transport === "nbd");
    if (nbd.length) {
      parts.push(`Through NBD (${cache}) a post-snapshot write costs, amortized: ${nbd.map((r) => `${rowName(r).replace(/ \(nbd\)$/, "")} ${fig(r)}`).join(", ")}.`);
      const q = nbd.find((r) => r.source === "qemu" && r.scheme === QEMU_BASE);
      if (q) parts.push(`QEMU std's own post-snapshot write through qemu-nbd is ${rt(ratioOf(rows, q, "vs in-place"))} its in-place one and ${rt(ratioOf(rows, q, "vs raw"))} the raw file through qemu-nbd.`);
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
  const depthCells = fio.filter((f) => f.workload === workload && f.cache === "writeback" && f.phase === "post-snapshot" && f.source === "refcow");
  const depths = [...new Set(depthCells.map((f) => f.iodepth))].sort((a, b) => a - b);
  for (const d of depths) {
    const q = fio.find((f) => f.source === "qemu" && f.scheme === QEMU_BASE && f.workload === workload && f.cache === "writeback" && f.phase === "post-snapshot" && f.iodepth === d);
    if (!q) continue;
    parts.push(`fio at iodepth ${d} (random 4 KiB writes after the snapshot, writeback), refcow's export ÷ qemu-nbd's IOPS, per round: ${depthCells.filter((f) => f.iodepth === d).map((f) => `${f.scheme} ${formatRatio(fioIopsRatio(f, q))}`).join(", ")}.`);
  }
  const cross = fioCrossCheck(rows, fio);
  const check = cross.filter((c) => c.agrees === false);
  if (check.length) parts.push(`fio's clat p50 falls outside the bench's per-request median spread in ${check.length} of ${cross.length} cells (see the fio table).`);
  // The load generator's own NBD client against fio's (libnbd), where the server adds least: the raw file.
  const floor = cross.filter((c) => c.f.source === "raw" && c.f.cache === "writeback" && c.bench);
  if (floor.length) {
    parts.push(
      `On the raw file through qemu-nbd in writeback, where the server adds least, the bench's per-request median against fio's clat p50 is ` +
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
    if (pairs.length) parts.push(`Allocating writes after the snapshot is deleted (free clusters inside the file), amortized: ${pairs.join("; ")}.`);
  }
  const ops = rows.filter((r) => r.workload === "snapshot-ops" && r.phase === "snapshot-create" && firstFit(r));
  if (ops.length) {
    const largest = Math.max(...ops.map((r) => r.size_bytes!));
    const at = ops.filter((r) => r.size_bytes === largest).sort((a, b) => a.median_us - b.median_us);
    parts.push(`Snapshot creation with ${Math.round(largest / 2 ** 20)} MiB allocated takes (median over rounds) ${at.map((r) => `${f1(r.median_us / 1000)} ms (${r.scheme})`).join(", ")}.`);
  }
  if (failed.length) parts.push(`Failed, so not used: ${failed.map((f) => `${f.name}${f.cache ? ` ${f.cache}` : ""} (${f.part})`).join("; ")}.`);
  if (missing.length) parts.push(`Not measured: ${missing.map((m) => `${m.source} (${m.reason})`).join("; ")}.`);
  paragraph();
  return paras;
}

/** The schemes a results file's options asked for, when it says. */
function askedSchemes(options: unknown): string[] | undefined {
  const o = options as { schemes?: unknown; bench?: { schemes?: unknown } } | undefined;
  const s = o?.schemes ?? o?.bench?.schemes;
  return Array.isArray(s) && s.every((x) => typeof x === "string") ? (s as string[]) : undefined;
}

/** The answer's tables and sentences. */
export function answerOf(results: ReportInput): AnswerModel {
  return buildAnswer({ rows: results.rows, missing: results.missing ?? [], failed: results.failed ?? [], schemes: askedSchemes(results.options) });
}

/** The paragraphs below the answer: the host figures, then the guest runs. */
export function detailParagraphs(results: ReportInput): string[] {
  const guest = guestAnswer(v86Runs(results.guest ?? []));
  return [...details(results.rows, results.fio ?? [], results.missing ?? [], results.failed ?? []), ...(guest ? [guest] : [])];
}

/** The whole answer as text (a terminal, or markdown): the tables, the sentences, then the figures in prose. */
export function fullAnswer(results: ReportInput, style: "markdown" | "text" = "text"): string {
  const d = detailParagraphs(results);
  const lead = answerText(answerOf(results), style, padTable);
  if (!d.length) return lead;
  return `${lead}\n\n${style === "markdown" ? "### The figures behind it\n\n" : ""}${d.join("\n\n")}`;
}

/** report.md's list of what failed and what is missing, each with its reason. */
function failedMarkdown(failed: FailedSource[], missing: MissingSource[]): string {
  if (!failed.length && !missing.length) return "";
  return [
    "## Failed and missing sources",
    "",
    ...(failed.length ? ["Failed (their figures are not used; every other figure and ratio stands without them):", "", ...failed.map((f) => `- ${failureLine(f)}`), ""] : []),
    ...(missing.length ? ["Missing (not measured):", "", ...missing.map((m) => `- ${m.source}: ${m.reason}`), ""] : []),
  ].join("\n");
}

/** The guest under v86 and under QEMU, side by side (emulator-section.ts); "" when only v86 ran. */
function emulatorMarkdown(results: ResultsFile): string {
  const guest = results.guest ?? [];
  const failed = results.failed ?? [];
  if (!hasOtherEmulators(guest, failed)) return "";
  return ["## The guest under v86 and under QEMU", "", EMULATOR_NOTE, "", "```", textTable(emulatorTable(guest, results.rows, failed)).trimEnd(), "```", ""].join("\n");
}

function markdown(results: ResultsFile): string {
  const m = results.machine;
  const allRows = [...results.rows, ...guestRows(v86Runs(results.guest ?? []))];
  return [
    "# refcow: write latency after an internal snapshot",
    "",
    `Generated ${results.generated} on ${m.cpu}, kernel ${m.kernel}, ${m.filesystem}, Node ${m.node}, ${m.qemu}.${m.wasm ? ` ${m.wasm}.` : ""}`,
    "",
    ...shardLines(results),
    "## Answer",
    "",
    fullAnswer(results, "markdown"),
    "",
    failedMarkdown(results.failed ?? [], results.missing ?? []),
    "## Figures",
    "",
    "```",
    table(allRows, results.fio ?? [], [], results.failed ?? []).trimEnd(),
    "```",
    "",
    guestSectionMarkdown(v86Runs(results.guest ?? []), results.rows, v86Failures(results.failed ?? [])),
    emulatorMarkdown(results),
    "Charts: report.html.",
    "",
  ].join("\n");
}

/** Which shard a run was, or which shards a merge holds (and what it lacks), as report lines. */
function shardLines(results: ResultsFile): string[] {
  const version = results.version ? [`refcow ${results.version}.`, ""] : [];
  if (results.shard) return [...version, `Shard ${results.shard.index}/${results.shard.count}: ${results.shard.cells.length} of the matrix's ${results.shard.matrix.length} cells.`, ""];
  if (results.shards) {
    const s = results.shards;
    const lacking = s.missingCells.length ? ` ${s.missingCells.length} cells not run (their shards were not merged): listed under the sources not measured.` : " Every cell of the matrix was run.";
    return [...version, `Merged shards ${s.merged.join(", ")} of ${s.count}.${lacking}`, ""];
  }
  return version;
}

/** Writes results.json, report.md and report.html into `dir`. */
export async function writeOutputs(
  dir: string,
  bench: { rows: ResultRow[]; fio?: FioRow[]; missing?: MissingSource[]; failed?: FailedSource[]; shard?: ShardRecord },
  machineInfo: Record<string, string>,
  options: unknown,
  guest: GuestResult[] = [],
  version?: string,
): Promise<void> {
  const results: ResultsFile = {
    generated: new Date().toISOString(),
    ...(version ? { version } : {}),
    machine: machineInfo,
    options,
    rows: bench.rows,
    fio: bench.fio ?? [],
    missing: bench.missing ?? [],
    failed: bench.failed ?? [],
    guest,
    ...(bench.shard ? { shard: bench.shard } : {}),
  };
  await writeReport(dir, results, true);
}

/** Renders the report files of a results object (also used to re-render a saved results.json). */
export async function writeReport(dir: string, results: ResultsFile, writeJson: boolean): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  if (writeJson) fs.writeFileSync(path.join(dir, "results.json"), JSON.stringify(results, null, 2));
  fs.writeFileSync(path.join(dir, "report.md"), markdown(results));
  fs.writeFileSync(path.join(dir, "report.html"), await renderHtml(results, answerOf(results), detailParagraphs(results)));
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
    failed: Array.isArray(r.failed) ? r.failed : [],
    guest: Array.isArray(r.guest) ? r.guest : [],
    ...(typeof r.version === "string" ? { version: r.version } : {}),
    ...(r.shard && typeof r.shard === "object" ? { shard: r.shard } : {}),
    ...(r.shards && typeof r.shards === "object" ? { shards: r.shards } : {}),
  };
}
