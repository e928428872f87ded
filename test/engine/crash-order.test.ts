/**
 * eager --order qemu keeps eager's crash guarantees: the quick crash harness run (every crash state at every
 * write recovered and verified, a sample checked by QEMU) with QEMU 7.2's flush ordering.
 */
import { describe, expect, it } from "vitest";
import type { CacheMode } from "../../src/engine/types.js";
import { formatCrashReport, runCrashTests } from "../../src/harness/crash.js";

describe("crash consistency of eager --order qemu", () => {
  for (const cache of ["writeback", "writethrough"] as CacheMode[]) {
    it(`${cache}: every crash state recovers, acknowledged data and snapshots intact`, () => {
      const report = runCrashTests({ schemes: ["eager"], caches: [cache], order: "qemu", seed: 1, seeds: 2, steps: 50, qemuSample: 4 });
      expect(report.failures, formatCrashReport(report)).toBe(0);
      expect(report.cells[0]!.states).toBeGreaterThan(500);
    }, 300_000);
  }
});
