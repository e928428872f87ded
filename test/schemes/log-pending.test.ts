/** The pending-copy state of scheme `log`, against a plain byte array of the same cluster. */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { PendingState, performRuns, RangeMap } from "../../src/schemes/log-pending.js";

const CS = 8192;
const OLD = 0x10000;
const NEW = 0x40000;
const LOG = 0x80000;

/** A host file in memory: the old cluster holds 1..., the new cluster zeroes, the log area whatever was logged. */
function host(): Uint8Array {
  const h = new Uint8Array(0xc0000);
  for (let i = 0; i < CS; i++) h[OLD + i] = (i * 7 + 1) & 0xff;
  return h;
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

const writeArb = fc.record({
  at: fc.integer({ min: 0, max: CS - 1 }),
  len: fc.integer({ min: 1, max: CS }),
  fill: fc.integer({ min: 0, max: 255 }),
  logged: fc.boolean(),
});

describe("RangeMap", () => {
  it("covers what was set, with the later host offset winning, segments sorted, disjoint and joined", () => {
    fc.assert(
      fc.property(fc.array(fc.record({ a: fc.nat(CS - 1), n: fc.integer({ min: 1, max: CS }), host: fc.nat(1 << 20) }), { maxLength: 30 }), (ops) => {
        const m = new RangeMap();
        const model = new Array<number>(CS).fill(-1);
        for (const { a, n, host } of ops) {
          const b = Math.min(CS, a + n);
          m.set(a, b, host);
          for (let i = a; i < b; i++) model[i] = host + (i - a);
        }
        const got = new Array<number>(CS).fill(-1);
        let prevEnd = -1;
        for (const s of m.segs) {
          expect(s.start).toBeGreaterThanOrEqual(prevEnd);
          expect(s.end).toBeGreaterThan(s.start);
          if (s.start === prevEnd) {
            const prev = m.segs[m.segs.indexOf(s) - 1]!;
            expect(prev.host + (prev.end - prev.start)).not.toBe(s.host); // would have been joined
          }
          prevEnd = s.end;
          for (let i = s.start; i < s.end; i++) got[i] = s.host + (i - s.start);
        }
        expect(got.join()).toBe(model.join());
        expect(m.covered()).toBe(model.filter((x) => x >= 0).length);
        const gaps = m.gaps(0, CS);
        const fromGaps = new Array<boolean>(CS).fill(false);
        for (const [a, b] of gaps) for (let i = a; i < b; i++) fromGaps[i] = true;
        expect(fromGaps.join()).toBe(model.map((x) => x < 0).join());
        for (let i = 1; i < gaps.length; i++) expect(gaps[i]![0]).toBeGreaterThan(gaps[i - 1]![1]); // coalesced
        const a = ops[0]?.a ?? 0;
        expect(m.covers(a, Math.min(CS, a + 100))).toBe(model.slice(a, Math.min(CS, a + 100)).every((x) => x >= 0));
      }),
      { numRuns: 300 },
    );
  });
});

describe("PendingState", () => {
  it("reads merge the guest's writes over the old cluster; a fill makes the new cluster whole, never over the guest's bytes", () => {
    fc.assert(
      fc.property(fc.array(writeArb, { minLength: 1, maxLength: 25 }), fc.array(fc.tuple(fc.nat(CS - 1), fc.integer({ min: 1, max: CS })), { maxLength: 5 }), (writes, reads) => {
        const h = host();
        const model = h.slice(OLD, OLD + CS);
        const st = new PendingState(CS);
        st.begin(3, OLD, NEW);
        let logPos = LOG;
        for (const w of writes) {
          const len = Math.min(w.len, CS - w.at);
          const data = new Uint8Array(len).fill(w.fill);
          model.set(data, w.at);
          if (w.logged) {
            h.set(data, logPos);
            st.written(3, w.at, len, logPos);
            logPos += len;
          } else {
            h.set(data, NEW + w.at);
            st.written(3, w.at, len, NEW + w.at);
          }
        }
        const p = st.get(3)!;
        for (const [a, n] of reads) {
          const len = Math.min(n, CS - a);
          const dst = new Uint8Array(len);
          st.read(p, a, dst, (buf, off) => buf.set(h.subarray(off, off + buf.length)));
          expect(same(dst, model.subarray(a, a + len))).toBe(true);
        }
        const guestInNew = p.ranges.segs.filter((s) => s.host === NEW + s.start);
        const runs = PendingState.fillRuns([p], CS);
        for (const r of runs) for (const s of guestInNew) expect(r.dst + r.length <= NEW + s.start || r.dst >= NEW + s.end).toBe(true);
        // With the sources read ahead, and read per written span.
        for (const readAhead of [8 << 20, 0]) {
          h.fill(0, NEW, NEW + CS);
          for (const s of guestInNew) h.set(model.subarray(s.start, s.end), NEW + s.start);
          performRuns(runs, (buf, off) => buf.set(h.subarray(off, off + buf.length)), (buf, off) => h.set(buf, off), 1 << 20, readAhead);
          expect(same(h.subarray(NEW, NEW + CS), model)).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("joins the fill of neighbouring clusters into one run per gap between the guest's writes", () => {
    const st = new PendingState(CS);
    for (let i = 0; i < 8; i++) {
      st.begin(i, OLD + i * CS, NEW + i * CS);
      st.written(i, 1024, 512, NEW + i * CS + 1024);
    }
    const runs = PendingState.fillRuns(st.all(), CS);
    expect(runs.length).toBe(9); // head of the first, tail+head between each pair, tail of the last
    let reads = 0;
    let writes = 0;
    performRuns(runs, () => reads++, () => writes++);
    expect(writes).toBe(9); // never over the guest's bytes
    expect(reads).toBe(1); // the old clusters are neighbours: one read, the guest's 512 bytes between runs included
    reads = 0;
    performRuns(runs, () => reads++, () => {}, 1 << 20, 0); // no read-ahead: one read per written span
    expect(reads).toBe(9);
    expect(st.fillDebt()).toBe(8 * (CS - 512));
  });

  it("assembles the new clusters of logged writes in memory: one write per contiguous span, neighbouring sources read together", () => {
    const st = new PendingState(CS);
    for (let i = 0; i < 8; i++) {
      st.begin(i, OLD + i * CS, NEW + i * CS);
      st.written(i, 1024, 512, LOG + i * 1024 + 512); // records of 512 bytes with a 512-byte header each
    }
    const runs = PendingState.fillRuns(st.all(), CS);
    const reads: number[] = [];
    const writes: number[] = [];
    performRuns(runs, (b) => reads.push(b.length), (b) => writes.push(b.length));
    expect(writes).toEqual([8 * CS]);
    expect(reads.length).toBe(2); // the old clusters, the log records
  });

  it("reads the log once for an apply whose clusters were shared whole, whatever order the records are in", () => {
    const st = new PendingState(CS);
    const log = new Uint8Array(8 * 4608);
    const host = new Uint8Array(NEW + 8 * CS);
    for (let i = 0; i < 8; i++) {
      // Written in reverse order: the last cluster's record comes first in the log.
      const at = (7 - i) * 4608 + 512;
      log.fill(i + 1, at, at + 4096);
      st.begin(i, OLD + i * CS, NEW + i * CS);
      st.written(i, (i % 2) * 4096, 4096, LOG + at);
    }
    const runs = PendingState.fillRuns(st.all(), CS, undefined, false);
    const reads: number[] = [];
    const rd = (b: Uint8Array, off: number) => {
      reads.push(b.length);
      b.set(log.subarray(off - LOG, off - LOG + b.length));
    };
    performRuns(runs, rd, (b, off) => host.set(b, off));
    expect(reads).toEqual([8 * 4608 - 512]);
    for (let i = 0; i < 8; i++) expect(host.subarray(NEW + i * CS + (i % 2) * 4096, NEW + i * CS + (i % 2) * 4096 + 4096).every((x) => x === i + 1)).toBe(true);
    reads.length = 0;
    performRuns(runs, rd, () => {}, 1 << 20, 0);
    expect(reads.length).toBeGreaterThan(1); // per written span: records of neighbouring spans lie apart in the log
  });

  it("says when it is full", () => {
    const st = new PendingState(CS, 2);
    st.begin(0, OLD, NEW);
    expect(st.full).toBe(false);
    st.begin(1, OLD, NEW + CS);
    expect(st.full).toBe(true);
    expect(() => st.begin(1, OLD, NEW)).toThrow();
    st.delete(0);
    expect(st.full).toBe(false);
  });
});
