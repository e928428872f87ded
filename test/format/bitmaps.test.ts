/**
 * The bitmaps extension, directory and table codecs: round trips (property), every validation rule with a
 * clean ImageFormatError, and mutated directories of real images (made by qemu-img) that must open or be
 * refused with a clear error — never another kind of exception, never a hang.
 */
import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  BITMAP_AUTO,
  BITMAP_IN_USE,
  type BitmapDirectoryEntry,
  bitmapTableEntries,
  parseBitmapDirectory,
  parseBitmapsExtension,
  parseBitmapTable,
  serializeBitmapDirectory,
  serializeBitmapsExtension,
  serializeBitmapTable,
} from "../../src/format/bitmaps.js";
import { ImageFormatError, RequestError, UnsupportedFeatureError } from "../../src/format/errors.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const CS = 65536;
const DISK = 1 << 30;

function entry(over: Partial<BitmapDirectoryEntry> = {}): BitmapDirectoryEntry {
  return { tableOffset: 5 * CS, tableSize: 1, flags: BITMAP_AUTO, type: 1, granularityBits: 16, name: "b0", extraData: new Uint8Array(0), ...over };
}

const arbEntry = fc
  .record({
    tableCluster: fc.integer({ min: 1, max: 2 ** 30 }),
    inUse: fc.boolean(),
    auto: fc.boolean(),
    granularityBits: fc.integer({ min: 9, max: 31 }),
    name: fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\0") && new TextEncoder().encode(s).length <= 1023),
    extra: fc.uint8Array({ maxLength: 20 }),
    inUseSize: fc.integer({ min: 1, max: 4096 }),
  })
  .map((r): BitmapDirectoryEntry => ({
    tableOffset: r.tableCluster * CS,
    // A consistent bitmap's table covers the disk exactly; an in-use one may have any size.
    tableSize: r.inUse ? r.inUseSize : bitmapTableEntries(DISK, 2 ** r.granularityBits, CS),
    flags: (r.inUse ? BITMAP_IN_USE : 0) | (r.auto ? BITMAP_AUTO : 0),
    type: 1,
    granularityBits: r.granularityBits,
    name: r.name,
    extraData: r.extra,
  }));

