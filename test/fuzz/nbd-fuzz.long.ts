/**
 * Long run of the NBD server fuzzer: part of `npm run fuzz` (NBD_FUZZ_RUNS cases, default 20000;
 * NBD_FUZZ_SEED, default the time).
 */
import { expect, it } from "vitest";
import { fuzzNbd } from "./nbd-fuzzer.js";

const runs = Number(process.env.NBD_FUZZ_RUNS ?? 20000);
const seed = Number(process.env.NBD_FUZZ_SEED ?? Date.now() % 2 ** 31);

it.each(["ring", "inline"] as const)(`%s: nbd fuzz: ${runs} cases from seed ${seed}`, async (mode) => {
  const summary = await fuzzNbd({ seed, runs, mode, log: (l) => console.log(l) });
  console.log(`nbd fuzz seed ${seed}: ${summary.cases} cases run, ${(summary.bytesSent / 2 ** 20).toFixed(1)} MiB sent`);
  if (summary.failure) console.log(summary.failure);
  expect(summary.failure).toBeUndefined();
}, 24 * 3600_000);
