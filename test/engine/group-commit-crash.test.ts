/**
 * Group commit keeps "completed ⇒ durable": the request ring's serve loop, serving batches of writes,
 * write-zeroes, FLUSHes and a snapshot over a fault-injecting file, publishes no completion before the flush
 * that makes it durable — at every crash point, for every scheme, in writethrough and writeback
 * (src/harness/group-commit-crash.ts).
 */
import { describe, expect, it } from "vitest";
import { runGroupCommitCrash } from "../../src/harness/group-commit-crash.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

describe("group commit under crashes", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writethrough", "writeback"] as const) {
      it(`${scheme}/${cache}: no completion is visible before its flush, at every crash point`, async () => {
        const r = await runGroupCommitCrash({ scheme, cache, seed: 11 });
        expect(r.failures, r.failures.join("\n")).toEqual([]);
        expect(r.states).toBeGreaterThan(50);
        expect(r.durableChecks).toBeGreaterThan(0);
        // The batches did share flushes: fewer group flushes than requests.
        expect(r.commits).toBeGreaterThan(0);
        expect(r.commits).toBeLessThan(r.requests / 2);
      }, 120_000);
    }
  }
});
