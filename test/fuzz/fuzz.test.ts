/**
 * Quick, seeded run of the image fuzzer (fuzzer.ts): mutants of valid images made by QEMU and refcow, each
 * opened, read, written, snapshotted, checked and run through every CLI command. `npm run fuzz` runs it long.
 */
import { expect, it } from "vitest";
import { fuzzImages } from "./fuzzer.js";

it("mutated images get a clear error or correct data: no internal error, hang, runaway memory or write after a corrupt verdict", async () => {
  const summary = await fuzzImages({ seed: 20260601, runs: 1000 });
  console.log(`fuzz: ${summary.cases} cases, verdicts ${JSON.stringify(summary.verdicts)}, peak RSS ${(summary.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
  expect(summary.failure).toBeUndefined();
  expect(summary.cases).toBe(1000);
}, 600_000);
