/**
 * fio against the NBD exports, in the same run as the write matrix: the cross-check of the load generator
 * (queue depth 1) and the queue-depth benchmark (refcow's export against qemu-nbd in writeback).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { failureOf } from "../report/failures.js";
import { type BenchResults, type Pattern, type SourceSpec, sourceName } from "../report/results.js";
import { spread } from "../stats/latency.js";
import { type FioResult, runFio } from "./fio.js";
import { requireCleanImage } from "./image-check.js";
import { WRITE, writeOffsets } from "./load.js";
import type { BenchOptions } from "./options.js";
import { slug, specFields, specKey } from "./phase-runs.js";
import { cellsToRun } from "./shard.js";
import { betweenPhases, prepareFile, sourceUnavailable, startNbdServer, type Tools } from "./sources.js";

/** Rounds of the fio runs: at least three, so that every fio figure and ratio has a median and a range. */
export const FIO_MIN_ROUNDS = 3;

/**
 * fio against the NBD sources on freshly prepared files: the cross-check (queue depth 1, every cache mode and
 * pattern, refcow's export under every scheme, qemu-nbd on the qcow2 and on the raw file, the same iolog for
 * all) and the queue-depth benchmark (random writes in writeback at `fioDepths`, the same sources but the raw
 * file). Rounds as the write matrix's: each round runs every source once per cell, the sources alternating
 * (an order rotated from round to round, reversed every other round), round i of every source on the same
 * requests; at least FIO_MIN_ROUNDS rounds. A source's rows are used only when every image it left passed
 * qemu-img check; a source that throws or fails the check is a failed entry for that cell.
 */
export async function fioMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  if (!opts.fio && !opts.fioDepths.length) return;
  const candidates: SourceSpec[] = [...opts.schemes.map((scheme): SourceSpec => ({ source: "refcow", scheme, transport: "nbd" })), { source: "qemu", scheme: "std", transport: "nbd" }, { source: "raw", scheme: "none", transport: "nbd" }];
  const cells: Array<{ cache: CacheMode; pattern: Pattern; depth: number; phases: string[] }> = [];
  if (opts.fio) for (const cache of opts.caches) for (const pattern of opts.workloads.filter((w): w is Pattern => w !== "trace")) cells.push({ cache, pattern, depth: 1, phases: ["in-place", "post-snapshot"] });
  for (const depth of opts.fioDepths) if (!cells.some((c) => c.cache === "writeback" && c.pattern === "rand4k-per-cluster" && c.depth === depth)) cells.push({ cache: "writeback", pattern: "rand4k-per-cluster", depth, phases: ["in-place", "post-snapshot"] });
  const cellKey = (spec: SourceSpec, cell: (typeof cells)[number]) => `${specKey(spec)}|${cell.cache}|${cell.pattern}|${cell.depth}`;
  // The cells this run owns, declared before anything is known of the machine (shard.ts).
  const mine = cellsToRun(
    opts.shard,
    "fio",
    cells.flatMap((cell) => candidates.filter((s) => cell.depth === 1 || s.source !== "raw").map((spec) => cellKey(spec, cell))),
  );
  if (!mine.size) return;
  if (!tools.fio) {
    results.missing.push({ source: "fio cross-check", reason: "fio with its nbd engine not found (install fio)" });
    return;
  }
  const specs: SourceSpec[] = [];
  for (const s of candidates) {
    const why = sourceUnavailable(s, tools);
    if (!why) specs.push(s);
    else if (!results.missing.some((m) => m.source === `fio: ${sourceName(s)}`)) results.missing.push({ source: `fio: ${sourceName(s)}`, reason: why });
  }
  const n = opts.clusters;
  const rounds = Math.max(FIO_MIN_ROUNDS, opts.reps);
  const acc = new Map<string, { spec: SourceSpec; cell: (typeof cells)[number]; phases: Map<string, FioResult[]> }>();
  const failed = new Set<string>();
  for (let round = 0; round < rounds; round++) {
    for (const cell of cells) {
      const here = specs.filter((s) => cell.depth === 1 || s.source !== "raw");
      const k = here.length ? round % here.length : 0;
      const ordered = [...here.slice(k), ...here.slice(0, k)];
      if (round % 2 === 1) ordered.reverse();
      for (const spec of ordered) {
        const key = cellKey(spec, cell);
        if (failed.has(key) || !mine.has(key)) continue;
        opts.progress(`fio round ${round + 1}/${rounds}: ${cell.cache}, ${cell.pattern}, iodepth ${cell.depth}, ${sourceName(spec)}`);
        const file = path.join(opts.dir, `fio-${slug(spec)}.img`);
        const socket = path.join(opts.dir, "fio.sock");
        const got = new Map<string, FioResult>();
        try {
          prepareFile(spec, file, n);
          for (const phase of cell.phases) {
            if (phase === "post-snapshot") betweenPhases(spec, file, "snapshot");
            const server = await startNbdServer(spec, file, cell.cache, socket);
            try {
              got.set(phase, await runFio(socket, writeOffsets(n, cell.pattern, 1234 + round), WRITE, cell.cache, cell.depth, path.join(opts.dir, "fio")));
            } finally {
              await server.stop();
            }
          }
          // Checked before any of its figures is kept.
          if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
          const a = acc.get(key) ?? { spec, cell, phases: new Map<string, FioResult[]>() };
          for (const [phase, r] of got) a.phases.set(phase, [...(a.phases.get(phase) ?? []), r]);
          acc.set(key, a);
        } catch (e) {
          failed.add(key);
          const f = failureOf(e, { part: "fio", ...specFields(spec), cache: cell.cache, workload: cell.pattern, iodepth: cell.depth, round: round + 1 });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
    }
  }
  for (const [key, a] of acc) {
    if (failed.has(key)) continue;
    for (const [phase, runs] of a.phases) {
      const iops = spread(runs.map((r) => r.iops));
      const p50 = spread(runs.map((r) => r.clat_p50_us));
      results.fio.push({
        source: a.spec.source,
        scheme: a.spec.scheme,
        transport: "nbd",
        cache: a.cell.cache,
        workload: a.cell.pattern,
        phase,
        iodepth: a.cell.depth,
        writes: runs[0]!.writes,
        iops: iops.median,
        iops_min: iops.min,
        iops_max: iops.max,
        clat_p50_us: p50.median,
        clat_p50_us_min: p50.min,
        clat_p50_us_max: p50.max,
        clat_p99_us: spread(runs.map((r) => r.clat_p99_us)).median,
        runs: runs.length,
        reps: runs.map((r) => ({ iops: r.iops, clat_p50_us: r.clat_p50_us, clat_p99_us: r.clat_p99_us })),
      });
    }
  }
}
