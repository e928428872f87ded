import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { parseHeader, serializeHeader, type Qcow2Header } from "../../src/format/header.js";
import { QEMU_FEATURE_NAMES } from "../../src/format/features.js";

function header(over: Partial<Qcow2Header> = {}): Qcow2Header {
  return {
    version: 3, backingFileOffset: 0, backingFileSize: 0, clusterBits: 16, size: 1 << 30, cryptMethod: 0, l1Size: 2,
    l1TableOffset: 3 << 16, refcountTableOffset: 1 << 16, refcountTableClusters: 1, nbSnapshots: 0, snapshotsOffset: 0,
    incompatibleFeatures: 0n, compatibleFeatures: 0n, autoclearFeatures: 0n, refcountOrder: 4, headerLength: 112,
    compressionType: 0, unknownTail: new Uint8Array(0), extensions: [], featureNames: [...QEMU_FEATURE_NAMES], ...over,
  };
}

describe("header codec", () => {
  it("round-trips v2 and v3 headers with backing files and unknown extensions", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(2, 3),
        fc.integer({ min: 12, max: 21 }),
        fc.nat({ max: 2 ** 50 }),
        fc.option(fc.stringMatching(/^[a-z0-9./_-]{1,100}$/), { nil: undefined }),
        fc.array(fc.record({ type: fc.integer({ min: 0x10000, max: 0x7fffffff }), data: fc.uint8Array({ maxLength: 40 }) }), { maxLength: 3 }),
        (version, clusterBits, size, backingFile, exts) => {
          const uniq = exts.filter((e, i) => exts.findIndex((x) => x.type === e.type) === i);
          const h = header({ version: version as 2 | 3, clusterBits, size, backingFile, backingFormat: backingFile ? "qcow2" : undefined, extensions: uniq, headerLength: version === 3 ? 112 : 72 });
          const buf = serializeHeader(h, 2 ** clusterBits);
          const back = parseHeader(buf, buf.length);
          expect(back.version).toBe(version);
          expect(back.size).toBe(size);
          expect(back.backingFile).toBe(backingFile);
          expect(back.backingFormat).toBe(backingFile ? "qcow2" : undefined);
          expect(back.extensions.map((e) => [e.type, [...e.data]])).toEqual(uniq.map((e) => [e.type, [...e.data]]));
        },
      ),
      { seed: 3, numRuns: 150 },
    );
  });

  it("refuses unknown incompatible features by name", () => {
    const buf = serializeHeader(header({ incompatibleFeatures: 1n << 9n }), 65536);
    expect(() => parseHeader(buf, buf.length)).toThrow(/Unknown incompatible feature: bit 9/);
  });

  it("names what is wrong with a malformed header", () => {
    const good = serializeHeader(header(), 65536);
    const bad = good.slice();
    bad[0] = 0;
    expect(() => parseHeader(bad, bad.length)).toThrow(/bad magic/);
    const cb = good.slice();
    new DataView(cb.buffer).setUint32(20, 30);
    expect(() => parseHeader(cb, cb.length)).toThrow(/cluster size/);
    const ext = good.slice();
    new DataView(ext.buffer).setUint32(112, 0x1234);
    new DataView(ext.buffer).setUint32(116, 0x7fffffff);
    expect(() => parseHeader(ext, ext.length)).toThrow(/header extension 0x1234 is too large/);
    expect(() => parseHeader(good.subarray(0, 40), 40)).toThrow(/too short/);
  });
});
