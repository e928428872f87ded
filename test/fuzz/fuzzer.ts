/**
 * The image fuzzer: fast-check generates (seed image, mutations, scheme, cache mode); each mutant runs in a
 * worker thread (fuzz-worker.ts) with a generous time box (a hang detector, not a performance limit) and a
 * bounded heap; process RSS is watched between cases. Deterministic by seed: the same seed and number of runs
 * give the same cases. A failure is shrunk by fast-check to a minimal mutation list and reported with it.
 */
import { buildSync } from "esbuild";
import fc from "fast-check";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import type { FuzzCase, FuzzOutcome } from "./fuzz-worker.js";
import { applyMutations, type Layout, mutationsArb, parseLayout } from "./mutations.js";
import { buildSeedImages, type SeedImage, seedPath } from "./seed-images.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface FuzzOptions {
  seed: number;
  runs: number;
  /** One case in `cliEvery` also runs every CLI command (default 3). */
  cliEvery?: number;
  /** Time box per case (default 30 s). */
  timeoutMs?: number;
  /** Heap limit of the worker (default 1024 MiB). */
  heapMb?: number;
  /** Process RSS above which a case counts as unbounded allocation (default 2 GiB). */
  rssLimitBytes?: number;
  log?: (line: string) => void;
  /** Log every case. */
  verbose?: boolean;
  /** Shrink a failing case to a minimal mutation list (slow: every shrink step is a case). */
  shrink?: boolean;
}

export interface FuzzSummary {
  cases: number;
  /** How the engine answered, by kind (accepted, or the first error's class). */
  verdicts: Record<string, number>;
  peakRssBytes: number;
  failure?: string;
}

/** Bundles the worker (TypeScript, importing the engine and CLI sources) into one ESM file. */
function bundleWorker(): string {
  const out = path.join(ROOT, "node_modules", ".cache", "refcow-fuzz", "fuzz-worker.mjs");
  buildSync({
    entryPoints: [path.join(ROOT, "test", "fuzz", "fuzz-worker.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: out,
    packages: "external",
    logLevel: "error",
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  // Started through an entry of its own: bundled modules that run when they are the main script (the ring
  // bench) compare their URL, now the bundle's, with the thread's script.
  const entry = path.join(path.dirname(out), "fuzz-worker-entry.mjs");
  fs.writeFileSync(entry, 'import "./fuzz-worker.mjs";\n');
  return entry;
}

/** One worker thread at a time; replaced when it hangs or dies. */
class CaseRunner {
  private worker: Worker | undefined;

  constructor(
    private readonly script: string,
    private readonly heapMb: number,
  ) {}

  run(c: FuzzCase, timeoutMs: number): Promise<FuzzOutcome> {
    const w = (this.worker ??= new Worker(this.script, { resourceLimits: { maxOldGenerationSizeMb: this.heapMb } }));
    return new Promise((resolve) => {
      const done = (r: FuzzOutcome) => {
        clearTimeout(timer);
        w.off("message", onMessage);
        w.off("error", onError);
        w.off("exit", onExit);
        resolve(r);
      };
      const fail = (why: string) => {
        this.worker = undefined;
        void w.terminate();
        done({ id: c.id, problems: [why], verdict: "", ops: 0 });
      };
      const onMessage = (r: FuzzOutcome) => r.id === c.id && done(r);
      const onError = (e: Error) => fail(`the worker died: ${e.name}: ${e.message}`);
      const onExit = (code: number) => fail(`the worker exited (${code})`);
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs / 1000} s (a hang)`), timeoutMs);
      w.on("message", onMessage);
      w.on("error", onError);
      w.on("exit", onExit);
      w.postMessage(c);
    });
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}

export async function fuzzImages(opts: FuzzOptions): Promise<FuzzSummary> {
  const log = opts.log ?? (() => {});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-fuzz-"));
  const runner = new CaseRunner(bundleWorker(), opts.heapMb ?? 1024);
  const summary: FuzzSummary = { cases: 0, verdicts: {}, peakRssBytes: 0 };
  try {
    const seeds: SeedImage[] = buildSeedImages(dir);
    const layouts: Layout[] = seeds.map((s) => parseLayout(s.bytes));
    const cliEvery = opts.cliEvery ?? 3;
    const rssLimit = opts.rssLimitBytes ?? 2 * 1024 ** 3;
    let id = 0;
    const property = fc.asyncProperty(
      fc.nat({ max: seeds.length - 1 }),
      mutationsArb,
      fc.nat({ max: SCHEME_NAMES.length - 1 }),
      fc.boolean(),
      async (seedIndex, mutations, schemeIndex, writethrough) => {
        const seed = seeds[seedIndex];
        const { bytes, described } = applyMutations(seed.bytes, layouts[seedIndex], mutations);
        const c: FuzzCase = {
          id: id++,
          bytes,
          dir,
          seedFile: seedPath(dir, seed),
          scheme: SCHEME_NAMES[schemeIndex],
          cache: writethrough ? "writethrough" : "writeback",
          cli: id % cliEvery === 0,
        };
        const t0 = Date.now();
        const r = await runner.run(c, opts.timeoutMs ?? 30_000);
        if (opts.verbose) log(`case ${c.id} ${seed.name} ${c.scheme}/${c.cache}${c.cli ? " +cli" : ""} ${Date.now() - t0} ms: ${r.problems.length ? "FAIL" : "ok"} ${r.verdict.slice(0, 100)} | ${described.join("; ")}${r.problems.length ? `\n    ${r.problems.join("\n    ")}` : ""}`);
        summary.cases++;
        const kind = r.verdict === "accepted" ? "accepted" : (/: (\w+Error):/.exec(r.verdict)?.[1] ?? "other");
        summary.verdicts[kind] = (summary.verdicts[kind] ?? 0) + 1;
        const rss = process.resourceUsage().maxRSS * 1024;
        summary.peakRssBytes = Math.max(summary.peakRssBytes, rss);
        if (rss > rssLimit) r.problems.push(`process RSS reached ${(rss / 2 ** 20).toFixed(0)} MiB (limit ${(rssLimit / 2 ** 20).toFixed(0)} MiB)`);
        if (summary.cases % 100 === 0) log(`${summary.cases} cases, verdicts ${JSON.stringify(summary.verdicts)}`);
        if (r.problems.length) {
          throw new Error(`seed image ${seed.name}, scheme ${c.scheme}/${c.cache}${c.cli ? ", with the CLI" : ""}; mutations:\n  ${described.join("\n  ")}\nproblems:\n  ${r.problems.join("\n  ")}`);
        }
      },
    );
    const details = await fc.check(property, { seed: opts.seed, numRuns: opts.runs, endOnFailure: !opts.shrink, markInterruptAsFailure: true });
    if (details.failed) {
      const err = details.errorInstance as Error | undefined;
      summary.failure = `fuzz seed ${opts.seed}: failed after ${details.numRuns} cases (${details.numShrinks} shrinks); counterexample path ${details.counterexamplePath}\n${err?.message ?? String(err)}`;
    }
    return summary;
  } finally {
    await runner.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
