/**
 * Guest cuts benchmark: the rand4k guest workload with the cuts of the guest-to-engine delay added one after
 * the other (src/vm/latency-cuts.ts), each clock's median and p99 per configuration.
 *
 * Node 20 runs compiled JavaScript only, so the runnable copy lives in src/vm/cuts-bench.ts:
 *
 *     npm run bench:guest-cuts          # or: npm run build && node dist/vm/cuts-bench.js [--reps N] [--schemes a,b] [--cache a,b]
 *
 * This module is the typed entry for the bench runner.
 */
export { CUT_STEPS, cutsBenchMain, formatCutsBench, runCutsBench } from "../src/vm/cuts-bench.js";
export type { CutsBenchOptions, CutsBenchRun } from "../src/vm/cuts-bench.js";
