/**
 * Benchmark output: the printed table with ratios from the same run, results.json, and report.md with a
 * paragraph whose every number comes from the rows.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ResultRow } from "./matrix.js";
import { COST_GROUPS, groupTimes, hostTotals } from "./cost-groups.js";
import { schemeLabel } from "./scheme-label.js";
import { guestRows, type GuestResult } from "./guest-results.js";
import { guestAnswer, guestSectionMarkdown } from "./guest-section.js";
import { renderHtml, type ResultsFile } from "./report-html.js";

const f1 = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));

function find(rows: ResultRow[], q: Partial<ResultRow>): ResultRow | undefined {
  return rows.find((r) => Object.entries(q).every(([k, v]) => (r as unknown as Record<string, unknown>)[k] === v));
}

/** This phase / in-place of the same source, scheme, cache and workload. */
function slowdown(rows: ResultRow[], r: ResultRow): number | undefined {
  if (r.phase === "in-place") return undefined;
  const base = find(rows, { source: r.source, scheme: r.scheme, alloc: r.alloc, cache: r.cache, workload: r.workload, phase: "in-place" });
  return base ? r.amortized_us / base.amortized_us : undefined;
}

const QEMU_PEER: Record<string, string> = { eager: "std", lazy: "lazy_refcounts" };

export function table(rows: ResultRow[]): string {
  const write = rows.filter((r) => r.workload !== "snapshot-ops");
  const head = ["source", "scheme", "cache", "workload", "phase", "median us", "p99 us", "per write us", "runs", "vs in-place", "vs qemu", "vs raw", "host KiB/w", "flushes/w"];
  const lines = [head];
  for (const r of write) {
    const raw = find(rows, { source: "raw", cache: r.cache, workload: r.workload });
    const peer = r.source === "refcow" ? find(rows, { source: "qemu", scheme: QEMU_PEER[r.scheme] ?? "std", cache: r.cache, phase: r.phase }) : undefined;
    const s = slowdown(rows, r);
    const host = r.breakdown ? hostTotals(r.breakdown) : undefined;
    lines.push([
      r.source,
      schemeLabel(r),
      r.cache,
      r.workload,
      r.phase,
      f1(r.median_us),
      f1(r.p99_us),
      f1(r.amortized_us),
      String(r.runs),
      s ? `${s.toFixed(1)}x` : "",
      peer ? `${(r.amortized_us / peer.amortized_us).toFixed(2)}x` : "",
      raw && r.source !== "raw" ? `${(r.amortized_us / raw.amortized_us).toFixed(1)}x` : "",
      host ? (host.bytes / 1024).toFixed(1) : "",
      host ? host.flushes.toFixed(2) : "",
    ]);
  }
  const ops = rows.filter((r) => r.workload === "snapshot-ops");
  const broken = write.filter((r) => r.breakdown);
  const w = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  let out = lines.map((l) => l.map((c, i) => c.padEnd(w[i])).join("  ")).join("\n") + "\n";
  if (broken.length) {
    out += "\nwhere a write's I/O time goes (us per write; flush time taken out of each purpose):\n";
    const bl = [["scheme", "cache", "workload", "phase", ...COST_GROUPS]];
    for (const r of broken) {
      const g = groupTimes(r.breakdown);
      bl.push([schemeLabel(r), String(r.cache), r.workload, r.phase, ...COST_GROUPS.map((k) => f1(g[k]))]);
    }
    const bw = bl[0].map((_, i) => Math.max(...bl.map((l) => l[i].length)));
    out += bl.map((l) => l.map((c, i) => c.padEnd(bw[i])).join("  ")).join("\n") + "\n";
  }
  if (ops.length) {
    out += "\nsnapshot / open / close timings (median ms):\n";
    const sizes = [...new Set(ops.map((r) => r.size_bytes!))];
    const names = [...new Set(ops.map((r) => r.phase))];
    const schemes = [...new Set(ops.map((r) => schemeLabel(r)))];
    out += ["scheme".padEnd(11), "allocated".padEnd(10), ...names.map((n) => n.padStart(16))].join(" ") + "\n";
    for (const size of sizes) {
      for (const s of schemes) {
        out += [s.padEnd(11), `${Math.round(size / 2 ** 20)} MiB`.padEnd(10), ...names.map((n) => f1((ops.find((r) => schemeLabel(r) === s && r.size_bytes === size && r.phase === n)?.median_us ?? NaN) / 1000).padStart(16))].join(" ") + "\n";
      }
    }
  }
  out += "\n(per write us: phase time / writes, flushes included; writeback flushes every 64 writes. QEMU: qemu-img bench, sequential, average per write.)\n";
  return out;
}

