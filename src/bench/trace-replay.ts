/**
 * The trace replay: a guest disk trace (`refcow run --trace`, src/guest/trace.ts) replayed request by request on
 * every scheme and on the raw file, round after round, its phases timed like the write matrix's.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { SyncDisk } from "../disk/sync-disk.js";
import { createImagePath, openImagePath } from "../open/open-path.js";
import type { DiskClient } from "../worker/disk-client.js";
import type { CacheMode, CostBreakdown } from "../engine/types.js";
import { diffCosts } from "../io/accounting-file.js";
import { failureOf } from "../report/failures.js";
import { type BenchResults, type SourceSpec, sourceName, type Transport } from "../report/results.js";
import { readTrace, type Trace } from "../guest/trace.js";
import { requireCleanImage } from "./image-check.js";
import { nowUs } from "./load.js";
import type { BenchOptions } from "./options.js";
import { addCosts, type PhaseRun, rowFromRuns, slug, specFields, specKey } from "./phase-runs.js";
import { cellsToRun } from "./shard.js";
import type { Tools } from "./sources.js";

/**
 * The image a replay runs on: the engine in this thread (the synchronous disk contract) or in its worker
 * (the ring client's promises). The replay awaits every call, so both are driven the same way.
 */
type ReplayImage = SyncDisk | DiskClient;

async function openReplayImage(file: string, spec: SourceSpec, cache: CacheMode): Promise<ReplayImage> {
  const format = spec.source === "raw" ? "raw" : "qcow2";
  const scheme = spec.source === "raw" ? undefined : spec.scheme;
  if (spec.transport === "in-process") return openImagePath(file, { scheme, alloc: spec.alloc, order: spec.order, cache, format });
  const { openServedImage } = await import("../worker/index.js");
  return openServedImage(file, { scheme, alloc: spec.alloc, order: spec.order, cache, format });
}

/** The image's cost records so far: undefined from a disk that keeps none, empty from a served raw file. */
async function costsOf(disk: ReplayImage): Promise<CostBreakdown | undefined> {
  const costs = await disk.stats?.();
  return costs === undefined ? undefined : ((costs ?? {}) as CostBreakdown);
}

/**
 * One replay of a guest disk trace, request by request in its order: writes (of a fixed pattern; traces keep
 * no data), reads, flushes, and the host's snapshots. A refcow source replays it on a fresh qcow2 of the
 * trace's size and cluster size, the raw file on a sparse file of that size, both through the same
 * transport. A host event (the snapshot) runs outside every phase's clock and cost counters: the phase's
 * clock and counters stop for the flush and the snapshot and start again after them.
 */
async function traceRun(opts: BenchOptions, trace: Trace, spec: SourceSpec, cache: CacheMode, round: number, tools: Tools): Promise<Map<string, PhaseRun>> {
  const maxLen = Math.max(512, ...trace.events.map((e) => e.length));
  const data = new Uint8Array(maxLen).fill(0x5a);
  const readBuf = new Uint8Array(maxLen);
  const format = spec.source === "raw" ? "raw" : "qcow2";
  const file = path.join(opts.dir, `trace-${slug(spec)}-${cache}-${round}.img`);
  fs.rmSync(file, { force: true });
  if (spec.source === "raw") {
    fs.writeFileSync(file, "");
    fs.truncateSync(file, trace.header.size);
  } else createImagePath(file, { size: trace.header.size, clusterSize: trace.header.clusterSize });
  const disk = await openReplayImage(file, spec, cache);
  const out = new Map<string, PhaseRun>();
  let current: PhaseRun | undefined;
  let currentName: string | undefined;
  let segStart = 0;
  let segBefore: CostBreakdown | undefined;
  const pause = async () => {
    if (!current) return;
    current.wallUs += nowUs() - segStart;
    const after = await costsOf(disk);
    if (after && segBefore) current.costs = addCosts(current.costs ?? {}, diffCosts(after, segBefore));
  };
  const resume = async () => {
    segBefore = await costsOf(disk);
    segStart = nowUs();
  };
  try {
    for (const e of trace.events) {
      const phase = e.phase || "(none)";
      if (!current || currentName !== phase) {
        await pause();
        current = out.get(phase) ?? { writeUs: [], flushUs: [], wallUs: 0, writes: 0 };
        currentName = phase;
        out.set(phase, current);
        await resume();
      }
      if (e.op === "s") {
        await pause();
        await disk.flush();
        if (format === "qcow2") await disk.snapshotCreate?.(e.name ?? "trace");
        await resume();
        continue;
      }
      const t = nowUs();
      if (e.op === "w") {
        await disk.write(e.offset, data.subarray(0, e.length));
        current.writeUs.push(nowUs() - t);
        current.writes++;
      } else if (e.op === "r") await disk.readInto(readBuf.subarray(0, e.length), e.offset);
      else if (e.op === "f") {
        await disk.flush();
        current.flushUs.push(nowUs() - t);
      }
    }
    await pause();
  } finally {
    await disk.close();
  }
  try {
    if (spec.source !== "raw" && tools.qemuImg) requireCleanImage(file);
  } finally {
    fs.rmSync(file, { force: true });
  }
  for (const [k, v] of out) if (!v.writes) out.delete(k);
  return out;
}

