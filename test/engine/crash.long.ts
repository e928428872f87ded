/**
 * Long crash-consistency run (`npm run test:crash`): the harness of crash.test.ts with more seeds, longer
 * workloads, more tear points and subsets, and more states checked by QEMU. Sizes from the environment:
 *   CRASH_SEEDS (default 12), CRASH_STEPS (200), CRASH_SEED (1), CRASH_TORN (4), CRASH_SUBSETS (4),
 *   CRASH_QEMU_SAMPLE (200, or "all"), CRASH_CHECK_SAMPLE (60), CRASH_SCHEMES (all), CRASH_CACHES (writeback,writethrough).
 * The same run from the command line: refcow crash-test --seeds 12 --steps 200 --torn 4 --subsets 4 --qemu-sample 200 --check-sample 60
 */
import { expect, it } from "vitest";
import type { CacheMode } from "../../src/engine/types.js";
import { formatCrashReport, runCrashTests } from "../../src/harness/crash.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const sample = process.env.CRASH_QEMU_SAMPLE === "all" ? "all" : env("CRASH_QEMU_SAMPLE", 200);

it("crash consistency, long run", () => {
  const started = Date.now();
  const report = runCrashTests({
    schemes: (process.env.CRASH_SCHEMES ?? SCHEME_NAMES.join(",")).split(","),
    caches: (process.env.CRASH_CACHES ?? "writeback,writethrough").split(",") as CacheMode[],
    seed: env("CRASH_SEED", 1),
    seeds: env("CRASH_SEEDS", 12),
    steps: env("CRASH_STEPS", 200),
    torn: env("CRASH_TORN", 4),
    subsets: env("CRASH_SUBSETS", 4),
    qemuSample: sample,
    checkSample: env("CRASH_CHECK_SAMPLE", 60),
    onCell: (c) => console.log(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${c.scheme}/${c.cache}: ${c.states} crash states, ${c.failures} failures`),
  });
  console.log(formatCrashReport(report));
  expect(report.failures, formatCrashReport(report)).toBe(0);
});
