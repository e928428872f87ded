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
import { Qcow2Image } from "../../src/open/qcow2.js";
import { referenceCounts } from "../../src/engine/check/check.js";
import { compactImage } from "../../src/open/qcow2.js";
import type { CreateOptions } from "../../src/engine/types.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { ioOps, ModelledImage, type IoOpMix } from "../helpers/random-io.js";

const GEOMETRIES: (CreateOptions & { label: string })[] = [
  { label: "64k", size: (2 << 20) + 7 * 512, clusterSize: 65536 },
  { label: "512b-64bit", size: 512 << 10, clusterSize: 512, refcountBits: 64 },
  { label: "16k-extl2", size: 1 << 20, clusterSize: 16384, extendedL2: true },
];

const MIX: IoOpMix = {
  maxLength: 150_000,
  maxOps: 40,
  weights: { write: 10, zero: 2, discard: 3, snap: 3, apply: 1, delete: 2, reopen: 1, read: 3 },
  vmState: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40_000 })),
};

/** Clusters no table references, below the end of the file. */
function unreferenced(img: Qcow2Image): number[] {
  const refs = referenceCounts(img.core);
  const end = Math.ceil(img.core.file.size() / img.clusterSize);
  const out: number[] = [];
  for (let c = 0; c < end; c++) if (c >= refs.length || refs[c] === 0) out.push(c);
  return out;
}

describe("random I/O under append matches a byte array, never reuses free space, compacts", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const geo of GEOMETRIES) {
      it(`${scheme}, ${geo.label}`, () => {
        fc.assert(
          fc.property(ioOps(geo.size, MIX), fc.constantFrom("writeback", "writethrough") as fc.Arbitrary<"writeback" | "writethrough">, (list, cache) => {
            const created = new MemoryFile();
            Qcow2Image.create(created, geo);
            const m = new ModelledImage(created, geo.size, (f) => Qcow2Image.open(f, { scheme, cache, alloc: "append" }));
            /** Clusters seen free inside the file: never to be referenced again. */
            const holes = new Set<number>();
            const noteHoles = (step: string) => {
              for (const c of unreferenced(m.img)) holes.add(c);
              const refs = referenceCounts(m.img.core);
              for (const c of holes) {
                if (c < refs.length && refs[c] > 0) throw new Error(`cluster ${c}, seen free inside the file, is referenced again after ${step}`);
              }
            };
            for (const o of list) {
              m.apply(o);
              noteHoles(o.kind);
            }
            m.expectActiveLayer();
            m.img.close();

            // The closed image, then its compacted copy: same contents, clean, nothing free inside.
            const closed = new MemoryFile(m.file.contents());
            const verify = (file: MemoryFile, what: string) => {
              const ro = Qcow2Image.open(new MemoryFile(file.contents()), { readOnly: true });
              expect(Buffer.from(ro.read(0, geo.size)).equals(Buffer.from(m.model)), `${what}: active layer`).toBe(true);
              expect(ro.snapshotList().map((s) => s.name).sort()).toEqual([...m.snapshots.keys()].sort());
              for (const [name, s] of m.snapshots) {
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
