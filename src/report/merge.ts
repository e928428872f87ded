/**
 * The merge of shards' results (`refcow report DIR...`): the results.json of each shard of one matrix
 * (`refcow bench --shard i/N`, src/bench/shard.ts) into one, whose rows are the union of theirs.
 *
 * Refused, with the reason, when the inputs cannot form one matrix: a folder that is not a shard's, shards
 * of different refcow versions, of different options (schemes, cache modes, clusters, rounds...), of
 * different shard counts or matrices, or the same shard twice. Merged: rows, fio rows, failed sources (all
 * kept: a failure is shown, never dropped), missing sources (once each), guest runs; the machine fields
 * that differ between shards are listed side by side. Shards not given are named, and so is each cell they
 * would have run (as missing sources), so that a partial merge says what it lacks.
 */
import type { MissingSource, ResultsFile } from "./results.js";

/** Why shards cannot be merged. */
export class MergeRefused extends Error {
  override name = "MergeRefused";
}

export interface ShardResults {
  /** Where it was read from (for messages). */
  from: string;
  results: ResultsFile;
}

/** JSON with object keys sorted: two option objects compare equal whatever order their keys were written in. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** The option names whose values differ between two option objects. */
function differingOptions(a: unknown, b: unknown): string[] {
  const oa = (a ?? {}) as Record<string, unknown>;
  const ob = (b ?? {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(oa), ...Object.keys(ob)])].filter((k) => canonical(oa[k]) !== canonical(ob[k])).sort();
}

export function mergeShards(inputs: readonly ShardResults[]): ResultsFile {
  if (!inputs.length) throw new MergeRefused("nothing to merge");
  for (const i of inputs) {
    if (!i.results.shard) throw new MergeRefused(`${i.from} is not a shard's results (no shard recorded: run \`refcow bench --shard i/N --out DIR\`)`);
  }
  const first = inputs[0]!;
  const f = first.results.shard!;
  const seen = new Map<number, string>();
  for (const i of inputs) {
    const r = i.results;
    const s = r.shard!;
    if (r.version !== first.results.version) throw new MergeRefused(`refcow versions differ: ${first.from} was made by ${first.results.version ?? "an unknown version"}, ${i.from} by ${r.version ?? "an unknown version"}`);
    const diff = differingOptions(first.results.options, r.options);
    if (diff.length) throw new MergeRefused(`configurations differ between ${first.from} and ${i.from}: ${diff.join(", ")}`);
    if (s.count !== f.count) throw new MergeRefused(`shard counts differ: ${first.from} is shard ${f.index}/${f.count}, ${i.from} is shard ${s.index}/${s.count}`);
    if (canonical(s.matrix) !== canonical(f.matrix)) throw new MergeRefused(`the matrices differ between ${first.from} and ${i.from} (same options, other cells): not one run`);
    const dup = seen.get(s.index);
    if (dup !== undefined) throw new MergeRefused(`shard ${s.index}/${s.count} given twice: ${dup} and ${i.from}`);
    seen.set(s.index, i.from);
  }
  const ran = new Set(inputs.flatMap((i) => i.results.shard!.cells));
  const missingCells = f.matrix.filter((c) => !ran.has(c));
  const merged = [...seen.keys()].sort((a, b) => a - b);
  const absent = Array.from({ length: f.count }, (_, k) => k + 1).filter((k) => !seen.has(k));
  const missing: MissingSource[] = [];
  const missingKey = new Set<string>();
  for (const m of inputs.flatMap((i) => i.results.missing ?? [])) {
    const k = `${m.source}\u0000${m.reason}`;
    if (missingKey.has(k)) continue;
    missingKey.add(k);
    missing.push(m);
  }
  const why = `its shard was not merged (shard${absent.length > 1 ? "s" : ""} ${absent.map((k) => `${k}/${f.count}`).join(", ")} missing)`;
  for (const cell of missingCells) missing.push({ source: cell, reason: why });
  return {
    generated: new Date().toISOString(),
    version: first.results.version,
    machine: mergeMachines(inputs.map((i) => i.results.machine)),
    options: first.results.options,
    rows: inputs.flatMap((i) => i.results.rows),
    fio: inputs.flatMap((i) => i.results.fio ?? []),
    missing,
    failed: inputs.flatMap((i) => i.results.failed ?? []),
    guest: inputs.flatMap((i) => i.results.guest ?? []),
    shards: { count: f.count, merged, missingCells },
  };
}

/** Each machine field once when every shard agrees, else its distinct values side by side. */
function mergeMachines(machines: readonly Record<string, string>[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of [...new Set(machines.flatMap((m) => Object.keys(m)))]) {
    out[k] = [...new Set(machines.map((m) => m[k] ?? "unknown"))].join(" | ");
  }
  return out;
}
