import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { RefcountCodec } from "../../src/format/refcount-block.js";

describe("refcount block codec", () => {
  for (const order of [0, 1, 2, 3, 4, 5, 6]) {
    it(`round-trips ${1 << order}-bit entries without touching neighbours`, () => {
      const codec = new RefcountCodec(order, 512);
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(codec.entriesPerBlock - 1), fc.nat()), { maxLength: 200 }), (ops) => {
          const block = new Uint8Array(512);
          const model = new Map<number, number>();
          for (const [i, raw] of ops) {
            const v = raw % (Math.min(codec.max, 2 ** 40) + 1);
            codec.set(block, i, v);
            model.set(i, v);
          }
          const got: number[] = [];
          const want: number[] = [];
          for (let i = 0; i < codec.entriesPerBlock; i++) {
            got.push(codec.get(block, i));
            want.push(model.get(i) ?? 0);
          }
          expect(got).toEqual(want);
        }),
        { seed: 7, numRuns: 100 },
      );
    });
  }

  it("packs sub-byte widths least-significant bits first, wider ones big-endian", () => {
    const b1 = new Uint8Array(512);
    new RefcountCodec(0, 512).set(b1, 1, 1);
    expect(b1[0]).toBe(0b10);
    const b16 = new Uint8Array(512);
    new RefcountCodec(4, 512).set(b16, 1, 0x1234);
    expect([b16[2], b16[3]]).toEqual([0x12, 0x34]);
  });

  it("refuses values the width cannot hold", () => {
    expect(() => new RefcountCodec(1, 512).set(new Uint8Array(512), 0, 4)).toThrow(/does not fit/);
  });
});
