import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { parseSnapshotTable, serializeSnapshotTable, snapshotTableSize, type SnapshotEntry } from "../../src/format/snapshot-table.js";

const entry = fc.record({
  l1TableOffset: fc.nat({ max: 2 ** 40 }).map((n) => n * 512),
  l1Size: fc.nat({ max: 1 << 20 }),
  id: fc.string({ maxLength: 10 }),
  name: fc.string({ maxLength: 40 }),
  dateSec: fc.nat({ max: 0xffffffff }),
  dateNsec: fc.nat({ max: 999_999_999 }),
  vmClockNsec: fc.nat({ max: 2 ** 50 }),
  vmStateSize: fc.nat({ max: 2 ** 40 }),
  diskSize: fc.nat({ max: 2 ** 50 }),
  icount: fc.option(fc.nat({ max: 2 ** 50 }), { nil: undefined }),
  unknownExtra: fc.uint8Array({ maxLength: 24 }).map((a) => a.subarray(0, a.length - (a.length % 8))),
}) as fc.Arbitrary<SnapshotEntry>;

describe("snapshot table codec", () => {
  it("round-trips any table, each entry padded to 8 bytes", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), (entries) => {
        const buf = serializeSnapshotTable(entries);
        expect(buf.length).toBe(snapshotTableSize(entries));
        expect(buf.length % 8).toBe(0);
        expect(parseSnapshotTable(buf, entries.length)).toEqual(entries);
      }),
      { seed: 11, numRuns: 200 },
    );
  });

  it("names a truncated table instead of reading past it", () => {
    const buf = serializeSnapshotTable([{ l1TableOffset: 512, l1Size: 1, id: "1", name: "a", dateSec: 0, dateNsec: 0, vmClockNsec: 0, vmStateSize: 0, diskSize: 0, icount: undefined, unknownExtra: new Uint8Array(0) }]);
    expect(() => parseSnapshotTable(buf.subarray(0, 50), 1)).toThrow(/snapshot table entry 0 runs past the end/);
    expect(() => parseSnapshotTable(buf, 2)).toThrow(/entry 1/);
  });
});
