/**
 * zeroRange through every BlockFile: the bytes read as zeroes afterwards; the fault file keeps it as a crash
 * point and lets it reach the disk or not, torn or whole; the staged file replays it at commit; the
 * accounting wrapper counts what was really written; and on a Node file the native addon zeroes without
 * writing (blocks counted by the file system) and finds the holes of a file made sparse by the kernel.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AccountingFile } from "../../src/io/accounting-file.js";
import type { BlockFile } from "../../src/io/block-file.js";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { nativeFileOps } from "../../src/io/native-fileops.js";
import { NodeFile } from "../../src/io/node-file.js";
import { StagedFile } from "../../src/io/staged-file.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-zero-range-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);
const read = (f: BlockFile, off: number, n: number) => {
  const b = new Uint8Array(n);
  f.read(b, off);
  return b;
};
const native = nativeFileOps() !== null;

/** A memory file that writes its zeroes, as OpfsFile and NodeFile without the addon do. */
class ZeroesByWriting extends MemoryFile {
  override readonly zeroesWithoutWriting = false;
  override zeroRange(offset: number, length: number): void {
    this.write(new Uint8Array(length), offset);
  }
}

describe("zeroRange", () => {
  it("clears a memory file's bytes and grows it past its end", () => {
    const f = new MemoryFile(bytes(8192, 7));
    f.zeroRange(1000, 2000);
    expect(read(f, 0, 8192).findIndex((b) => b === 0)).toBe(1000);
    expect(read(f, 1000, 2000).every((b) => b === 0)).toBe(true);
    expect(read(f, 3000, 5192).every((b) => b === 7)).toBe(true);
    f.zeroRange(8000, 4000);
    expect(f.size()).toBe(12000);
    expect(read(f, 8000, 4000).every((b) => b === 0)).toBe(true);
  });

  it("is a crash point of the fault file that may or may not reach the disk, or reach it torn", () => {
    const f = new FaultFile(bytes(4096, 9));
    f.flush(); // op 0
    f.zeroRange(0, 2048); // op 1
    f.write(bytes(512, 5), 512); // op 2
    expect(f.writePoints()).toEqual([2, 3]);
    expect(f.unflushedWrites(3)).toEqual([1, 2]);
    let n = 0;
    const states = f.crashStates(3, { torn: Infinity, subsets: 1, random: () => (n++ % 2 ? 0.2 : 0.7) });
    const seen = new Set(states.map((s) => {
      const m = f.materialize(s).contents();
      return [m[0], m[512], m[1536], m[2048]].join(",");
    }));
    // Nothing arrived; the zeroing only; the zeroing then the write; the write only (a subset); and the
    // zeroing torn after 1, 2 or 3 of its 4 sectors.
    expect(seen).toEqual(new Set(["9,9,9,9", "0,0,0,9", "0,5,0,9", "9,5,9,9", "0,9,9,9", "0,0,9,9"]));
    expect(f.describe({ at: 2, applied: [1] })).toMatch(/zeroing 2048B@0x0/);
  });

  it("fails with ENOSPC when the fault file is out of space", () => {
    const f = new FaultFile(bytes(4096, 1));
    f.failAfter = 0;
    expect(() => f.zeroRange(0, 512)).toThrow(/no space left/);
    expect(read(f, 0, 1)[0]).toBe(1);
  });

  it("is staged like a write and issued on the base at commit", () => {
    const base = new MemoryFile(bytes(8192, 3));
    const staged = new StagedFile(base);
    staged.zeroRange(4096, 8192);
    expect(read(staged, 4096, 8192).every((b) => b === 0)).toBe(true);
    expect(staged.size()).toBe(12288);
    expect(read(base, 4096, 1)[0]).toBe(3);
    staged.commit();
    expect(base.size()).toBe(12288);
    expect(read(base, 0, 12288).findIndex((b) => b === 0)).toBe(4096);
  });

  it("is counted by the accounting wrapper as a write of the bytes really written", () => {
    const mem = new AccountingFile(new MemoryFile(bytes(65536, 1)));
    mem.zeroRange(0, 65536, "guest-data");
    expect(mem.snapshot()["guest-data"]).toMatchObject({ writes: 1, writeBytes: 0 });
    const acc = new AccountingFile(new ZeroesByWriting(bytes(65536, 1)));
    acc.zeroRange(0, 65536, "guest-data");
    expect(acc.snapshot()["guest-data"]).toMatchObject({ writes: 1, writeBytes: 65536 });
  });

  it("grows a Node file past its end as a hole, without the addon too", () => {
    const p = path.join(dir, "grow.img");
    const f = NodeFile.open(p, { create: true });
    f.write(bytes(4096, 1), 0);
    f.zeroRange(4096, 16 << 20);
    f.flush();
    expect(f.size()).toBe(4096 + (16 << 20));
    // The file system allocated no blocks for the 16 MiB.
    expect(fs.statSync(p).blocks * 512).toBeLessThan(1 << 20);
    expect(read(f, 4096 + (8 << 20), 4096).every((b) => b === 0)).toBe(true);
    f.close();
  });

  // The addon is optional (refcow works without it); under CI, where it is built, a missing one fails.
  it("zeroes inside a Node file without writing, and finds the holes the kernel made", (ctx) => {
    if (!native && !process.env.CI) ctx.skip("the native file addon was not built on this machine (npm install printed why; it needs a C compiler, make and python3): refcow then writes zeroes instead of making holes, the path the other tests here cover");
    const p = path.join(dir, "inside.img");
    fs.writeFileSync(p, bytes(1 << 20, 0xaa));
    const f = NodeFile.open(p);
    expect(f.zeroesWithoutWriting).toBe(true);
    const blocks = fs.statSync(p).blocks;
    f.zeroRange(256 << 10, 512 << 10);
    f.flush();
    expect(read(f, (256 << 10) - 1, 2)).toEqual(new Uint8Array([0xaa, 0]));
    expect(read(f, 256 << 10, 512 << 10).every((b) => b === 0)).toBe(true);
    expect(read(f, 768 << 10, 1)[0]).toBe(0xaa);
    // ZERO_RANGE keeps the blocks (unwritten extents), PUNCH_HOLE frees them: never more than before.
    expect(fs.statSync(p).blocks).toBeLessThanOrEqual(blocks);
    f.close();

    // A file whose holes are known: truncate makes one of 1 MiB, a write puts 8 KiB of data at 256 KiB.
    const s = path.join(dir, "sparse.img");
    fs.writeFileSync(s, "");
    fs.truncateSync(s, 1 << 20);
    const fd = fs.openSync(s, "r+");
    fs.writeSync(fd, bytes(8192, 1), 0, 8192, 256 << 10);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const g = NodeFile.open(s, { readOnly: true });
    expect(g.extentAt(0, 1 << 20)).toEqual({ data: false, length: 256 << 10 });
    expect(g.extentAt(256 << 10, 1 << 20)).toEqual({ data: true, length: 8192 });
    expect(g.extentAt((256 << 10) + 4096, 100)).toEqual({ data: true, length: 100 });
    expect(g.extentAt((256 << 10) + 8192, 1 << 20)).toEqual({ data: false, length: 1 << 20 });
    expect(g.allocatedSize()).toBe(fs.statSync(s).blocks * 512);
    g.close();
  });
});

