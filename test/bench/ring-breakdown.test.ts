/**
 * The ring breakdown runner: every source is measured in every repetition, the ring sources with their
 * stages, and the stages of a ring write fit inside its round trip; qemu-img check reads the image clean.
 */
import { describe, expect, it } from "vitest";
import { buildsToCompare } from "../../src/bench/compare-bin.js";
import { formatRingBreakdown, runRingBreakdown } from "../../src/bench/ring-breakdown.js";

describe("ring breakdown", () => {
  it("measures every source in each repetition and splits ring requests into stages", async () => {
    const builds = buildsToCompare(undefined);
    const { runs, checks } = await runRingBreakdown({ requests: 200, reps: 2, builds });
    const sources = ["raw pwrite", "engine in-process", "raw in-process", "qcow2 via ring", "raw via ring", "nop via ring"];
    for (const s of sources) expect(runs.filter((r) => r.source === s).map((r) => r.rep).sort()).toEqual([0, 1]);
    for (const r of runs.filter((x) => x.source.includes("via ring"))) {
      const st = r.stages!;
      for (const v of Object.values(st)) expect(v).toBeGreaterThanOrEqual(0);
      // Medians of parts need not add up exactly, but none exceeds the whole by much.
      expect(st.serve).toBeLessThanOrEqual(r.us * 1.5);
    }
    expect(checks.length).toBe(2);
    expect(new Set(checks)).toEqual(new Set(["clean"]));
    const table = formatRingBreakdown(runs, checks, builds, 200);
    expect(table).toContain("| qcow2 via ring / raw via ring |");
    expect(table).toContain("| qcow2 via ring / raw pwrite |");
  }, 120_000);
});
