/**
 * The first write into an L2 table just copied from a snapshot's skips the flush between the COW data (and
 * the refcount block) and the L2 slice: no L1 entry on the disk points to the copy yet, and the L1 entry is
 * written after a flush of its own (write-order.ts). Every crash point of such writes, every scheme, each
 * write torn at every sector and unflushed writes reaching the disk in any of a sample of orders: the state
 * recovers, reads every acknowledged write (the one in flight old or new), the snapshot reads as it was,
 * and check finds no corruption (leaks allowed, as every scheme's crashes leave them).
 */
import { describe, expect, it } from "vitest";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { CacheMode } from "../../src/engine/types.js";
import { seededRandom } from "../../src/harness/crash.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

const CS = 4096;
const SIZE = 2048 * CS; // 4 L2 tables of 512 entries

/** Every byte reads as acknowledged, except that the write in flight (if any) may read old or new, byte by byte. */
function readsAcknowledged(got: Uint8Array, model: Uint8Array, flight?: { off: number; data: Uint8Array }): boolean {
  const same = (a: number, b: number) => Buffer.from(got.buffer, got.byteOffset + a, b - a).equals(Buffer.from(model.buffer, model.byteOffset + a, b - a));
  if (!flight) return same(0, got.length);
  const end = flight.off + flight.data.length;
  if (!same(0, flight.off) || !same(end, got.length)) return false;
  for (let i = flight.off; i < end; i++) if (got[i] !== model[i] && got[i] !== flight.data[i - flight.off]) return false;
  return true;
}

describe("crashes in the first write into a copied L2 table", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writethrough", "writeback"] as CacheMode[]) {
      it(`${scheme}/${cache}: every crash state recovers what was acknowledged`, () => {
        const base = new MemoryFile();
        Qcow2Image.create(base, { size: SIZE, clusterSize: CS });
        const rnd = seededRandom(11);
        let img = Qcow2Image.open(base, { scheme: "eager" });
        const model = new Uint8Array(SIZE);
        // Two clusters in each of the first three tables, then the snapshot: all three tables are shared.
        for (const c of [0, 1, 512, 513, 1024, 1025]) {
          img.write(c * CS, new Uint8Array(CS).fill(c % 251 + 1));
          model.fill(c % 251 + 1, c * CS, (c + 1) * CS);
        }
        img.snapshotCreate("s");
        img.close();
        const snap = model.slice();
        const fault = new FaultFile(base.contents(), `fresh-table-${scheme}-${cache}`);
        img = Qcow2Image.open(fault, { scheme, cache, random: rnd });
        const acked: { at: number; model: Uint8Array }[] = [{ at: fault.log.length, model: model.slice() }];
        const inFlight: { from: number; off: number; data: Uint8Array }[] = [];
        // The first write into two shared tables (the shortened ordering), a second into the same table, and a
        // write that allocates in a table never written (a new table: unlinked too).
        for (const [k, off] of [1 * CS + 512, 513 * CS, 512 * CS + 1024, 1536 * CS + 2048].entries()) {
          const data = new Uint8Array(1536).fill(0xa0 + k);
          inFlight.push({ from: fault.log.length, off, data });
          img.write(off, data);
          if (cache === "writeback") img.flush();
          model.set(data, off);
          acked.push({ at: fault.log.length, model: model.slice() });
        }
        img.close();
        let states = 0;
        for (const at of fault.writePoints()) {
          if (at <= acked[0]!.at) continue;
          const done = [...acked].reverse().find((a) => a.at <= at)!;
          const k = inFlight.findIndex((w, i) => w.from < at && acked[i + 1]!.at > at);
          const flight = k >= 0 ? inFlight[k] : undefined;
          for (const st of fault.crashStates(at, { torn: Infinity, subsets: 4, random: rnd })) {
            states++;
            const what = `${scheme}/${cache} ${fault.describe(st)}`;
            const f = fault.materialize(st); // a file of its own
            // Recovered by the scheme itself, closed, then checked as plain qcow2.
            const re = Qcow2Image.open(f, { scheme });
            const got = re.read(0, SIZE);
            const sn = new Uint8Array(SIZE);
            re.readSnapshot("s", sn, 0);
            re.close();
            const checked = Qcow2Image.open(f.clone(), { scheme: "eager" });
            const r = checked.check();
            checked.close();
            expect(r.corruptions, what).toBe(0);
            expect(Buffer.compare(Buffer.from(sn), Buffer.from(snap)), what).toBe(0);
            expect(readsAcknowledged(got, done.model, flight), what).toBe(true);
          }
        }
        expect(states).toBeGreaterThan(100);
      }, 300_000);
    }
  }
});
