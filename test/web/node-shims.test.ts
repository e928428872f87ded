/**
 * The browser stand-ins for node:zlib (src/web/shims) against Node's zlib: CRC-32 with and without a running
 * value, and raw inflate of what zlib's deflateRaw produces at every level and strategy, with trailing
 * padding (as in a qcow2 compressed cluster), truncated streams, output past the limit, and corrupt input.
 */
import * as zlib from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32, inflateRawSync } from "../../src/web/shims/node-zlib.js";

/** Bytes that compress somewhat: runs and repeats mixed with noise. */
const compressible = fc
  .array(
    fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 300 }),
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 2000 })).map(([b, n]) => new Uint8Array(n).fill(b)),
      fc.constantFrom(new TextEncoder().encode("refcow qcow2 cluster ".repeat(40))),
    ),
    { maxLength: 12 },
  )
  .map((parts) => {
    const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  });

describe("browser zlib stand-ins", () => {
  it("crc32 equals zlib.crc32, also continued from a running value", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.uint8Array({ maxLength: 200 }), (a, b) => {
        expect(crc32(a)).toBe(zlib.crc32(a));
        expect(crc32(b, crc32(a))).toBe(zlib.crc32(b, zlib.crc32(a)));
      }),
    );
  });

  it("inflates what zlib deflates, at every level and strategy, ignoring trailing padding", () => {
    const strategies = [zlib.constants.Z_DEFAULT_STRATEGY, zlib.constants.Z_FILTERED, zlib.constants.Z_HUFFMAN_ONLY, zlib.constants.Z_RLE, zlib.constants.Z_FIXED];
    fc.assert(
      fc.property(compressible, fc.integer({ min: 0, max: 9 }), fc.constantFrom(...strategies), fc.integer({ min: 0, max: 511 }), (data, level, strategy, pad) => {
        const z = zlib.deflateRawSync(data, { level, strategy });
        const padded = new Uint8Array(z.length + pad);
        padded.set(z);
        expect(Buffer.from(inflateRawSync(padded, { maxOutputLength: data.length + 1 }))).toEqual(Buffer.from(data));
      }),
      { numRuns: 300 },
    );
  });

  it("returns a prefix of the data from a truncated stream instead of throwing, as zlib's sync flush does", () => {
    const data = new TextEncoder().encode("abcdefgh".repeat(40000));
    // Stored blocks (64 KiB each): a cut keeps a clean prefix; a block cut short is left out, where zlib
    // gives its first part too (either way the caller sees fewer bytes than it expected).
    const z = zlib.deflateRawSync(data, { level: 0 });
    const part = inflateRawSync(z.subarray(0, Math.floor(z.length / 2)));
    const node = zlib.inflateRawSync(z.subarray(0, Math.floor(z.length / 2)), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    expect(part.length).toBeGreaterThan(0);
    expect(part.length).toBeLessThan(data.length);
    expect(Buffer.from(part)).toEqual(Buffer.from(data.subarray(0, part.length)));
    expect(part.length).toBeLessThanOrEqual(node.length);
    expect(node.length - part.length).toBeLessThan(65536);
  });

  it("refuses output beyond the limit with a RangeError, as zlib does, and corrupt streams with an error", () => {
    const data = new Uint8Array(65536).fill(7);
    const z = zlib.deflateRawSync(data);
    expect(() => zlib.inflateRawSync(z, { maxOutputLength: 65535 })).toThrow(RangeError);
    expect(() => inflateRawSync(z, { maxOutputLength: 65535 })).toThrow(RangeError);
    expect(inflateRawSync(z, { maxOutputLength: 65536 }).length).toBe(65536);
    expect(() => zlib.inflateRawSync(new Uint8Array([0x07, 0, 0]))).toThrow();
    expect(() => inflateRawSync(new Uint8Array([0x07, 0, 0]))).toThrow(/invalid block type/); // block type 3
  });
});