/** The trace replay, round after round (sources rotated); a source that throws or fails qemu-img check is a failed entry. */
export async function traceMatrix(opts: BenchOptions, tools: Tools, results: BenchResults): Promise<void> {
  if (!opts.workloads.includes("trace")) return;
  if (!opts.traceFile) throw new Error("the trace workload needs a trace file (--trace FILE, written by `refcow run --trace`)");
  const trace = readTrace(opts.traceFile);
  const transport: Transport = opts.inProcess ? "in-process" : "ring";
  const specs: SourceSpec[] = [];
  for (const scheme of opts.schemes) for (const alloc of opts.allocs) specs.push({ source: "refcow", scheme, alloc, transport });
  specs.push({ source: "raw", scheme: "none", transport });
  const acc = new Map<string, { spec: SourceSpec; cache: CacheMode; phase: string; runs: PhaseRun[] }>();
  const failed = new Set<string>();
  const mine = cellsToRun(opts.shard, "trace replay", opts.caches.flatMap((cache) => specs.map((spec) => `${specKey(spec)}|${cache}`)));
  for (let round = 0; round < opts.reps; round++) {
    for (const cache of opts.caches) {
      const k = (round * 3) % specs.length;
      for (const spec of [...specs.slice(k), ...specs.slice(0, k)]) {
        const cell = `${specKey(spec)}|${cache}`;
        if (failed.has(cell) || !mine.has(cell)) continue;
        opts.progress(`trace replay, round ${round + 1}/${opts.reps}, ${cache}, ${sourceName(spec)} (${trace.events.length} requests)`);
        let phases: Map<string, PhaseRun>;
        try {
          phases = await traceRun(opts, trace, spec, cache, round, tools);
        } catch (e) {
          failed.add(cell);
          const f = failureOf(e, { part: "trace replay", ...specFields(spec), cache, workload: "trace", round: round + 1 });
          results.failed.push(f);
          opts.progress(`  FAILED: ${f.reason}`);
          continue;
        }
        for (const [phase, run] of phases) {
          const key = `${cell}|${phase}`;
          const a = acc.get(key) ?? { spec, cache, phase, runs: [] };
          a.runs.push(run);
          acc.set(key, a);
        }
      }
    }
  }
  for (const a of acc.values()) {
    const { spec } = a;
    if (failed.has(`${specKey(spec)}|${a.cache}`)) continue;
    results.rows.push(rowFromRuns({ source: spec.source, scheme: spec.scheme, ...(spec.alloc ? { alloc: spec.alloc } : {}), transport: spec.transport, cache: a.cache, workload: "trace", phase: a.phase }, a.runs));
  }
}
