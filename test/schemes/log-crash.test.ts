/**
 * Crashes of scheme `log` where the crash harness's random workload rarely goes: a data log that fills
 * again and again (every apply — fill, refcounts, L2 entries, log reset — crashed at each of its writes), and
 * the records of the write in flight torn at every sector. Every crash state recovers (a writable open under
 * `eager`, which replays the log), reads every acknowledged write (writethrough: each write, once it returns),
 * and is left clean for qemu-img check (leaks allowed: eager's crashes leave them too).
 */
import { describe, expect, it } from "vitest";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { seededRandom } from "../../src/harness/crash.js";
import { EXT_REFCOW_DATA_LOG, INCOMPAT_REFCOW_DATA_LOG } from "../../src/schemes/log-format.js";

const CS = 4096;
const SIZE = 256 * CS; // the log is 64 KiB: about 14 records of 4 KiB

describe("log crash states", () => {
  it("writethrough: every crash point of writes that fill the log over and over recovers every acknowledged write", () => {
    const base = new MemoryFile();
    Qcow2Image.create(base, { size: SIZE, clusterSize: CS });
    const fault = new FaultFile(base.contents(), "log-full");
    const rnd = seededRandom(7);
    let img = Qcow2Image.open(fault, { scheme: "eager", random: rnd });
    for (let c = 0; c < 250; c++) img.write(c * CS, new Uint8Array(CS).fill(c + 1));
    img.snapshotCreate("s");
    img.close();
    img = Qcow2Image.open(fault, { scheme: "log", cache: "writethrough", random: rnd });
    const model = new Uint8Array(SIZE);
    for (let c = 0; c < 250; c++) model.fill(c + 1, c * CS, (c + 1) * CS);
    const acked: { at: number; model: Uint8Array }[] = [{ at: fault.log.length, model: model.slice() }];
    const inFlight: { from: number; off: number; data: Uint8Array }[] = [];
    for (let i = 0; i < 150; i++) {
      const c = Math.floor(rnd() * 250);
      const off = c * CS + Math.floor(rnd() * 7) * 512;
      const len = 512 * (1 + Math.floor(rnd() * Math.min(6, (CS * (c + 1) - off) / 512 - 1)));
      const data = new Uint8Array(len).fill(0x80 + (i % 100));
      inFlight.push({ from: fault.log.length, off, data });
      img.write(off, data);
      model.set(data, off);
      acked.push({ at: fault.log.length, model: model.slice() });
    }
    const report = img.core.scheme.report?.() ?? {};
    expect(report.applies).toBeGreaterThan(2);
    img.close();
    let states = 0;
    for (const at of fault.writePoints()) {
      if (at <= acked[0]!.at) continue;
      const done = [...acked].reverse().find((a) => a.at <= at)!;
      const flight = inFlight.find((w, k) => w.from < at && (acked[k + 1]?.at ?? Infinity) > at);
      for (const st of fault.crashStates(at, { torn: Infinity })) {
        states++;
        const f = fault.materialize(st);
        const re = Qcow2Image.open(f, { scheme: "eager" });
        const got = re.read(0, SIZE);
        const r = re.check();
        re.close();
        expect(r.corruptions, `state ${fault.describe(st)}`).toBe(0);
        // Every acknowledged write; each byte of the one in flight may be old or new (an in-place write can tear).
        let ok = true;
        for (let i = 0; i < SIZE && ok; i++) {
          if (got[i] === done.model[i]) continue;
          ok = !!flight && i >= flight.off && i < flight.off + flight.data.length && got[i] === flight.data[i - flight.off];
        }
        expect(ok, `state ${fault.describe(st)}`).toBe(true);
      }
    }
    expect(states).toBeGreaterThan(500);
  }, 300_000);

  /**
   * The log is made off the write path: at a writable open that finds snapshots, and at snapshot create. Every
   * crash point from before that creation through the first post-snapshot write and the close, each write torn
   * at every sector: the state recovers under eager and under log, reads what was acknowledged (the write in
   * flight old or new), checks without corruption, and a clean close after the recovery leaves no log behind.
   */
  for (const at of ["open", "snapshot create"] as const) {
    it(`writethrough: every crash point of the log's creation at ${at}, and of the first write after it`, () => {
      const base = new MemoryFile();
      Qcow2Image.create(base, { size: SIZE, clusterSize: CS });
      let img = Qcow2Image.open(base, { scheme: "eager" });
      for (let c = 0; c < 8; c++) img.write(c * CS, new Uint8Array(CS).fill(c + 1));
      if (at === "open") img.snapshotCreate("s");
      img.close();
      const fault = new FaultFile(base.contents(), `log-made-${at}`);
      const model = new Uint8Array(SIZE);
      for (let c = 0; c < 8; c++) model.fill(c + 1, c * CS, (c + 1) * CS);
      img = Qcow2Image.open(fault, { scheme: "log", cache: "writethrough", random: seededRandom(3) });
      if (at === "snapshot create") img.snapshotCreate("s");
      expect(img.core.header.extensions.some((e) => e.type === EXT_REFCOW_DATA_LOG)).toBe(true);
      const from = fault.log.length;
      const data = new Uint8Array(1024).fill(0xab);
      img.write(2 * CS + 512, data);
      const acked = fault.log.length;
      const after = model.slice();
      after.set(data, 2 * CS + 512);
      img.close();
      let states = 0;
      for (const point of fault.writePoints()) {
        for (const st of fault.crashStates(point, { torn: Infinity })) {
          for (const scheme of ["eager", "log"]) {
            states++;
            const f = fault.materialize(st); // a file of its own
            const re = Qcow2Image.open(f, { scheme });
            const got = re.read(0, SIZE);
            const r = re.check();
            re.close();
            expect(r.corruptions, `${scheme} state ${fault.describe(st)}`).toBe(0);
            const same = (m: Uint8Array) => Buffer.compare(Buffer.from(got), Buffer.from(m)) === 0;
            if (point >= acked) expect(same(after), `${scheme} state ${fault.describe(st)}`).toBe(true);
            else if (point > from) {
              // The write in flight: each byte old or new.
              let ok = true;
              for (let i = 0; i < SIZE && ok; i++) ok = got[i] === model[i] || got[i] === after[i];
              expect(ok, `${scheme} state ${fault.describe(st)}`).toBe(true);
            } else expect(same(model), `${scheme} state ${fault.describe(st)}`).toBe(true);
            const again = Qcow2Image.open(new MemoryFile(f.contents()), { readOnly: true });
            expect(again.core.header.extensions.some((e) => e.type === EXT_REFCOW_DATA_LOG), `${scheme} state ${fault.describe(st)}`).toBe(false);
            expect(again.core.header.incompatibleFeatures & INCOMPAT_REFCOW_DATA_LOG).toBe(0n);
            again.close();
          }
        }
      }
      expect(states).toBeGreaterThan(50);
    }, 300_000);
  }
});