describe("bitmap directory codec", () => {
  it("round-trips any directory, each entry padded to 8 bytes", () => {
    fc.assert(
      fc.property(fc.uniqueArray(arbEntry, { minLength: 1, maxLength: 12, selector: (e) => e.name }), (entries) => {
        const buf = serializeBitmapDirectory(entries);
        expect(buf.length % 8).toBe(0);
        expect(parseBitmapDirectory(buf, entries.length, { clusterSize: CS, diskSize: DISK })).toEqual(entries);
      }),
      { seed: 23, numRuns: 300 },
    );
  });

  it("round-trips the header extension and bitmap tables", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 2 ** 30 }), (count, cluster) => {
        const ext = { count, directorySize: count * 32, directoryOffset: cluster * CS };
        expect(parseBitmapsExtension(serializeBitmapsExtension(ext), CS)).toEqual(ext);
      }),
      { seed: 5, numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.integer({ min: 1, max: 2 ** 30 }).map((c) => ({ offset: c * CS, allOnes: false })), fc.boolean().map((allOnes) => ({ offset: 0, allOnes })))), (table) => {
        expect(parseBitmapTable(serializeBitmapTable(table), CS)).toEqual(table);
      }),
      { seed: 7, numRuns: 200 },
    );
  });

  const geometry = { clusterSize: CS, diskSize: DISK };
  const bad = (entries: BitmapDirectoryEntry[], patch: (b: Uint8Array) => Uint8Array | void, re: RegExp, count = entries.length) => {
    let buf = serializeBitmapDirectory(entries);
    buf = patch(buf) ?? buf;
    let err: unknown;
    try {
      parseBitmapDirectory(buf, count, geometry);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ImageFormatError);
    expect((err as Error).message).toMatch(re);
  };
  const set8 = (at: number, v: number) => (b: Uint8Array) => void (b[at] = v);

  it("refuses every malformed field with a message naming it", () => {
    const ok = [entry()];
    bad(ok, set8(16, 2), /unknown type 2/);
    bad(ok, set8(17, 8), /granularity 2\^8/);
    bad(ok, set8(17, 32), /granularity 2\^32/);
    bad(ok, set8(15, 0x0a), /reserved flags/);
    bad([entry({ tableOffset: CS + 512 })], () => {}, /not a cluster-aligned offset/);
    bad([entry({ tableOffset: 0 })], () => {}, /not a cluster-aligned offset/);
    bad([entry({ tableSize: 0 })], () => {}, /table size 0/);
    bad([entry({ tableSize: 3 })], () => {}, /bitmap table has 3 entries, the disk needs 1/);
    bad([entry({ name: "a" })], set8(25, 1), /padding is not zero/);
    bad([entry(), entry({ name: "b0" })], () => {}, /two bitmaps named 'b0'/);
    bad(ok, (b) => b.subarray(0, 20), /runs past the end/);
    bad(ok, (b) => b.subarray(0, 24), /runs past the end/);
    bad(ok, set8(19, 0), /empty name/);
    bad(ok, () => {}, /holds 1 bitmaps, the header extension says 2/, 2);
    bad([entry(), entry({ name: "c" })], () => {}, /more bitmaps than the 1/, 1);
    bad(ok, (b) => {
      b[24] = 0xff;
      b[25] = 0xfe;
    }, /not valid UTF-8/);
    bad([entry({ flags: BITMAP_IN_USE, tableSize: 0x8000001 })], () => {}, /table size .* out of range/);
    bad([entry({ flags: BITMAP_IN_USE, tableSize: 0x4000 })], () => {}, /too large/);
    // An in-use bitmap may have any table size (it may predate a resize).
    expect(parseBitmapDirectory(serializeBitmapDirectory([entry({ flags: BITMAP_IN_USE, tableSize: 7 })]), 1, geometry)[0]!.tableSize).toBe(7);
  });

  it("refuses a malformed extension or table entry", () => {
    const ext = serializeBitmapsExtension({ count: 1, directorySize: 32, directoryOffset: 4 * CS });
    const expectBad = (f: () => unknown, re: RegExp) => expect(f).toThrow(re);
    expectBad(() => parseBitmapsExtension(ext.subarray(0, 16), CS), /16 bytes of data/);
    const e1 = ext.slice();
    e1[7] = 1;
    expectBad(() => parseBitmapsExtension(e1, CS), /reserved field/);
    expectBad(() => parseBitmapsExtension(serializeBitmapsExtension({ count: 0, directorySize: 32, directoryOffset: CS }), CS), /zero bitmaps/);
    expectBad(() => parseBitmapsExtension(serializeBitmapsExtension({ count: 1, directorySize: 32, directoryOffset: CS + 8 }), CS), /directory offset/);
    expectBad(() => parseBitmapsExtension(serializeBitmapsExtension({ count: 1, directorySize: 1 << 30, directoryOffset: CS }), CS), /exceeds the maximum/);
    expectBad(() => parseBitmapsExtension(serializeBitmapsExtension({ count: 2, directorySize: 32, directoryOffset: CS }), CS), /cannot hold 2 bitmaps/);
    const e2 = ext.slice();
    e2[0] = 0xff;
    expectBad(() => parseBitmapsExtension(e2, CS), /more than the 65535/);
    const table = (v: bigint) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, v);
      return b;
    };
    expectBad(() => parseBitmapTable(table(1n << 60n), CS), /reserved bits/);
    expectBad(() => parseBitmapTable(table(2n), CS), /reserved bits/);
    expectBad(() => parseBitmapTable(table(BigInt(CS) | 1n), CS), /both a cluster and the all-ones flag/);
    expectBad(() => parseBitmapTable(table(512n), CS), /not cluster aligned/);
  });
});

// ------------------------------------------------------------------------------------ mutated real images

