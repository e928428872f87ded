/**
 * The write-after-snapshot benchmark: refcow (every scheme, through the ring and through its NBD export),
 * QEMU (qemu-nbd on a qcow2 with the same options, standard and lazy_refcounts) and a raw file (through
 * qemu-nbd, the ring, and pwrite), in the same run, driven by one load generator (load.ts) with one clock.
 *
 * Phases per source (sources.ts prepares every file the same way before any clock): `in-place` overwrites
 * allocated clusters; `post-snapshot` writes them again right after an internal snapshot (every write hits
 * a shared cluster); `after-delete` deletes the snapshot and writes clusters never written before (each
 * write allocates while the delete left free clusters inside the file). The raw file runs the same three
 * phases over its own preallocated bytes: its figure per phase is the floor for that phase.
 *
 * Repetitions are rounds: each round runs every source once for every cache mode and pattern, in an order
 * rotated from round to round, so drift over the run hits every source alike; round i of every source uses
 * the same request sequence, and ratios are computed within a round (src/report/ratios.ts). Every row keeps
 * its per-round figures (`reps`). fio replays the same sequences against the NBD exports as a cross-check.
 *
 * This module runs the parts in order, each recording what fails in it: write-matrix.ts, trace-replay.ts,
 * fio-matrix.ts and snapshot-ops.ts (options.ts says what a run measures; src/report renders the results).
 */
import * as fs from "node:fs";
import { failureLine, failureOf } from "../report/failures.js";
import type { BenchResults, FailedSource } from "../report/results.js";
import { closeAllWorkers } from "../worker/index.js";
import { fioMatrix } from "./fio-matrix.js";
import type { BenchOptions } from "./options.js";
import { cellsToRun } from "./shard.js";
import { opRows } from "./snapshot-ops.js";
import { detectTools, type Tools } from "./sources.js";
import { traceMatrix } from "./trace-replay.js";
import { writeMatrix } from "./write-matrix.js";

export async function runMatrix(opts: BenchOptions, tools: Tools = detectTools()): Promise<BenchResults> {
  const results: BenchResults = { rows: [], fio: [], missing: [], failed: [] };
  fs.mkdirSync(opts.dir, { recursive: true });
  // Through the environment, so that every open of the run sees it: worker threads and NBD servers too.
  if (opts.noReflink) process.env.REFCOW_REFLINK = "0";
  if (!opts.qemu) results.missing.push({ source: "QEMU (qemu-nbd), the raw file through qemu-nbd, refcow's NBD export and fio", reason: "left out (--no-qemu)", asked: true });
  // Each part records what fails in it and the run goes on: an exception never costs the figures already taken.
  const part = async (name: FailedSource["part"], run: () => Promise<void>) => {
    try {
      await run();
    } catch (e) {
      const f = failureOf(e, { part: name, name });
      results.failed.push(f);
      opts.progress(`  FAILED: ${failureLine(f)}`);
    }
  };
  try {
    await part("write matrix", () => writeMatrix(opts, tools, results));
    await part("trace replay", () => traceMatrix(opts, tools, results));
    if (opts.qemu) await part("fio", () => fioMatrix(opts, tools, results));
    // Snapshot operations allocate little (an L1 copy, refcount blocks, a table): timed under the first
    // allocation policy asked for only, which keeps the 16 GiB runs of the full matrix to one per scheme.
    const opAlloc = opts.allocs[0] ?? "first-fit";
    const ops = cellsToRun(opts.shard, "snapshot-ops", opts.opSizes.flatMap((size) => opts.schemes.map((scheme) => `${scheme}|${opAlloc}|${size}`)));
    for (const size of opts.opSizes) {
      for (const scheme of opts.schemes) {
        if (!ops.has(`${scheme}|${opAlloc}|${size}`)) continue;
        opts.progress(`snapshot/open/close timings: ${scheme} ${opAlloc}, ${Math.round(size / 2 ** 20)} MiB allocated`);
        try {
          results.rows.push(...opRows(opts, scheme, opAlloc, size, tools));
        } catch (e) {
          const f = failureOf(e, { part: "snapshot-ops", name: `${scheme} (in-process)`, source: "refcow", scheme, alloc: opAlloc, transport: "in-process", workload: `snapshot-ops ${Math.round(size / 2 ** 20)} MiB` });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
        }
      }
    }
  } finally {
    await closeAllWorkers();
  }
  return results;
}

/**
 * 1 when a source is missing that was not left out on request (install what the message names, or pass
 * --no-qemu) or when a source failed; 0 otherwise. Says why on `err`.
 */
export function benchExitStatus(results: BenchResults, err: (line: string) => void): number {
  const unasked = results.missing.filter((m) => !m.asked);
  for (const m of unasked) err(`refcow: ${m.source} not measured: ${m.reason}\n`);
  for (const f of results.failed) err(`refcow: failed: ${failureLine(f)}\n`);
  if (unasked.length && !results.failed.length) err("refcow: sources are missing (pass --no-qemu to leave QEMU's and the NBD sources out on purpose)\n");
  return unasked.length || results.failed.length ? 1 : 0;
}