/** A directory on a writable tmpfs (/dev/shm, /run, /tmp or any other the machine mounts), or undefined. */
function tmpfsDir(): string | undefined {
  const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" "));
  const points = mounts.filter((m) => m[2] === "tmpfs" && (m[3] ?? "").split(",").includes("rw")).map((m) => m[1]!);
  for (const at of ["/dev/shm", "/run", "/tmp", ...points].filter((d, i, all) => points.includes(d) && all.indexOf(d) === i)) {
    try {
      return fs.mkdtempSync(path.join(at, "refcow-zero-range-"));
    } catch {
      // not writable by this user: try the next
    }
  }
  return undefined;
}
const tmpfs = native && process.platform === "linux" ? tmpfsDir() : undefined;

describe("zeroRange on tmpfs", () => {
  // Linux 6.x's tmpfs refuses FALLOC_FL_ZERO_RANGE (EOPNOTSUPP): the file then punches a hole instead.
  // Needs a writable tmpfs (Debian and Ubuntu machines have /dev/shm and /run) and the optional native addon.
  it("zeroes without writing where ZERO_RANGE is refused, by punching a hole", (ctx) => {
    if (!native && !process.env.CI) ctx.skip("the native file addon was not built on this machine (npm install printed why; it needs a C compiler, make and python3): refcow then writes zeroes instead of making holes, the path the other tests here cover");
    expect(tmpfs, "a writable tmpfs mount and the native addon").toBeDefined();
    const p = tmpfs!;
    try {
      const file = path.join(p, "f.img");
      fs.writeFileSync(file, bytes(1 << 20, 0x5c));
      const f = NodeFile.open(file);
      const blocks = fs.statSync(file).blocks;
      f.zeroRange(0, 512 << 10);
      expect(f.zeroesWithoutWriting).toBe(true);
      expect(read(f, 0, 512 << 10).every((b) => b === 0)).toBe(true);
      expect(read(f, 512 << 10, 1)[0]).toBe(0x5c);
      expect(f.size()).toBe(1 << 20);
      expect(fs.statSync(file).blocks).toBeLessThanOrEqual(blocks);
      // A punched hole frees the blocks and is a hole for SEEK_DATA.
      if (fs.statSync(file).blocks < blocks) expect(f.extentAt(0, 1 << 20)).toEqual({ data: false, length: 512 << 10 });
      f.close();
    } finally {
      fs.rmSync(p, { recursive: true, force: true });
    }
  });
});

describe("zeroRange in the crash harness", () => {
  it("is among the crash points of a first-fit workload, and every crash state around it recovers", async () => {
    const { geometryFor, runCrashTests, runCrashWorkload } = await import("../../src/harness/crash.js");
    // Seed 6: the 4 KiB-cluster geometry under first-fit, whose reused clusters are zeroed by zeroRange.
    const w = runCrashWorkload("eager", "writeback", 6, 60, geometryFor(6), "first-fit");
    const zeroings = w.fault.log.flatMap((op, i) => (op.kind === "zero" ? [i + 1] : []));
    expect(zeroings.length).toBeGreaterThan(0);
    const points = new Set(w.fault.writePoints());
    for (const at of zeroings) expect(points.has(at)).toBe(true);
    const report = runCrashTests({ schemes: ["eager"], caches: ["writeback"], seed: 6, seeds: 1, steps: 60, alloc: "first-fit", qemuSample: 0 });
    expect(report.failures, JSON.stringify(report.cells[0].reported[0])).toBe(0);
    expect(report.states).toBeGreaterThan(zeroings.length);
  }, 120_000);
});