const dir = tempDir("bitmap-fuzz");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** An image made by QEMU with three bitmaps (one disabled) and dirty data; its bytes. */
function seedImage(): Uint8Array {
  const f = path.join(dir, "seed.qcow2");
  qemuImg(["create", "-q", "-f", "qcow2", f, "256M"]);
  qemuImg(["bitmap", "--add", f, "b0"]);
  qemuImg(["bitmap", "--add", "--disable", "-g", "4k", f, "second"]);
  qemuIo(f, ["write -P 1 0 1M", "write -P 2 100M 64k"]);
  qemuImg(["bitmap", "--add", f, "third"]);
  return new Uint8Array(fs.readFileSync(f));
}

const ALLOWED = [ImageFormatError, UnsupportedFeatureError, RequestError];

/**
 * Opens (read-only, for check, writable), lists, reads extents, checks and closes; any error must be a clean
 * one. Returns whether the read-only open was refused.
 */
function exercise(bytes: Uint8Array): boolean {
  let refused = false;
  const attempt = (f: () => void) => {
    try {
      f();
    } catch (e) {
      if (!ALLOWED.some((k) => e instanceof k)) throw e;
      return false;
    }
    return true;
  };
  refused = !attempt(() => {
    const img = Qcow2Image.open(new MemoryFile(bytes.slice()), { readOnly: true });
    for (const b of img.bitmapList()) attempt(() => img.bitmapExtents(b.name, 0, img.size));
    img.info();
    img.close();
  });
  attempt(() => {
    const img = Qcow2Image.open(new MemoryFile(bytes.slice()), { readOnly: true, forCheck: true });
    img.check();
    img.close();
  });
  attempt(() => {
    const img = Qcow2Image.open(new MemoryFile(bytes.slice()), {});
    attempt(() => img.write(4096, new Uint8Array(512).fill(7)));
    attempt(() => img.bitmapAdd("fresh"));
    img.close();
  });
  return refused;
}

describe("mutated bitmap structures", () => {
  it("open, check and write either work or fail with a clean error", () => {
    const seed = seedImage();
    const v = new DataView(seed.buffer, seed.byteOffset);
    // Where the structures are: the extension in the header, the directory, each table.
    let extAt = -1;
    for (let p = 112; p + 8 < 4096; ) {
      const type = v.getUint32(p);
      const len = v.getUint32(p + 4);
      if (type === 0x23852875) {
        extAt = p + 8;
        break;
      }
      if (type === 0) break;
      p += 8 + Math.ceil(len / 8) * 8;
    }
    expect(extAt).toBeGreaterThan(0);
    const dirOffset = Number(v.getBigUint64(extAt + 16));
    const dirSize = Number(v.getBigUint64(extAt + 8));
    const tables: number[] = [];
    let last = 0;
    for (let p = dirOffset; p < dirOffset + dirSize; ) {
      tables.push(Number(v.getBigUint64(p)));
      last = p;
      p += Math.ceil((24 + v.getUint32(p + 20) + v.getUint16(p + 18)) / 8) * 8;
    }
    // The last one in-use, as a writer that died leaves it.
    v.setUint32(last + 12, v.getUint32(last + 12) | BITMAP_IN_USE);
    let refused = 0;
    let opened = 0;
    const regions: [number, number][] = [[extAt, 24], [dirOffset, dirSize], ...tables.map((t): [number, number] => [t, 64]), [88, 8]];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: regions.length - 1 }),
        fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }), bit: fc.boolean() }), { minLength: 1, maxLength: 4 }),
        (region, edits) => {
          const bytes = seed.slice();
          const [start, len] = regions[region]!;
          for (const e of edits) {
            const at = start + (e.at % len);
            bytes[at] = e.bit ? bytes[at]! ^ (1 << (e.value & 7)) : e.value;
          }
          if (exercise(bytes)) refused++;
          else opened++;
        },
      ),
      { seed: 99, numRuns: 250 },
    );
    // Both outcomes occur: the mutations reach the validation, and harmless ones (a name byte) still open.
    expect(refused).toBeGreaterThan(20);
    expect(opened).toBeGreaterThan(20);
  }, 120_000);
});
