/**
 * report.html: one self-contained page (inline CSS and SVG, no script, no external resource) that opens
 * offline: the answer (a table per cache mode, at most three sentences, then the figures behind it), what
 * failed or is missing with its reason, the charts, the full tables and the machine the figures come from.
 */
import type { AnswerModel } from "./answer.js";
import { failureLine } from "./failures.js";
import { buildCharts, renderSvg } from "./charts.js";
import { groupTimes, COST_GROUPS } from "./cost-groups.js";
import { guestClockTable, guestFailures, guestRanking, guestRatioTable, type TableModel } from "./guest-section.js";
import { v86Failures, v86Runs } from "./guest-results.js";
import { EMULATOR_NOTE, emulatorTable, hasOtherEmulators } from "./emulator-section.js";
import type { FailedSource, FioRow, GuestResult, MissingSource, ResultRow, ResultsFile } from "./results.js";
import { schemeLabel } from "./scheme-label.js";
import { failedWriteCells, failedWriteEntries, fioCheckCells, fioCrossCheck, fioDepthRows, FIO_CHECK_HEAD, FIO_DEPTH_HEAD, flushSplitCells, flushSplits, FLUSH_SPLIT_HEAD, rowName, STATISTICS_NOTE, WRITE_HEAD, writeCells, writeRowsOf } from "./report-tables.js";

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
const num = (x: number | null | undefined, digits = 1) => (x === null || x === undefined || !Number.isFinite(x) ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(digits));

function htmlTable(head: string[], body: string[][], numericFrom = 0): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const tr = body.map((row) => `<tr>${row.map((c, i) => `<td${i >= numericFrom ? ' class="n"' : ""}>${esc(c)}</td>`).join("")}</tr>`).join("\n");
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
}

function writeTable(rows: ResultRow[], failed: FailedSource[]): string {
  const w = writeRowsOf(rows);
  const f = failedWriteEntries(failed);
  if (!w.length && !f.length) return "";
  return htmlTable(WRITE_HEAD, [...w.map((r) => writeCells(rows, r)), ...f.map(failedWriteCells)], 4);
}

function failedAndMissing(failed: FailedSource[], missing: MissingSource[]): string {
  const out: string[] = [];
  if (failed.length) out.push(`<p>These sources failed, so none of their figures is used (every other figure and ratio stands without them):</p><ul>${failed.map((f) => `<li class="failed">${esc(failureLine(f))}</li>`).join("")}</ul>`);
  if (missing.length) out.push(`<p>These sources were not measured, so their rows and every ratio against them are absent:</p><ul>${missing.map((m) => `<li><b>${esc(m.source)}</b>: ${esc(m.reason)}</li>`).join("")}</ul>`);
  return out.length ? `<h2>Failed and missing sources</h2>${out.join("\n")}` : "";
}

