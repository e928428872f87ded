/**
 * Long run of the image fuzzer: `npm run fuzz` (FUZZ_RUNS cases, default 5000; FUZZ_SEED, default the time).
 * Prints the number of cases run and how the engine answered them.
 */
import { expect, it } from "vitest";
import { fuzzImages } from "./fuzzer.js";

const runs = Number(process.env.FUZZ_RUNS ?? 5000);
const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);

it(`fuzz: ${runs} cases from seed ${seed}`, async () => {
  const summary = await fuzzImages({ seed, runs, log: (l) => console.log(l) });
  console.log(`fuzz seed ${seed}: ${summary.cases} cases run, verdicts ${JSON.stringify(summary.verdicts)}, peak RSS ${(summary.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
  expect(summary.failure).toBeUndefined();
}, 24 * 3600_000);
