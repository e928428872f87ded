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
import { Qcow2Image } from "../../src/engine/qcow2-image.js";
import { SnapshotError } from "../../src/engine/errors.js";
import type { CreateOptions } from "../../src/engine/types.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";

type Op =
  | { kind: "write"; off: number; len: number; seed: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "snap" }
  | { kind: "apply"; pick: number }
  | { kind: "delete"; pick: number }
  | { kind: "reopen" }
  | { kind: "read"; off: number; len: number };

const GEOMETRIES: (CreateOptions & { label: string })[] = [
  { label: "64k", size: (3 << 20) + 7 * 512, clusterSize: 65536 },
  { label: "512b-64bit", size: 1 << 20, clusterSize: 512, refcountBits: 64 },
  { label: "16k-extl2", size: 2 << 20, clusterSize: 16384, extendedL2: true },
  { label: "4k-8bit", size: 2 << 20, clusterSize: 4096, refcountBits: 8 },
];

function ops(size: number): fc.Arbitrary<Op[]> {
  const range = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: 200_000 })).map(([off, len]) => ({ off, len: Math.min(len, size - off) }));
  return fc.array(
    fc.oneof(
      { weight: 10, arbitrary: fc.tuple(range, fc.nat()).map(([r, seed]) => ({ kind: "write" as const, ...r, seed })) },
      { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })) },
      { weight: 2, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
      { weight: 2, arbitrary: fc.constant({ kind: "snap" as const }) },
      { weight: 1, arbitrary: fc.nat(30).map((pick) => ({ kind: "apply" as const, pick })) },
      { weight: 1, arbitrary: fc.nat(30).map((pick) => ({ kind: "delete" as const, pick })) },
      { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
      { weight: 4, arbitrary: range.map((r) => ({ kind: "read" as const, ...r })) },
    ),
    { minLength: 5, maxLength: 50 },
  );
}

function fillFrom(seed: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

const dir = tempDir("prop");

describe("random I/O matches a byte array", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const geo of GEOMETRIES) {
      it(`${scheme}, ${geo.label}`, () => {
        fc.assert(
          fc.property(ops(geo.size), fc.constantFrom("writeback", "writethrough") as fc.Arbitrary<"writeback" | "writethrough">, (list, cache) => {
            const file = new MemoryFile();
            Qcow2Image.create(file, geo);
            let img = Qcow2Image.open(file, { scheme, cache });
            const model = new Uint8Array(geo.size);
            const snaps = new Map<string, Uint8Array>();
            let n = 0;
            let current = file;
            const reopen = () => {
              img.close();
              current = new MemoryFile(current.contents());
              img = Qcow2Image.open(current, { scheme, cache });
            };
            for (const o of list) {
              if (o.kind === "write") {
                const d = fillFrom(o.seed, o.len);
                img.write(o.off, d);
                model.set(d, o.off);
              } else if (o.kind === "zero") {
                img.writeZeroes(o.off, o.len, { unmap: o.unmap });
                model.fill(0, o.off, o.off + o.len);
              } else if (o.kind === "discard") {
                img.discard(o.off, o.len);
                // Whole clusters only (and the disk's last partial cluster): the rest is left as it was.
                const cs = img.clusterSize;
                const a = Math.ceil(o.off / cs) * cs;
                const end = o.off + o.len;
                const b = end === geo.size ? end : Math.floor(end / cs) * cs;
                if (a < b) model.fill(0, a, b);
              } else if (o.kind === "snap") {
                const name = `s${n++}`;
                img.snapshotCreate(name);
                snaps.set(name, model.slice());
              } else if (o.kind === "apply" && snaps.size) {
                const name = [...snaps.keys()][o.pick % snaps.size];
                img.snapshotApply(name);
                model.set(snaps.get(name)!);
              } else if (o.kind === "delete" && snaps.size) {
                const name = [...snaps.keys()][o.pick % snaps.size];
                try {
                  img.snapshotDelete(name);
                  snaps.delete(name);
                } catch (e) {
                  if (!(e instanceof SnapshotError)) throw e;
                }
              } else if (o.kind === "reopen") {
                reopen();
              } else if (o.kind === "read") {
                expect(Buffer.from(img.read(o.off, o.len)).equals(Buffer.from(model.subarray(o.off, o.off + o.len)))).toBe(true);
              }
            }
            expect(Buffer.from(img.read(0, geo.size)).equals(Buffer.from(model))).toBe(true);
            for (const [name, content] of snaps) {
              const b = new Uint8Array(geo.size);
              img.readSnapshot(name, b, 0);
              expect(Buffer.from(b).equals(Buffer.from(content)), `snapshot ${name}`).toBe(true);
            }
            img.close();
            const ro = Qcow2Image.open(new MemoryFile(current.contents()), { readOnly: true });
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
