/**
 * Crash consistency, quick run of the harness (src/harness/crash.ts): for every scheme and cache mode, three
 * seeded workloads (one per geometry), every crash state at every write recovered and verified; a sample of
 * states also checked and compared by QEMU, another repaired by check -r all under the scheme and compared with
 * qemu-img check -r all. `npm run test:crash` runs the long version.
 */
import { describe, expect, it } from "vitest";
import type { CacheMode } from "../../src/engine/types.js";
import { formatCrashReport, runCrashTests } from "../../src/harness/crash.js";
import { qemuImgAvailable } from "../../src/harness/qemu-tools.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

describe("crash consistency", () => {
  it("QEMU is there to check the recovered states", () => expect(qemuImgAvailable()).toBe(true));
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writeback", "writethrough"] as CacheMode[]) {
      it(`${scheme}/${cache}: every crash state recovers, acknowledged data and snapshots intact`, () => {
        const report = runCrashTests({ schemes: [scheme], caches: [cache], seed: 1, seeds: 3, steps: 60, qemuSample: 9 });
        const cell = report.cells[0];
        console.log(formatCrashReport(report).split("\n").slice(2, 3).join("\n"));
        expect(report.failures, formatCrashReport(report)).toBe(0);
        expect(cell.states).toBeGreaterThan(1000);
        expect(cell.qemuChecked).toBeGreaterThan(0);
        expect(cell.checkRepaired).toBeGreaterThan(0);
      }, 300_000);
    }
  }
});
