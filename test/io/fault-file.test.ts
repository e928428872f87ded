/** The fault-injecting file produces exactly the crash states a power loss can leave. */
import { describe, expect, it } from "vitest";
import { FaultFile } from "../../src/io/fault-file.js";

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe("FaultFile", () => {
  it("keeps flushed writes, and any prefix of the unflushed ones", () => {
    const f = new FaultFile(bytes(4096, 0));
    f.write(bytes(512, 1), 0); // op 0
    f.flush(); // op 1
    f.write(bytes(512, 2), 512); // op 2
    f.write(bytes(512, 3), 1024); // op 3
    f.write(bytes(512, 4), 0); // op 4
    expect(f.unflushedWrites(5)).toEqual([2, 3, 4]);
    const states = f.crashStates(5);
    expect(states.map((s) => s.applied)).toEqual([[], [2], [2, 3], [2, 3, 4]]);
    const view = (i: number) => {
      const m = f.materialize(states[i]).contents();
      return [m[0], m[512], m[1024]];
    };
    expect(view(0)).toEqual([1, 0, 0]);
    expect(view(1)).toEqual([1, 2, 0]);
    expect(view(3)).toEqual([4, 2, 3]);
    // Crash before the flush: nothing is durable.
    expect(f.crashStates(1).map((s) => s.applied)).toEqual([[], [0]]);
    expect(f.materialize({ at: 1, applied: [] }).contents()[0]).toBe(0);
  });

  it("adds bounded subsets, each distinct and not a prefix", () => {
    const f = new FaultFile(bytes(8192, 0));
    for (let i = 0; i < 6; i++) f.write(bytes(512, i + 1), i * 512);
    const states = f.crashStates(6, { subsets: 10, random: rng(1) });
    const keys = states.map((s) => s.applied.join(","));
    expect(new Set(keys).size).toBe(keys.length);
    expect(states.length).toBe(7 + 10);
    const sub = states[9];
    const m = f.materialize(sub).contents();
    for (let i = 0; i < 6; i++) expect(m[i * 512]).toBe(sub.applied.includes(i) ? i + 1 : 0);
    // Two writes have exactly one non-prefix subset ({second}).
    const g = new FaultFile();
    g.write(bytes(1, 1), 0);
    g.write(bytes(1, 2), 1);
    expect(g.crashStates(2, { subsets: 5, random: rng(2) }).map((s) => s.applied)).toEqual([[], [0], [0, 1], [1]]);
  });

  it("tears the last write at sector boundaries", () => {
    const f = new FaultFile(bytes(8192, 0));
    f.write(bytes(4096, 9), 0);
    const one = f.crashStates(1, { torn: true }).filter((s) => s.tornSectors !== undefined);
    expect(one.map((s) => s.tornSectors)).toEqual([4]);
    const all = f.crashStates(1, { torn: Infinity }).filter((s) => s.tornSectors !== undefined);
    expect(all.map((s) => s.tornSectors)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const three = f.crashStates(1, { torn: 3 }).filter((s) => s.tornSectors !== undefined);
    expect(three.map((s) => s.tornSectors)).toEqual([1, 4, 7]);
    const m = f.materialize({ at: 1, applied: [0], tornSectors: 3 }).contents();
    expect(m[3 * 512 - 1]).toBe(9);
    expect(m[3 * 512]).toBe(0);
    // A single-sector write cannot tear.
    const g = new FaultFile();
    g.write(bytes(512, 1), 0);
    expect(g.crashStates(1, { torn: Infinity }).length).toBe(2);
  });

  it("applies size changes in order with the writes that reached the disk", () => {
    const f = new FaultFile(bytes(4096, 7));
    f.flush();
    f.truncate(1024); // op 1
    f.write(bytes(512, 5), 2048); // op 2: extends the file again
    const m = f.materialize({ at: 3, applied: [2] }).contents();
    expect(m.length).toBe(2560);
    expect(m[1000]).toBe(7);
    expect(m[1500]).toBe(0); // cut by the truncate, then grown by the write
    expect(m[2048]).toBe(5);
    expect(f.materialize({ at: 3, applied: [] }).contents().length).toBe(1024);
  });

  it("materializes the same state whatever it built before", () => {
    const f = new FaultFile(bytes(2048, 0));
    const r = rng(3);
    for (let i = 0; i < 40; i++) {
      if (r() < 0.3) f.flush();
      else f.write(bytes(512, i + 1), Math.floor(r() * 4) * 512);
    }
    const points = f.writePoints();
    const forward = points.map((at) => f.materialize({ at, applied: f.unflushedWrites(at) }).contents());
    const backward = [...points].reverse().map((at) => f.materialize({ at, applied: f.unflushedWrites(at) }).contents()).reverse();
    expect(backward).toEqual(forward);
    expect(forward[forward.length - 1]).toEqual(f.contents());
  });

  it("fails writes on demand", () => {
    const f = new FaultFile();
    f.failAfter = 1;
    f.write(bytes(1, 1), 0);
    expect(() => f.write(bytes(1, 1), 1)).toThrow(/no space left/);
  });
});
