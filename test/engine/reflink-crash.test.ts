/**
 * Clones as crash points: the fault file (io/fault-file.ts) with clones on, under the crash harness, for
 * every scheme — each clone a crash point, lost, reordered with the unflushed writes or torn at its blocks —
 * and the fault file's own model of a clone. The subcluster clones of extended L2 run under the harness's
 * extended geometry; the clones from a backing file (raw and qcow2) under a workload of their own below,
 * which the harness (one image, no backing file) cannot run.
 */
import { describe, expect, it } from "vitest";
import { formatCrashReport, geometryFor, runCrashTests, runCrashWorkload, seededRandom } from "../../src/harness/crash.js";
import { FaultFile, SECTOR } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { RawDisk } from "../../src/open/raw-disk.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { SyncDisk } from "../../src/disk/sync-disk.js";
import type { CacheMode } from "../../src/engine/types.js";
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

  it("a clone from another file: the source's bytes at the clone, a crash point; refused when the files are on two file systems", () => {
    const source = new MemoryFile(new Uint8Array(4096).fill(7), { name: "backing" });
    const f = new FaultFile(new Uint8Array(8192));
    expect(f.cloneFrom(source, 0, 4096, 1024)).toBe(false); // clones off by default
    f.cloneBlockSize = 512;
    expect(() => f.cloneFrom(source, 100, 4096, 512)).toThrow(/aligned/);
    expect(f.cloneFrom(source, 1024, 4096, 2048, "cow-write")).toBe(true);
    source.write(new Uint8Array(4096), 0);
    expect(f.contents().subarray(4096, 6144).every((b) => b === 7)).toBe(true);
    const states = f.crashStates(f.log.length, { torn: 1 });
    expect(states.map((s) => s.applied.length)).toEqual([0, 1, 1]);
    expect(f.materialize(states[0]).contents().subarray(4096, 6144).every((b) => b === 0)).toBe(true);
    expect(f.describe(states[1])).toMatch(/clone from backing 0x400/);
    f.crossFileClones = false;
    expect(f.cloneFrom(source, 0, 6144, 512)).toBe(false);
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

describe("crash harness with clones: extended L2 subclusters", () => {
  it("eager and log, both cache modes: every crash state at every write and clone recovers", () => {
    const w = runCrashWorkload("eager", "writeback", 13, 30, geometryFor(13, "16k-extl2"), "append", undefined, true);
    expect(w.fault.log.filter((op) => op.kind === "clone").length).toBeGreaterThan(0);
    const report = runCrashTests({ reflink: true, geometry: "16k-extl2", schemes: ["eager", "log"], seed: 13, seeds: 1, steps: 30, qemuSample: 1, checkSample: 1 });
    expect(report.states).toBeGreaterThan(0);
    expect(report.failures, formatCrashReport(report)).toBe(0);
  }, 600_000);
});

describe("clones from a backing file as crash points", () => {
  const CS = 4096;
  const SIZE = 24 * CS;
  /** The backing disk: every byte a function of its offset. */
  const backingBytes = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7 + (i >> 9)) & 0xff);

  function backingOf(format: "raw" | "qcow2"): () => SyncDisk {
    if (format === "raw") return () => new RawDisk(new MemoryFile(backingBytes, { name: "backing.raw", readOnly: true }));
    const mem = new MemoryFile(undefined, { name: "backing.qcow2" });
    Qcow2Image.create(mem, { size: SIZE, clusterSize: CS });
    const b = Qcow2Image.open(mem);
    b.write(0, backingBytes);
    b.close();
    const bytes = mem.contents();
    return () => Qcow2Image.open(new MemoryFile(bytes, { name: "backing.qcow2", readOnly: true }), { readOnly: true });
  }

  it("a raw backing file that ends inside a block, and a qcow2 one with smaller clusters: cloned where whole blocks line up, the rest copied, every byte as the backing file's", () => {
    const odd = backingBytes.subarray(0, 5 * CS + 1000);
    const small = new MemoryFile(undefined, { name: "small.qcow2" });
    Qcow2Image.create(small, { size: SIZE, clusterSize: 1024 });
    const sb = Qcow2Image.open(small);
    // Every other 1 KiB cluster allocated, the rest read from nothing (zeroes).
    for (let o = 0; o < SIZE; o += 2048) sb.write(o, backingBytes.subarray(o, o + 1024));
    sb.close();
    const smallBytes = small.contents();
    const cases: { name: string; open: () => SyncDisk; bytes: Uint8Array; block: number }[] = [
      { name: "raw, 5 clusters and 1000 bytes", open: () => new RawDisk(new MemoryFile(odd, { name: "odd.raw", readOnly: true })), bytes: odd, block: 2048 },
      {
        name: "qcow2, 1 KiB clusters",
        block: 512,
        open: () => Qcow2Image.open(new MemoryFile(smallBytes, { name: "small.qcow2", readOnly: true }), { readOnly: true }),
        bytes: Uint8Array.from({ length: SIZE }, (_, i) => (i % 2048 < 1024 ? backingBytes[i] : 0)),
      },
    ];
    for (const c of cases) {
      const base = new MemoryFile();
      Qcow2Image.create(base, { size: SIZE, clusterSize: CS, backingFile: "b", backingFormat: c.name.startsWith("raw") ? "raw" : "qcow2" });
      const fault = new FaultFile(base.contents(), c.name);
      fault.cloneBlockSize = c.block;
      const img = Qcow2Image.open(fault, { openBacking: c.open });
      const model = new Uint8Array(SIZE);
      model.set(c.bytes.subarray(0, SIZE));
      for (const [offset, length] of [[100, 200], [CS + 2048, 512], [4 * CS + 3000, 2000], [5 * CS + 10, 3000], [9 * CS + 1024, 1024]]) {
        const data = new Uint8Array(length).fill(0xee);
        img.write(offset, data);
        model.set(data, offset);
      }
      expect(Buffer.from(img.read(0, SIZE)).equals(Buffer.from(model)), c.name).toBe(true);
      img.close();
      expect(fault.log.filter((op) => op.kind === "clone").length, c.name).toBeGreaterThan(0);
      const again = Qcow2Image.open(new MemoryFile(fault.contents()), { openBacking: c.open });
      expect(Buffer.from(again.read(0, SIZE)).equals(Buffer.from(model)), `${c.name}, reopened`).toBe(true);
      expect(again.check().corruptions).toBe(0);
      again.close();
    }
  });

  for (const format of ["raw", "qcow2"] as const) {
    it(`${format}: eager and log, both cache modes, every crash state at every write and clone reads as before or after each write in flight, and checks clean`, () => {
      const openBacking = backingOf(format);
      let states = 0;
      for (const scheme of ["eager", "log"]) {
        for (const cache of ["writeback", "writethrough"] as CacheMode[]) {
          const base = new MemoryFile();
          Qcow2Image.create(base, { size: SIZE, clusterSize: CS, backingFile: `backing.${format}`, backingFormat: format });
          const fault = new FaultFile(base.contents(), `${format}-${scheme}-${cache}`);
          fault.cloneBlockSize = SECTOR;
          const open = (file: FaultFile | MemoryFile) => Qcow2Image.open(file, { scheme, cache, openBacking });
          // The model: what the disk reads as after each flush, and each write with where its ops begin.
          const durable: { at: number; bytes: Uint8Array }[] = [];
          const writes: { at: number; offset: number; data: Uint8Array }[] = [];
          const model = backingBytes.slice();
          const img = open(fault);
          durable.push({ at: fault.log.length, bytes: model.slice() });
          const rnd = seededRandom(format === "raw" ? 3 : 4);
          for (let step = 0; step < 16; step++) {
            if (step % 4 === 3) {
              img.flush();
              durable.push({ at: fault.log.length, bytes: model.slice() });
              continue;
            }
            // Part of a cluster (sector-aligned or not), now and then across two.
            const offset = Math.floor(rnd() * (SIZE - 2 * CS));
            const data = new Uint8Array(1 + Math.floor(rnd() * (step % 2 ? CS : 2000))).fill(0x40 + step);
            writes.push({ at: fault.log.length, offset, data });
            img.write(offset, data);
            model.set(data, offset);
            if (cache === "writethrough") durable.push({ at: fault.log.length, bytes: model.slice() });
          }
          img.close();
          expect(fault.log.some((op) => op.kind === "clone" && op.from !== undefined), `${scheme} ${cache}: clones from the backing file`).toBe(true);
          for (const at of fault.writePoints()) {
            const flushed = fault.lastFlushBefore(at);
            const d = [...durable].reverse().find((x) => x.at <= flushed)!;
            const inFlight = writes.filter((w) => w.at >= d.at && w.at < at);
            for (const state of fault.crashStates(at, { torn: 2, subsets: 2 })) {
              states++;
              const what = `${format} ${scheme} ${cache}: ${fault.describe(state)}`;
              const crashed = open(fault.materialize(state));
              const read = crashed.read(0, SIZE);
              for (let i = 0; i < SIZE; i++) {
                if (read[i] === d.bytes[i] || inFlight.some((w) => i >= w.offset && i < w.offset + w.data.length && w.data[i - w.offset] === read[i])) continue;
                expect.fail(`${what}: byte ${i} reads ${read[i]}, neither ${d.bytes[i]} nor a write in flight`);
              }
              const check = crashed.check();
              expect(check.corruptions + check.checkErrors, `${what}: ${check.messages.join("; ")}`).toBe(0);
              crashed.close();
            }
          }
        }
      }
      expect(states).toBeGreaterThan(0);
    }, 300_000);
  }
});
