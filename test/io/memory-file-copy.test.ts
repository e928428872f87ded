/**
 * MemoryFile.copyFrom (a file reused for one crash state after another) and the fault file's materialize()
 * into such a file: the same bytes as a fresh copy, whatever the reused file held before.
 */
import { describe, expect, it } from "vitest";
import { MemoryFile } from "../../src/io/memory-file.js";
import { FaultFile } from "../../src/io/fault-file.js";
import { geometryFor, runCrashWorkload } from "../../src/harness/crash.js";

describe("MemoryFile.copyFrom", () => {
  it("takes the source's bytes and size; what the file held past them reads as zeroes", () => {
    const target = new MemoryFile(new Uint8Array(8192).fill(7));
    target.close();
    const source = new MemoryFile(new Uint8Array(3000).fill(1));
    target.copyFrom(source, "copy");
    expect(target.size()).toBe(3000);
    expect(target.name).toBe("copy");
    // Open again, and growing past the end reads zeroes there, not the old 7s.
    target.truncate(8192);
    const all = new Uint8Array(8192);
    target.read(all, 0);
    expect(all.subarray(0, 3000).every((b) => b === 1)).toBe(true);
    expect(all.subarray(3000).every((b) => b === 0)).toBe(true);
    // The source is not shared.
    target.write(new Uint8Array([9]), 0);
    const first = new Uint8Array(1);
    source.read(first, 0);
    expect(first[0]).toBe(1);
  });

  it("grows to a larger source", () => {
    const target = new MemoryFile(new Uint8Array(10).fill(3));
    target.copyFrom(new MemoryFile(new Uint8Array(100_000).fill(4)));
    const all = new Uint8Array(100_000);
    expect(target.read(all, 0)).toBe(100_000);
    expect(all.every((b) => b === 4)).toBe(true);
  });
});

describe("FaultFile.materialize into a reused file", () => {
  it("gives every crash state of a workload the bytes a fresh copy has", () => {
    const w = runCrashWorkload("journal", "writeback", 2, 20, geometryFor(2), "first-fit");
    const fault: FaultFile = w.fault;
    const reused = new MemoryFile();
    let states = 0;
    for (const at of fault.writePoints()) {
      for (const state of fault.crashStates(at, { torn: 2, subsets: 2, random: () => 0.3 })) {
        const fresh = fault.materialize(state).contents();
        const into = fault.materialize(state, reused);
        expect(into).toBe(reused);
        // Compared as Buffers: a mismatch names the state instead of printing two whole images.
        expect(Buffer.from(into.contents()).equals(Buffer.from(fresh)), `state at ${at}: ${fault.describe(state)}`).toBe(true);
        states++;
      }
    }
    expect(states).toBeGreaterThan(100);
  });
});
