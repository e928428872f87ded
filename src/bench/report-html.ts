/**
 * report.html: one self-contained page (inline CSS and SVG, no script, no external resource) that opens
 * offline: the answer paragraph, the charts, the full table and the machine the figures come from.
 */
import { buildCharts, renderSvg, seriesName } from "./charts.js";
import { groupTimes, hostTotals, COST_GROUPS } from "./cost-groups.js";
import type { GuestResult } from "./guest-results.js";
import { guestClockTable, guestRanking, guestRatioTable, type TableModel } from "./guest-section.js";
import { PHASES, type ResultRow } from "./matrix.js";
import { schemeLabel } from "./scheme-label.js";

export interface ResultsFile {
  generated: string;
  machine: Record<string, string>;
  options?: unknown;
  rows: ResultRow[];
  guest?: GuestResult[];
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
const num = (x: number | null | undefined, digits = 1) => (x === null || x === undefined || !Number.isFinite(x) ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(digits));

function htmlTable(head: string[], body: string[][], numericFrom = 0): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join("");
  const tr = body.map((row) => `<tr>${row.map((c, i) => `<td${i >= numericFrom ? ' class="n"' : ""}>${esc(c)}</td>`).join("")}</tr>`).join("\n");
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
}

function writeTable(rows: ResultRow[]): string {
  const w = rows.filter((r) => (PHASES as readonly string[]).includes(r.phase) || r.workload === "trace");
  if (!w.length) return "";
  const inPlace = (r: ResultRow) => rows.find((x) => x.source === r.source && x.scheme === r.scheme && x.alloc === r.alloc && x.cache === r.cache && x.workload === r.workload && x.phase === "in-place");
  const body = w.map((r) => {
    const base = r.phase !== "in-place" ? inPlace(r) : undefined;
    const t = hostTotals(r.breakdown);
    return [
      seriesName(r),
      String(r.cache),
      r.workload,
      r.phase,
      num(r.median_us),
      num(r.p99_us),
      num(r.amortized_us),
      base ? `${(r.amortized_us / base.amortized_us).toFixed(1)}×` : "",
      r.breakdown ? num(t.bytes / 1024, 1) : "",
      r.breakdown ? t.flushes.toFixed(2) : "",
      String(r.runs),
    ];
  });
  return htmlTable(["source / scheme", "cache", "workload", "phase", "median µs", "p99 µs", "per write µs", "vs in-place", "host KiB / write", "flushes / write", "runs"], body, 4);
}

function breakdownTable(rows: ResultRow[]): string {
  const w = rows.filter((r) => r.source === "refcow" && r.breakdown);
  if (!w.length) return "";
  const body = w.map((r) => {
    const g = groupTimes(r.breakdown);
    return [schemeLabel(r), String(r.cache), r.workload, r.phase, ...COST_GROUPS.map((k) => num(g[k], 1))];
  });
  return htmlTable(["scheme", "cache", "workload", "phase", ...COST_GROUPS.map((g) => `${g} µs`)], body, 4);
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
  return htmlTable(["scheme", "allocated", ...names.map((n) => `${n} ms`)], body, 2);
}

function guestSection(guest: GuestResult[], rows: ResultRow[]): string {
  const t = (m: TableModel) => (m.body.length ? htmlTable(m.head, m.body, m.numericFrom) : "");
  const ranking = guestRanking(guest, rows).map((l) => `<li>${esc(l)}</li>`).join("");
  const checks = guest.map((g) => `${g.scheme} ${g.cache}${g.rep ? ` #${g.rep}` : ""}: ${g.check ?? "not checked"}`).join("; ");
  return [
    "<p>app: the guest program's system call, timed by the guest itself; device: v86's disk request to its completion callback; ring: the request in the worker ring's client; engine: the worker's own time. app − engine is what the emulator adds. Median over the runs of each cell, min–max in brackets.</p>",
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
td.n { text-align: right; font-variant-numeric: tabular-nums; }
`;

export async function renderHtml(results: ResultsFile, answerText: string): Promise<string> {
  const guest = results.guest ?? [];
  const charts = buildCharts(results.rows, guest);
  const figures: string[] = [];
  for (const c of charts) {
    const svg = await renderSvg(c.spec);
    figures.push(`<figure id="${c.id}"><h3>${esc(c.title)}</h3>\n${svg}\n<figcaption>${esc(c.caption)}</figcaption></figure>`);
  }
  const m = results.machine;
  const machineRows = Object.entries(m).map(([k, v]) => [k, v]);
  const sections = [
    `<h2>Answer</h2><p class="answer">${esc(answerText)}</p>`,
    `<h2>Charts</h2>${figures.join("\n")}`,
    guest.length ? `<h2>Guest runs</h2>${guestSection(guest, results.rows)}` : "",
    `<h2>Write latency</h2>${writeTable(results.rows)}`,
    `<h2>Cost breakdown per write (µs of I/O)</h2>${breakdownTable(results.rows)}`,
    opsTable(results.rows) ? `<h2>Snapshot, open and close timings</h2>${opsTable(results.rows)}` : "",
    `<h2>Machine</h2>${htmlTable(["", ""], machineRows)}`,
  ];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>refcow: write latency after an internal snapshot</title>
<style>${CSS}</style></head>
<body>
<h1>refcow: write latency after an internal snapshot</h1>
<p class="meta">Generated ${esc(results.generated)} · ${esc(m.cpu ?? "")} · kernel ${esc(m.kernel ?? "")} · ${esc(m.filesystem ?? "")} · Node ${esc(m.node ?? "")} · ${esc(m.qemu ?? "")}</p>
${sections.filter(Boolean).join("\n")}
</body></html>
`;
}
