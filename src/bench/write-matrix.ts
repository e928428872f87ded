/**
 * The write matrix: every source (refcow's schemes through the ring or in-process and through its NBD export,
 * QEMU through qemu-nbd, the raw file) through the three phases on a freshly prepared file, round after round
 * with the sources rotated, every cache mode and pattern; rows from the rounds of each cell.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { diffCosts } from "../io/accounting-file.js";
import { failureOf } from "../report/failures.js";
import { type BenchResults, type Pattern, PHASES, type SourceSpec, sourceName, type Transport } from "../report/results.js";
import { requireCleanImage } from "./image-check.js";
import { runWritePhase, WRITE, writeOffsets } from "./load.js";
import type { BenchOptions } from "./options.js";
import { type PhaseRun, rowFromRuns, slug, specFields, specKey } from "./phase-runs.js";
import { cellsToRun } from "./shard.js";
import { betweenPhases, openSession, prepareFile, sourceUnavailable, type Tools } from "./sources.js";

/** The sources of the write matrix, in their base order (each round rotates it). */
export function benchSources(opts: BenchOptions): SourceSpec[] {
  const local: Transport = opts.inProcess ? "in-process" : "ring";
  const out: SourceSpec[] = [];
  for (const scheme of opts.schemes) for (const alloc of opts.allocs) out.push({ source: "refcow", scheme, alloc, transport: local });
  if (opts.qemuOrder && opts.schemes.includes("eager")) out.push({ source: "refcow", scheme: "eager", order: "qemu", alloc: opts.allocs[0], transport: local });
  out.push({ source: "raw", scheme: "none", transport: local });
  out.push({ source: "raw", scheme: "none", transport: "direct" });
  if (opts.qemu) {
    // Every scheme through refcow's NBD export, beside qemu-nbd: the like-for-like comparison with QEMU.
    for (const scheme of opts.schemes) out.push({ source: "refcow", scheme, transport: "nbd" });
    out.push({ source: "qemu", scheme: "std", transport: "nbd" });
    out.push({ source: "qemu", scheme: "lazy_refcounts", transport: "nbd" });
    out.push({ source: "raw", scheme: "none", transport: "nbd" });
  }
  return out;
}

/** One source through the three phases on a freshly prepared file; the file is checked, then removed. */
async function runSource(opts: BenchOptions, spec: SourceSpec, cache: CacheMode, pattern: Pattern, round: number, tools: Tools): Promise<Map<string, PhaseRun>> {
  const n = opts.clusters;
  const data = new Uint8Array(WRITE).fill(0xa5);
  const file = path.join(opts.dir, `${slug(spec)}-${cache}-${pattern}.img`);
  const socket = path.join(opts.dir, "nbd.sock");
  const out = new Map<string, PhaseRun>();
  prepareFile(spec, file, n);
  const seed = 1234 + round;
  for (const ph of PHASES) {
    if (ph === "post-snapshot") betweenPhases(spec, file, "snapshot");
    if (ph === "after-delete") betweenPhases(spec, file, "delete");
    if (ph !== "in-place") opts.onPhaseBoundary?.({ spec, cache, workload: pattern, phase: ph, file });
    const offsets = writeOffsets(n, pattern, seed, ph === "after-delete" ? n : 0);
    const session = await openSession(spec, file, cache, socket);
    let run: PhaseRun | undefined;
    try {
      const before = await session.stats?.();
      const r = await runWritePhase(session.target, cache, offsets, data);
      const after = await session.stats?.();
      run = { ...r, writes: offsets.length, costs: before && after ? diffCosts(after, before) : undefined };
      out.set(ph, run);
    } finally {
      const t = performance.now();
      await session.close();
      if (run) run.closeUs = (performance.now() - t) * 1000;
    }
  }
  if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
  fs.rmSync(file, { force: true });
  return out;
}

/** The write matrix: rounds × cache modes × patterns × sources (rotated per round). */
export async function writeMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  const patterns = opts.workloads.filter((w): w is Pattern => w !== "trace");
  if (!patterns.length) return;
  const all = benchSources(opts);
  // The cells this run owns (every one, unless it is a shard): declared before anything is known of the machine.
  const cellKey = (spec: SourceSpec, cache: CacheMode, pattern: Pattern) => `${specKey(spec)}|${cache}|${pattern}`;
  const mine = cellsToRun(
    opts.shard,
    "write matrix",
    opts.caches.flatMap((cache) => patterns.flatMap((pattern) => all.map((spec) => cellKey(spec, cache, pattern)))),
  );
  const sources: SourceSpec[] = [];
  for (const s of all.filter((spec) => opts.caches.some((cache) => patterns.some((pattern) => mine.has(cellKey(spec, cache, pattern)))))) {
    const why = sourceUnavailable(s, tools);
    if (why) results.missing.push({ source: sourceName(s), reason: why });
    else sources.push(s);
  }
  const acc = new Map<string, { spec: SourceSpec; cache: CacheMode; pattern: Pattern; phase: string; runs: PhaseRun[] }>();
  const total = opts.reps * [...mine].filter((k) => sources.some((s) => k.startsWith(`${specKey(s)}|`))).length;
  let step = 0;
  const failed = new Set<string>();
  for (let round = 0; round < opts.reps; round++) {
    for (const cache of opts.caches) {
      for (const pattern of patterns) {
        const k = sources.length ? (round * 5) % sources.length : 0;
        const ordered = [...sources.slice(k), ...sources.slice(0, k)];
        if (round % 2 === 1) ordered.reverse();
        for (const spec of ordered) {
          step++;
          const key = cellKey(spec, cache, pattern);
          if (failed.has(key) || !mine.has(key)) continue;
          opts.progress(`write matrix ${step}/${total}: round ${round + 1}/${opts.reps}, ${cache}, ${pattern}, ${sourceName(spec)}`);
          let phases: Map<string, PhaseRun>;
          try {
            phases = await runSource(opts, spec, cache, pattern, round, tools);
          } catch (e) {
            failed.add(key);
            const f = failureOf(e, { part: "write matrix", ...specFields(spec), cache, workload: pattern, round: round + 1 });
            results.failed.push(f);
            opts.progress(`  FAILED: ${f.reason}`);
            continue;
          }
          for (const [phase, run] of phases) {
            const a = acc.get(`${key}|${phase}`) ?? { spec, cache, pattern, phase, runs: [] };
            a.runs.push(run);
            acc.set(`${key}|${phase}`, a);
          }
        }
      }
    }
  }
  for (const a of acc.values()) {
    if (failed.has(`${specKey(a.spec)}|${a.cache}|${a.pattern}`)) continue;
    const { spec } = a;
    results.rows.push(
      rowFromRuns(
        { source: spec.source, scheme: spec.scheme, ...(spec.order ? { order: spec.order } : {}), ...(spec.alloc ? { alloc: spec.alloc } : {}), transport: spec.transport, cache: a.cache, workload: a.pattern, phase: a.phase },
        a.runs,
      ),
    );
  }
}