/** The answer: a table per cache mode (a failed or missing row marked), its legend, the sentences, the figures behind it. */
function answerHtml(a: AnswerModel, details: string[]): string {
  const tables = a.tables.map((t) => {
    const th = t.head.map((h) => `<th>${esc(h)}</th>`).join("");
    const tr = t.rows
      .map((r) => `<tr class="${r.kind}${r.status === "measured" ? "" : ` ${r.status}`}">${r.cells.map((c, i) => `<td${i >= 1 && r.status === "measured" ? ' class="n"' : ""}${i === 1 && r.status !== "measured" ? ` colspan="${r.cells.length - 1}"` : ""}>${esc(c)}</td>`).filter((_, i) => r.status === "measured" || i <= 1).join("")}</tr>`)
      .join("\n");
    return `<h3>${esc(t.cache)}, ${esc(t.workload)}: a write in place and after an internal snapshot</h3><table class="answer-table"><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
  });
  return [
    ...tables,
    a.tables.length ? `<p class="meta">${esc(a.legend)}</p>` : "",
    a.summary.length ? `<div class="answer"><p>${esc(a.summary.join(" "))}</p></div>` : "",
    details.length ? `<h3>The figures behind it</h3>${details.map((p) => `<p>${esc(p)}</p>`).join("\n")}` : "",
  ]
    .filter(Boolean)
    .join("\n");
}

function fioSections(rows: ResultRow[], fio: FioRow[]): string {
  const out: string[] = [];
  const check = fioCrossCheck(rows, fio);
  if (check.length) {
    out.push(
      `<h2>fio cross-check</h2><p>fio (ioengine=nbd, iodepth 1) replaying the same request sequence (offsets and flush points) against the same NBD servers on files prepared the same way, beside the bench's own per-request figures for that cell. fio's client is libnbd in C, the bench's is Node: the difference between the two is the client's own overhead. "within the spread": fio's p50 inside the bench's min–max over rounds, widened by 10 %.</p>` +
        htmlTable(FIO_CHECK_HEAD, check.map(fioCheckCells), 4),
    );
  }
  const depth = fioDepthRows(fio);
  if (depth.length) out.push(`<h2>fio: refcow nbd against qemu-nbd, random 4 KiB writes, writeback</h2><p>One write per 64 KiB cluster in random order, a flush every 64 writes, on the same image options; fio's IOPS and completion latency.</p>${htmlTable(FIO_DEPTH_HEAD, depth, 1)}`);
  return out.join("\n");
}

function flushSplitTable(rows: ResultRow[]): string {
  const splits = flushSplits(rows);
  if (!splits.length) return "";
  return (
    `<h2>Flush policy</h2><p>Post-snapshot cost per write above the raw file reached through the same transport (µs, median and min–max over rounds of the per-round difference), and refcow's host flushes per write. eager --order qemu keeps eager's rules the way QEMU 7.2 orders them (cache dependencies that flush the L2 and refcount caches alternately); its distance from eager is the flush policy, and its distance from QEMU's own excess is what is left: COW, refcount work and the implementation.</p>` +
    htmlTable(FLUSH_SPLIT_HEAD, splits.map(flushSplitCells), 2)
  );
}

function breakdownTable(rows: ResultRow[]): string {
  const w = rows.filter((r) => r.source === "refcow" && r.breakdown);
  if (!w.length) return "";
  const body = w.map((r) => {
    const g = groupTimes(r.breakdown);
    return [rowName(r), String(r.cache), r.workload, r.phase, ...COST_GROUPS.map((k) => num(g[k], 1))];
  });
  return htmlTable(["source (transport)", "cache", "workload", "phase", ...COST_GROUPS.map((g) => `${g} µs`)], body, 4);
}

function opsTable(rows: ResultRow[]): string {
  const ops = rows.filter((r) => r.workload === "snapshot-ops");
  if (!ops.length) return "";
  const names = [...new Set(ops.map((r) => r.phase))];
  const keys = [...new Set(ops.map((r) => `${schemeLabel(r)}\u0000${r.size_bytes}`))];
  const body = keys.map((k) => {
    const [scheme, size] = k.split("\u0000");
    const cell = (n: string) => num((ops.find((r) => schemeLabel(r) === scheme && String(r.size_bytes) === size && r.phase === n)?.median_us ?? NaN) / 1000, 2);
    return [scheme, `${Math.round(Number(size) / 2 ** 20)} MiB`, ...names.map(cell)];
  });
  const leaks = ops.filter((r) => r.check).map((r) => `${schemeLabel(r)}, ${Math.round(r.size_bytes! / 2 ** 20)} MiB: ${r.check}`);
  const note = leaks.length ? `<p class="meta">qemu-img check of the images a simulated crash left, after recovery (a crash may leak clusters, as under QEMU): ${esc(leaks.join("; "))}</p>` : "";
  return htmlTable(["scheme", "allocated", ...names.map((n) => `${n} ms (median)`)], body, 2) + note;
}

const tableOf = (m: TableModel) => (m.body.length ? htmlTable(m.head, m.body, m.numericFrom) : "");

function guestSection(guest: GuestResult[], rows: ResultRow[], failed: FailedSource[]): string {
  const t = tableOf;
  const ranking = [...guestRanking(guest, rows, failed), ...guestFailures(failed)].map((l) => `<li>${esc(l)}</li>`).join("");
  const checks = guest.map((g) => `${g.scheme} ${g.cache}${g.rep ? ` #${g.rep}` : ""}: ${g.check ?? "not checked"}`).join("; ");
  return [
    "<p>app: the guest program's system call, timed by the guest itself; device: v86's disk request to its completion callback; ring: the request in the worker ring's client; engine: the worker's own time; each a per-request median. app − engine is what the emulator adds. amortized: the phase's wall time ÷ its writes, the statistic the schemes are ranked by. Median over the runs of each cell, min–max in brackets.</p>",
    t(guestClockTable(guest)),
    t(guestRatioTable(guest, rows)),
    ranking ? `<ul>${ranking}</ul>` : "",
    `<p class="meta">qemu-img check of the images the guest left: ${esc(checks)}</p>`,
  ].join("\n");
}

const CSS = `
body { font: 15px/1.5 Helvetica, Arial, sans-serif; color: #222; max-width: 1200px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; }
.answer { background: #f6f8fa; border-left: 4px solid #d1495b; padding: 0.8em 1.2em; }
figure { margin: 1.5em 0; } figcaption { color: #555; font-size: 0.9em; max-width: 900px; }
figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; } th { background: #f0f0f0; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.baseline td { background: #fafafa; } tr.failed td, li.failed { color: #a4161a; } tr.missing td { color: #777; }
`;

export async function renderHtml(results: ResultsFile, answer: AnswerModel, details: string[]): Promise<string> {
  const guest = v86Runs(results.guest ?? []);
  const guestFailed = v86Failures(results.failed ?? []);
  const charts = buildCharts(results.rows, guest);
  const figures: string[] = [];
  for (const c of charts) {
    const svg = await renderSvg(c.spec);
    figures.push(`<figure id="${c.id}"><h3>${esc(c.title)}</h3>\n${svg}\n<figcaption>${esc(c.caption)}</figcaption></figure>`);
  }
  const m = results.machine;
  const machineRows = Object.entries(m).map(([k, v]) => [k, v]);
  const sections = [
    `<h2>Answer</h2>${answerHtml(answer, details)}`,
    failedAndMissing(results.failed ?? [], results.missing ?? []),
    `<h2>Charts</h2>${figures.join("\n")}`,
    guest.length || guestFailures(guestFailed).length ? `<h2>Guest runs</h2>${guestSection(guest, results.rows, guestFailed)}` : "",
    hasOtherEmulators(results.guest ?? [], results.failed ?? [])
      ? `<h2>The guest under v86 and under QEMU</h2><p>${esc(EMULATOR_NOTE)}</p>${tableOf(emulatorTable(results.guest ?? [], results.rows, results.failed ?? []))}`
      : "",
    `<h2>Write latency</h2><p>${esc(STATISTICS_NOTE)}.</p>${writeTable(results.rows, results.failed ?? [])}`,
    flushSplitTable(results.rows),
    fioSections(results.rows, results.fio ?? []),
    `<h2>Cost breakdown per write (µs of I/O)</h2>${breakdownTable(results.rows)}`,
    opsTable(results.rows) ? `<h2>Snapshot, open and close timings</h2>${opsTable(results.rows)}` : "",
    `<h2>Machine</h2>${htmlTable(["", ""], machineRows)}`,
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>refcow: write latency after an internal snapshot</title>
<style>${CSS}</style></head>
<body>
<h1>refcow: write latency after an internal snapshot</h1>
<p class="meta">Generated ${esc(results.generated)} · ${esc(m.cpu ?? "")} · kernel ${esc(m.kernel ?? "")} · ${esc(m.filesystem ?? "")} · Node ${esc(m.node ?? "")} · ${esc(m.qemu ?? "")}${m.wasm ? ` · ${esc(m.wasm)}` : ""}</p>
${sections.filter(Boolean).join("\n")}
</body></html>
`;
}
