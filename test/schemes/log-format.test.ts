/** The data log's codec: records round-trip, and a record torn at any sector, or any corrupted byte, ends the scan. */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import {
  decodeLogHeader,
  encodeLogExtension,
  encodeLogHeader,
  encodeRecord,
  findLog,
  LOG_DATA_START,
  recordBytes,
  scanLog,
  SECTOR,
  validateLogLocation,
} from "../../src/schemes/log-format.js";
import { ImageFormatError } from "../../src/engine/errors.js";
import type { Qcow2Header } from "../../src/format/header.js";

const DISK = 1 << 30;
const AREA = 1 << 20;

function area(first: bigint, recs: { off: number; data: Uint8Array }[]): { buf: Uint8Array; ends: number[] } {
  const buf = new Uint8Array(AREA);
  buf.set(encodeLogHeader(first), 0);
  let pos = LOG_DATA_START;
  const ends: number[] = [];
  recs.forEach((r, i) => {
    const b = encodeRecord(first + BigInt(i), r.off, r.data);
    buf.set(b, pos);
    pos += b.length;
    ends.push(pos);
  });
  return { buf, ends };
}

const recordArb = fc.record({
  off: fc.integer({ min: 0, max: DISK - 70000 }),
  data: fc.uint8Array({ minLength: 1, maxLength: 9000 }),
});

describe("data log format", () => {
  it("round-trips the extension", () => {
    const ext = encodeLogExtension({ offset: 0x30000, clusters: 16 });
    const h = { extensions: [{ type: 0x5243444c, data: ext }] } as unknown as Qcow2Header;
    expect(findLog(h)).toEqual({ offset: 0x30000, clusters: 16 });
    expect(() => findLog({ extensions: [{ type: 0x5243444c, data: ext.subarray(0, 8) }] } as unknown as Qcow2Header)).toThrow(ImageFormatError);
    expect(() => validateLogLocation({ offset: 0x30001, clusters: 1 }, 65536)).toThrow(/offset/);
    expect(() => validateLogLocation({ offset: 0, clusters: 1 }, 65536)).toThrow(/offset/);
    expect(() => validateLogLocation({ offset: 65536, clusters: 0 }, 65536)).toThrow(/size/);
    expect(() => validateLogLocation({ offset: 65536, clusters: 1 << 20 }, 65536)).toThrow(/size/);
  });

  it("round-trips records in sequence", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 48n }), fc.array(recordArb, { maxLength: 20 }), (first, recs) => {
        const { buf } = area(first, recs);
        const s = scanLog(buf, 0x100000, DISK);
        expect(s.records.length).toBe(recs.length);
        s.records.forEach((r, i) => {
          expect(r.seq).toBe(first + BigInt(i));
          expect(r.guestOffset).toBe(recs[i]!.off);
          expect(r.data).toEqual(recs[i]!.data);
        });
        expect(s.nextSeq).toBe(first + BigInt(recs.length));
      }),
      { numRuns: 100 },
    );
  });

  it("stops at a record torn at any sector: the records before it survive, none after", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 48n }), fc.array(recordArb, { minLength: 1, maxLength: 6 }), fc.nat(), fc.nat(), (first, recs, which, sectorPick) => {
        const { buf, ends } = area(first, recs);
        const k = which % recs.length;
        const start = k === 0 ? LOG_DATA_START : ends[k - 1]!;
        const sectors = recordBytes(recs[k]!.data.length) / SECTOR;
        const torn = sectorPick % sectors;
        // The torn sector keeps what was there before: zeroes, or a stale earlier log's bytes.
        buf.fill(sectorPick % 2 ? 0 : 0x5a, start + torn * SECTOR, start + (torn + 1) * SECTOR);
        // A torn sector past the data (padding) changes nothing the checksums cover.
        const dataEnd = start + SECTOR + recs[k]!.data.length;
        const tornStart = start + torn * SECTOR;
        const original = encodeRecord(first + BigInt(k), recs[k]!.off, recs[k]!.data).subarray(torn * SECTOR, (torn + 1) * SECTOR);
        const unchanged = original.every((b, i) => b === buf[tornStart + i]) || (torn > 0 && tornStart >= dataEnd);
        const s = scanLog(buf, 0, DISK);
        if (unchanged) expect(s.records.length).toBeGreaterThan(k);
        else expect(s.records.length).toBe(k);
      }),
      { numRuns: 300 },
    );
  });

  it("rejects any single corrupted byte of a record's header or data", () => {
    fc.assert(
      fc.property(recordArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (r, at, x) => {
        const { buf } = area(7n, [r]);
        const covered = [...Array(28).keys(), ...Array.from({ length: r.data.length }, (_, i) => SECTOR + i)];
        const pos = LOG_DATA_START + covered[at % covered.length]!;
        buf[pos] ^= x;
        expect(scanLog(buf, 0, DISK).records.length).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it("ignores records of another log (another first sequence number) and refuses a bad area header", () => {
    const { buf } = area(100n, [{ off: 0, data: new Uint8Array(4096).fill(1) }]);
    buf.set(encodeLogHeader(5n), 0);
    expect(scanLog(buf, 0, DISK).records).toEqual([]);
    expect(decodeLogHeader(encodeLogHeader(5n))).toBe(5n);
    const bad = encodeLogHeader(5n);
    bad[9] ^= 1;
    expect(() => decodeLogHeader(bad)).toThrow(/checksum/);
    expect(() => scanLog(new Uint8Array(AREA), 0, DISK)).toThrow(/magic/);
  });

  it("reports a record aimed past the end of the disk as a corruption", () => {
    const { buf } = area(1n, [{ off: DISK - 100, data: new Uint8Array(512) }]);
    expect(() => scanLog(buf, 0, DISK)).toThrow(/past the end of the disk/);
  });
});
