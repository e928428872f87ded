/**
 * Benchmark output: the printed table with ratios from the same run, results.json, and report.md with a
 * paragraph whose every number comes from the rows.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ResultRow } from "./matrix.js";

const f1 = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));

function find(rows: ResultRow[], q: Partial<ResultRow>): ResultRow | undefined {
  return rows.find((r) => Object.entries(q).every(([k, v]) => (r as unknown as Record<string, unknown>)[k] === v));
}

/** post-snapshot / in-place of the same source, scheme, cache and workload. */
function slowdown(rows: ResultRow[], r: ResultRow): number | undefined {
  if (r.phase !== "post-snapshot") return undefined;
  const base = find(rows, { source: r.source, scheme: r.scheme, cache: r.cache, workload: r.workload, phase: "in-place" });
  return base ? r.amortized_us / base.amortized_us : undefined;
}

const QEMU_PEER: Record<string, string> = { eager: "std", lazy: "lazy_refcounts" };

export function table(rows: ResultRow[]): string {
  const write = rows.filter((r) => r.workload !== "snapshot-ops");
  const head = ["source", "scheme", "cache", "workload", "phase", "median us", "p99 us", "per write us", "runs", "post/in", "vs qemu", "vs raw"];
  const lines = [head];
  for (const r of write) {
    const raw = find(rows, { source: "raw", cache: r.cache, workload: r.workload });
    const peer = r.source === "refcow" ? find(rows, { source: "qemu", scheme: QEMU_PEER[r.scheme] ?? "std", cache: r.cache, phase: r.phase }) : undefined;
    const s = slowdown(rows, r);
    lines.push([
      r.source,
      r.scheme,
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
    ]);
  }
  const ops = rows.filter((r) => r.workload === "snapshot-ops");
  const w = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  let out = lines.map((l) => l.map((c, i) => c.padEnd(w[i])).join("  ")).join("\n") + "\n";
  if (ops.length) {
    out += "\nsnapshot / open / close timings (median ms):\n";
    const sizes = [...new Set(ops.map((r) => r.size_bytes!))];
    const names = [...new Set(ops.map((r) => r.phase))];
    const schemes = [...new Set(ops.map((r) => r.scheme))];
    out += ["scheme".padEnd(11), "allocated".padEnd(10), ...names.map((n) => n.padStart(16))].join(" ") + "\n";
    for (const size of sizes) {
      for (const s of schemes) {
        out += [s.padEnd(11), `${Math.round(size / 2 ** 20)} MiB`.padEnd(10), ...names.map((n) => f1((find(ops, { scheme: s, size_bytes: size, phase: n })?.median_us ?? NaN) / 1000).padStart(16))].join(" ") + "\n";
      }
    }
  }
  out += "\n(per write us: phase time / writes, flushes included; writeback flushes every 64 writes. QEMU: qemu-img bench, sequential, average per write.)\n";
  return out;
}

/** Where a post-snapshot write's I/O time goes, by group, as shares of the accounted time. */
function shares(r: ResultRow): Record<string, number> {
  const groups: Record<string, string> = {
    "guest-data": "guest data",
    "cow-read": "COW copy",
    "cow-write": "COW copy",
    l2: "L2/L1 tables",
    l1: "L2/L1 tables",
    refcount: "refcount/owner/journal metadata",
    owner: "refcount/owner/journal metadata",
    journal: "refcount/owner/journal metadata",
  };
  const out: Record<string, number> = {};
  let total = 0;
  for (const [k, v] of Object.entries(r.breakdown ?? {})) {
    const g = groups[k] ?? "other";
    out[g] = (out[g] ?? 0) + v.us;
    total += v.us;
  }
  for (const k of Object.keys(out)) out[k] = total ? out[k] / total : 0;
  return out;
}

export function answer(rows: ResultRow[]): string {
  const parts: string[] = [];
  const post = rows.filter((r) => r.source === "refcow" && r.phase === "post-snapshot" && r.workload === "rand4k-per-cluster");
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
  const ops = rows.filter((r) => r.workload === "snapshot-ops" && r.phase === "snapshot-create");
  if (ops.length) {
    const largest = Math.max(...ops.map((r) => r.size_bytes!));
    const at = ops.filter((r) => r.size_bytes === largest).sort((a, b) => a.median_us - b.median_us);
    parts.push(`Snapshot creation with ${Math.round(largest / 2 ** 20)} MiB allocated takes ${at.map((r) => `${f1(r.median_us / 1000)} ms (${r.scheme})`).join(", ")}.`);
  }
  return parts.join(" ");
}

export function writeOutputs(dir: string, rows: ResultRow[], machineInfo: Record<string, string>, options: unknown): void {
  fs.mkdirSync(dir, { recursive: true });
  const generated = new Date().toISOString();
  fs.writeFileSync(path.join(dir, "results.json"), JSON.stringify({ generated, machine: machineInfo, options, rows }, null, 2));
  const md = [
    "# refcow: write latency after an internal snapshot",
    "",
    `Generated ${generated} on ${machineInfo.cpu}, kernel ${machineInfo.kernel}, ${machineInfo.filesystem}, Node ${machineInfo.node}, ${machineInfo.qemu}.`,
    "",
    "## Answer",
    "",
    answer(rows),
    "",
    "## Figures",
    "",
    "```",
    table(rows).trimEnd(),
    "```",
    "",
  ].join("\n");
  fs.writeFileSync(path.join(dir, "report.md"), md);
}
