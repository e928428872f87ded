/**
 * Random I/O against the engine (every scheme, several geometries) and against a plain byte array: reads
 * agree after every step, snapshots hold what they held, reopening changes nothing, and refcow's own check
 * then QEMU's find the closed image clean.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import * as fs from "node:fs";
import * as path from "node:path";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { CreateOptions } from "../../src/engine/types.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";
import { fillFrom, ioOps, ModelledImage, type IoOpMix } from "../helpers/random-io.js";

const GEOMETRIES: (CreateOptions & { label: string })[] = [
  { label: "64k", size: (3 << 20) + 7 * 512, clusterSize: 65536 },
  { label: "512b-64bit", size: 1 << 20, clusterSize: 512, refcountBits: 64 },
  { label: "16k-extl2", size: 2 << 20, clusterSize: 16384, extendedL2: true },
  { label: "4k-8bit", size: 2 << 20, clusterSize: 4096, refcountBits: 8 },
];

const MIX: IoOpMix = {
  maxLength: 200_000,
  maxOps: 50,
  weights: { write: 10, zero: 2, discard: 2, snap: 2, apply: 1, delete: 1, reopen: 1, read: 4 },
};

const dir = tempDir("prop");

describe("random I/O matches a byte array", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const geo of GEOMETRIES) {
      it(`${scheme}, ${geo.label}`, () => {
        fc.assert(
          fc.property(ioOps(geo.size, MIX), fc.constantFrom("writeback", "writethrough") as fc.Arbitrary<"writeback" | "writethrough">, (list, cache) => {
            const file = new MemoryFile();
            Qcow2Image.create(file, geo);
            const m = new ModelledImage(file, geo.size, (f) => Qcow2Image.open(f, { scheme, cache }));
            for (const o of list) m.apply(o);
            m.expectActiveLayer();
            for (const [name, s] of m.snapshots) {
              const b = new Uint8Array(geo.size);
              m.img.readSnapshot(name, b, 0);
              expect(Buffer.from(b).equals(Buffer.from(s.data)), `snapshot ${name}`).toBe(true);
            }
            m.img.close();
            const ro = Qcow2Image.open(new MemoryFile(m.file.contents()), { readOnly: true });
            const check = ro.check();
            expect(check.corruptions + check.leaks, check.messages.slice(0, 5).join("\n")).toBe(0);
            ro.close();
          }),
          { seed: 4242, numRuns: 25, endOnFailure: true },
        );
        // One image of each kind also goes through QEMU's check.
        const file = new MemoryFile();
        Qcow2Image.create(file, geo);
        const img = Qcow2Image.open(file, { scheme });
        img.write(1000, fillFrom(1, 70_000));
        img.snapshotCreate("x");
        img.write(5000, fillFrom(2, 90_000));
        img.close();
        const p = path.join(dir, `${scheme}-${geo.label}.qcow2`);
        fs.writeFileSync(p, file.contents());
        expect(qemuCheck(p).status).toBe(0);
        fs.rmSync(p);
      }, 120_000);
    }
  }
});
