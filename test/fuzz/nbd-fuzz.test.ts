/** Quick, seeded run of the NBD server fuzzer (nbd-fuzzer.ts); `npm run fuzz` runs it long. */
import { expect, it } from "vitest";
import { fuzzNbd } from "./nbd-fuzzer.js";

it.each(["ring", "inline"] as const)("%s: malformed NBD client traffic: every connection ends cleanly, the server goes on serving, the image stays sound", async (mode) => {
  const summary = await fuzzNbd({ seed: 20261201, runs: 400, mode });
  console.log(`nbd fuzz: ${summary.cases} cases, ${(summary.bytesSent / 2 ** 20).toFixed(1)} MiB sent`);
  expect(summary.failure).toBeUndefined();
  expect(summary.cases).toBe(400);
}, 300_000);
