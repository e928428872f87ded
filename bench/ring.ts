/**
 * Ring round-trip benchmark: an empty request and a 4 KiB write through the SharedArrayBuffer request ring to
 * a worker thread, against calling the engine in-process; plus the CPU an idle open image costs.
 *
 * Node 20 runs compiled JavaScript only, so the runnable copy lives in src/worker/ring-bench.ts:
 *
 *     npm run build && node dist/worker/ring-bench.js [--requests N] [--idle S] [--cache MODE]
 *
 * This module is the typed entry for the bench runner.
 */
export { formatRingBench, ringBenchMain, runRingBench } from "../src/worker/ring-bench.js";
export type { RingBenchOptions, RingBenchResult } from "../src/worker/ring-bench.js";
