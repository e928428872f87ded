/**
 * Random I/O and snapshot operations under the `append` allocation policy, for every scheme and several
 * geometries, against a plain byte array:
 *   - reads agree with the array after every step, snapshots keep what they held, reopening changes nothing;
 *   - a cluster seen free inside the file (no table references it) is never referenced again while the
 *     image is open or after a reopen: append never reuses free space;
 *   - the closed image checks clean; compacted, it still holds the same active layer and snapshots, checks
 *     clean and has no free cluster left inside the file.
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/engine/qcow2-image.js";
import { referenceCounts } from "../../src/engine/check.js";
import { compactImage } from "../../src/engine/compact.js";
import { SnapshotError } from "../../src/engine/errors.js";
import type { CreateOptions } from "../../src/engine/types.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";

type Op =
  | { kind: "write"; off: number; len: number; seed: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "snap"; vmState: number }
  | { kind: "apply"; pick: number }
  | { kind: "delete"; pick: number }
  | { kind: "reopen" }
  | { kind: "read"; off: number; len: number };

const GEOMETRIES: (CreateOptions & { label: string })[] = [
  { label: "64k", size: (2 << 20) + 7 * 512, clusterSize: 65536 },
  { label: "512b-64bit", size: 512 << 10, clusterSize: 512, refcountBits: 64 },
  { label: "16k-extl2", size: 1 << 20, clusterSize: 16384, extendedL2: true },
];

function ops(size: number): fc.Arbitrary<Op[]> {
  const range = fc.tuple(fc.nat(size - 1), fc.integer({ min: 1, max: 150_000 })).map(([off, len]) => ({ off, len: Math.min(len, size - off) }));
  return fc.array(
    fc.oneof(
      { weight: 10, arbitrary: fc.tuple(range, fc.nat()).map(([r, seed]) => ({ kind: "write" as const, ...r, seed })) },
      { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })) },
      { weight: 3, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
      { weight: 3, arbitrary: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40_000 })).map((vmState) => ({ kind: "snap" as const, vmState })) },
      { weight: 1, arbitrary: fc.nat(30).map((pick) => ({ kind: "apply" as const, pick })) },
      { weight: 2, arbitrary: fc.nat(30).map((pick) => ({ kind: "delete" as const, pick })) },
      { weight: 1, arbitrary: fc.constant({ kind: "reopen" as const }) },
      { weight: 3, arbitrary: range.map((r) => ({ kind: "read" as const, ...r })) },
    ),
    { minLength: 5, maxLength: 40 },
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

/** Clusters no table references, below the end of the file. */
function unreferenced(img: Qcow2Image): number[] {
  const refs = referenceCounts(img);
  const end = Math.ceil(img.file.size() / img.clusterSize);
  const out: number[] = [];
  for (let c = 0; c < end; c++) if (c >= refs.length || refs[c] === 0) out.push(c);
  return out;
}

describe("random I/O under append matches a byte array, never reuses free space, compacts", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const geo of GEOMETRIES) {
      it(`${scheme}, ${geo.label}`, () => {
        fc.assert(
          fc.property(ops(geo.size), fc.constantFrom("writeback", "writethrough") as fc.Arbitrary<"writeback" | "writethrough">, (list, cache) => {
            let current = new MemoryFile();
            Qcow2Image.create(current, geo);
            let img = Qcow2Image.open(current, { scheme, cache, alloc: "append" });
            const model = new Uint8Array(geo.size);
            const snaps = new Map<string, { data: Uint8Array; vmState: Uint8Array }>();
            /** Clusters seen free inside the file: never to be referenced again. */
            const holes = new Set<number>();
            const noteHoles = (step: string) => {
              for (const c of unreferenced(img)) holes.add(c);
              const refs = referenceCounts(img);
              for (const c of holes) {
                if (c < refs.length && refs[c] > 0) throw new Error(`cluster ${c}, seen free inside the file, is referenced again after ${step}`);
              }
            };
            let n = 0;
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
                const cs = img.clusterSize;
                const a = Math.ceil(o.off / cs) * cs;
                const end = o.off + o.len;
                const b = end === geo.size ? end : Math.floor(end / cs) * cs;
                if (a < b) model.fill(0, a, b);
              } else if (o.kind === "snap") {
                const name = `s${n++}`;
                const vmState = fillFrom(n * 7919, o.vmState);
                img.snapshotCreate(name, { vmState });
                snaps.set(name, { data: model.slice(), vmState });
              } else if (o.kind === "apply" && snaps.size) {
                const name = [...snaps.keys()][o.pick % snaps.size];
                img.snapshotApply(name);
                model.set(snaps.get(name)!.data);
              } else if (o.kind === "delete" && snaps.size) {
                const name = [...snaps.keys()][o.pick % snaps.size];
                try {
                  img.snapshotDelete(name);
                  snaps.delete(name);
                } catch (e) {
                  if (!(e instanceof SnapshotError)) throw e;
                }
              } else if (o.kind === "reopen") {
                img.close();
                current = new MemoryFile(current.contents());
                img = Qcow2Image.open(current, { scheme, cache, alloc: "append" });
              } else if (o.kind === "read") {
                expect(Buffer.from(img.read(o.off, o.len)).equals(Buffer.from(model.subarray(o.off, o.off + o.len)))).toBe(true);
              }
              noteHoles(o.kind);
            }
            expect(Buffer.from(img.read(0, geo.size)).equals(Buffer.from(model))).toBe(true);
            img.close();

            // The closed image, then its compacted copy: same contents, clean, nothing free inside.
            const closed = new MemoryFile(current.contents());
            const verify = (file: MemoryFile, what: string) => {
              const ro = Qcow2Image.open(new MemoryFile(file.contents()), { readOnly: true });
              expect(Buffer.from(ro.read(0, geo.size)).equals(Buffer.from(model)), `${what}: active layer`).toBe(true);
              expect(ro.snapshotList().map((s) => s.name).sort()).toEqual([...snaps.keys()].sort());
              for (const [name, s] of snaps) {
                const b = new Uint8Array(geo.size);
                ro.readSnapshot(name, b, 0);
                expect(Buffer.from(b).equals(Buffer.from(s.data)), `${what}: snapshot ${name}`).toBe(true);
                expect(Buffer.from(ro.readVmState(name)).equals(Buffer.from(s.vmState)), `${what}: VM state of ${name}`).toBe(true);
              }
              const check = ro.check();
              expect(check.corruptions + check.leaks, `${what}: ${check.messages.slice(0, 5).join("\n")}`).toBe(0);
              return ro;
            };
            verify(closed, "closed").close();
            const compacted = new MemoryFile(closed.contents());
            const result = compactImage(compacted, { scheme });
            expect(result.bytesAfter).toBeLessThanOrEqual(result.bytesBefore);
            const ro = verify(compacted, "compacted");
            expect(unreferenced(ro)).toEqual([]);
            expect(Math.ceil(compacted.size() / ro.clusterSize)).toBe(result.clustersInUse);
            ro.close();
          }),
          { seed: 5151, numRuns: 20, endOnFailure: true },
        );
      }, 180_000);
    }
  }
});
