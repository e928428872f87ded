/** Staged writes: visible to reads, issued in order (flushes included) by commit, dropped otherwise. */
import { describe, expect, it } from "vitest";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { StagedFile } from "../../src/io/staged-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);

describe("StagedFile", () => {
  it("reads see staged writes across pages; the base is untouched until commit", () => {
    const base = new MemoryFile(bytes(10000, 1));
    const s = new StagedFile(base);
    s.write(bytes(5000, 2), 3000);
    s.write(bytes(10, 3), 12000); // past the end: a hole, then the bytes
    expect(s.size()).toBe(12010);
    const all = new Uint8Array(12010);
    s.read(all, 0);
    expect([all[2999], all[3000], all[7999], all[8000], all[11000], all[12005]]).toEqual([1, 2, 2, 1, 0, 3]);
    expect(base.contents()).toEqual(bytes(10000, 1));
    s.commit();
    const got = base.contents();
    expect(got.length).toBe(12010);
    expect([got[3000], got[8000], got[12005]]).toEqual([2, 1, 3]);
  });

  it("commit issues writes and flushes in their order", () => {
    const fault = new FaultFile(bytes(4096, 0));
    const s = new StagedFile(fault);
    s.write(bytes(512, 1), 0);
    s.flush();
    s.write(bytes(512, 2), 512);
    s.truncate(1024);
    expect(fault.log.length).toBe(0);
    s.commit();
    expect(fault.log.map((o) => o.kind)).toEqual(["write", "flush", "write", "truncate"]);
    expect(fault.size()).toBe(1024);
  });

  it("a truncate hides the base's bytes past it", () => {
    const s = new StagedFile(new MemoryFile(bytes(8192, 7)));
    s.truncate(100);
    s.write(bytes(1, 9), 5000);
    const b = new Uint8Array(5001);
    s.read(b, 0);
    expect([b[99], b[100], b[4096], b[5000]]).toEqual([7, 0, 0, 9]);
  });
});

describe("opening an image", () => {
  it("writes nothing when the open fails half-way (a dirty image whose repair finds a broken L2 table)", () => {
    const mem = new MemoryFile();
    Qcow2Image.create(mem, { size: 1 << 20, clusterSize: 4096 });
    const img = Qcow2Image.open(mem, { scheme: "lazy" });
    img.write(0, bytes(8192, 5));
    img.flush(); // dirty bit set, refcounts stale: a killed writer's image
    const crashed = mem.contents();
    const v = new DataView(crashed.buffer);
    const l2 = Number(v.getBigUint64(Number(v.getBigUint64(40))) & 0xffffffffffffn);
    v.setUint32(l2 + 4, v.getUint32(l2 + 4) | 2); // reserved bits in an L2 entry
    const file = new MemoryFile(crashed);
    expect(() => Qcow2Image.open(file, { scheme: "eager" })).toThrow(/reserved bits|could not repair dirty image/);
    expect(file.contents()).toEqual(crashed);
  });
});