/** Where a write's I/O time goes, by cost group, as shares of the accounted time. */
function shares(r: ResultRow): Record<string, number> {
  const g = groupTimes(r.breakdown);
  const total = Object.values(g).reduce((a, b) => a + b, 0);
  return Object.fromEntries(Object.entries(g).map(([k, v]) => [k, total ? v / total : 0]));
}

export function answer(rows: ResultRow[]): string {
  const parts: string[] = [];
  const firstFit = (r: ResultRow) => !r.alloc || r.alloc === "first-fit";
  const post = rows.filter((r) => r.source === "refcow" && r.phase === "post-snapshot" && r.workload === "rand4k-per-cluster" && firstFit(r));
  for (const cache of [...new Set(post.map((r) => r.cache))]) {
    const inCache = post.filter((r) => r.cache === cache);
    if (!inCache.length) continue;
    const eager = inCache.find((r) => r.scheme === "eager");
    const best = [...inCache].sort((a, b) => a.amortized_us - b.amortized_us)[0];
    const worst = [...inCache].sort((a, b) => b.amortized_us - a.amortized_us)[0];
    if (eager) {
      const s = slowdown(rows, eager);
      const sh = shares(eager);
      const top = Object.entries(sh).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${(v * 100).toFixed(0)} %`).join(", ");
      const flushes = Object.values(eager.breakdown ?? {}).reduce((a, v) => a + v.flushes, 0);
      parts.push(
        `In ${cache}, a 4 KiB write right after a snapshot costs ${f1(eager.amortized_us)} µs with eager refcounts (QEMU's semantics), ` +
          `${s ? `${s.toFixed(1)} times` : "?"} the same write in place; its I/O time goes to ${top}, with ${flushes.toFixed(2)} flushes per write.`,
      );
      const qemu = find(rows, { source: "qemu", scheme: "std", cache, phase: "post-snapshot" });
      const qin = find(rows, { source: "qemu", scheme: "std", cache, phase: "in-place" });
      if (qemu && qin) parts.push(`QEMU ${cache} on the same machine: ${f1(qemu.amortized_us)} µs after a snapshot vs ${f1(qin.amortized_us)} µs in place (${(qemu.amortized_us / qin.amortized_us).toFixed(1)}×).`);
    }
    parts.push(
      `The fastest scheme after a snapshot in ${cache} is ${best.scheme} at ${f1(best.amortized_us)} µs per write (${slowdown(rows, best)?.toFixed(1) ?? "?"}× its in-place cost), ` +
        `the slowest ${worst.scheme} at ${f1(worst.amortized_us)} µs.`,
    );
  }
  const afterDelete = rows.filter((r) => r.source === "refcow" && r.phase === "after-delete" && r.workload === "rand4k-per-cluster");
  const appended = afterDelete.filter((r) => r.alloc === "append");
  if (appended.length) {
    const pairs = appended
      .map((a) => ({ a, ff: afterDelete.find((r) => firstFit(r) && r.scheme === a.scheme && r.cache === a.cache) }))
      .filter((x) => x.ff)
      .map((x) => `${x.a.scheme} ${x.a.cache} ${f1(x.a.amortized_us)} µs appending vs ${f1(x.ff!.amortized_us)} µs reusing`);
    if (pairs.length) parts.push(`Allocating writes after the snapshot is deleted (free clusters inside the file): ${pairs.join("; ")}.`);
  }
  const ops = rows.filter((r) => r.workload === "snapshot-ops" && r.phase === "snapshot-create" && firstFit(r));
  if (ops.length) {
    const largest = Math.max(...ops.map((r) => r.size_bytes!));
    const at = ops.filter((r) => r.size_bytes === largest).sort((a, b) => a.median_us - b.median_us);
    parts.push(`Snapshot creation with ${Math.round(largest / 2 ** 20)} MiB allocated takes ${at.map((r) => `${f1(r.median_us / 1000)} ms (${r.scheme})`).join(", ")}.`);
  }
  return parts.join(" ");
}

/** The whole answer paragraph: host benchmark first, then the guest runs. */
export function fullAnswer(results: Pick<ResultsFile, "rows" | "guest">): string {
  return [answer(results.rows), guestAnswer(results.guest ?? [])].filter(Boolean).join(" ");
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
    table(allRows).trimEnd(),
    "```",
    "",
    guestSectionMarkdown(results.guest ?? [], results.rows),
    "Charts: report.html.",
    "",
  ].join("\n");
}

/** Writes results.json, report.md and report.html into `dir`. */
export async function writeOutputs(dir: string, rows: ResultRow[], machineInfo: Record<string, string>, options: unknown, guest: GuestResult[] = []): Promise<void> {
  const results: ResultsFile = { generated: new Date().toISOString(), machine: machineInfo, options, rows, guest };
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
  return { generated: String(r.generated ?? "unknown"), machine: r.machine ?? {}, options: r.options, rows: r.rows, guest: Array.isArray(r.guest) ? r.guest : [] };
}
