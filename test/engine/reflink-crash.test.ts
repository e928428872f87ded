/**
 * Clones as crash points: the fault file (io/fault-file.ts) with clones on, under the crash harness, for
 * every scheme — each clone a crash point, lost, reordered with the unflushed writes or torn at its blocks —
 * and the fault file's own model of a clone.
 */
import { describe, expect, it } from "vitest";
import { formatCrashReport, geometryFor, runCrashTests, runCrashWorkload } from "../../src/harness/crash.js";
import { FaultFile } from "../../src/io/fault-file.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

describe("the fault file's clone", () => {
  it("is a crash point that reaches the disk with the bytes the source held at the clone, whole, torn or not at all", () => {
    const f = new FaultFile(new Uint8Array(8192).fill(1));
    f.cloneBlockSize = 512;
    f.flush();
    expect(f.cloneRange(0, 4096, 2048, "cow-write")).toBe(true);
    // The source changes after the clone: the clone keeps what it shared.
    f.write(new Uint8Array(512).fill(9), 0, "guest-data");
    expect(f.contents().subarray(4096, 6144).every((b) => b === 1)).toBe(true);
    const at = f.log.length;
    expect(f.writePoints()).toContain(2); // just after the clone
    const states = f.crashStates(at, { torn: Infinity });
    const byKey = new Map(states.map((s) => [`${s.applied.join(",")}/${s.tornSectors ?? "-"}`, s]));
    // Not at all: the destination reads as before.
    expect(f.materialize(byKey.get("/-")!).contents().subarray(4096, 6144).every((b) => b === 1)).toBe(true);
    // Torn after its first block of 512 bytes (one of three tear points of four blocks).
    const torn = states.filter((s) => s.applied.length === 1 && s.tornSectors !== undefined).map((s) => s.tornSectors);
    expect(torn).toEqual([1, 2, 3]);
    expect(f.describe(states.find((s) => s.applied.length === 1)!)).toMatch(/clone from 0x0/);
  });

  it("refuses what FICLONERANGE refuses: unaligned or overlapping ranges", () => {
    const f = new FaultFile(new Uint8Array(8192));
    expect(f.cloneRange(0, 4096, 512)).toBe(false); // clones off by default
    f.cloneBlockSize = 512;
    expect(() => f.cloneRange(100, 4096, 512)).toThrow(/aligned/);
    expect(() => f.cloneRange(0, 512, 1024)).toThrow(/overlaps/);
  });
});

describe("crash harness with clones", () => {
  it("every scheme's workload clones (the copies on write of the 4k geometry are shared)", () => {
    for (const scheme of SCHEME_NAMES) {
      // Seeds whose workloads write part of a cluster shared with a snapshot (7 and 8: the run below).
      for (const seed of [7, 8]) {
        const w = runCrashWorkload(scheme, "writeback", seed, 50, geometryFor(seed, "4k"), seed % 2 ? "append" : "first-fit", undefined, true);
        expect(w.fault.log.filter((op) => op.kind === "clone").length, `${scheme} seed ${seed}`).toBeGreaterThan(0);
      }
    }
  });

  it("every scheme, both cache modes: every crash state at every write and clone recovers", () => {
    const report = runCrashTests({ reflink: true, geometry: "4k", seed: 7, seeds: 2, steps: 50, qemuSample: 4, checkSample: 2 });
    expect(report.states).toBeGreaterThan(0);
    expect(report.failures, formatCrashReport(report)).toBe(0);
  }, 600_000);
});
