/**
 * Random write / write-zeroes / discard / snapshot sequences applied through refcow (every scheme, both cache
 * modes) and through qemu-io / qemu-img to an identically created image: QEMU's check finds refcow's image
 * clean, and qemu-img compare finds the two equal, active layer and every snapshot.
 */
import { afterAll, describe, expect, it } from "vitest";
import fc from "fast-check";
import * as fs from "node:fs";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { SnapshotError } from "../../src/engine/errors.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("write");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const CS = 4096;
const SIZE = 96 * CS + 1536;

type Op =
  | { kind: "write"; off: number; len: number; byte: number }
  | { kind: "zero"; off: number; len: number; unmap: boolean }
  | { kind: "discard"; off: number; len: number }
  | { kind: "snap" }
  | { kind: "apply"; pick: number }
  | { kind: "delete"; pick: number };

const range = fc.tuple(fc.nat(SIZE / 512 - 1), fc.integer({ min: 1, max: 40 })).map(([s, n]) => ({ off: s * 512, len: Math.min(n * 512, SIZE - s * 512) }));
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, byte]) => ({ kind: "write" as const, ...r, byte })) },
  { weight: 2, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]) => ({ kind: "zero" as const, ...r, unmap })) },
  { weight: 1, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
  { weight: 2, arbitrary: fc.constant({ kind: "snap" as const }) },
  { weight: 1, arbitrary: fc.nat(20).map((pick) => ({ kind: "apply" as const, pick })) },
  { weight: 1, arbitrary: fc.nat(20).map((pick) => ({ kind: "delete" as const, pick })) },
);

let seq = 0;
function runBoth(scheme: string, cache: "writeback" | "writethrough", ops: Op[]): void {
  const id = `${scheme}-${cache}-${seq++}`;
  const mine = path.join(dir, `${id}-refcow.qcow2`);
  const theirs = path.join(dir, `${id}-qemu.qcow2`);
  createImagePath(mine, { size: SIZE, clusterSize: CS });
  qemuImg(["create", "-q", "-f", "qcow2", "-o", `cluster_size=${CS}`, theirs, String(SIZE)]);
  const img = openImagePath(mine, { scheme, cache }) as Qcow2Image;
  const snapshots: string[] = [];
  let batch: string[] = [];
  const flushBatch = () => {
    if (batch.length) qemuIo(theirs, batch, { cache });
    batch = [];
  };
  let n = 0;
  try {
    for (const o of ops) {
      if (o.kind === "write") {
        img.write(o.off, new Uint8Array(o.len).fill(o.byte));
        batch.push(`write -P ${o.byte} ${o.off} ${o.len}`);
      } else if (o.kind === "zero") {
        img.writeZeroes(o.off, o.len, { unmap: o.unmap });
        batch.push(`write -z ${o.unmap ? "-u " : ""}${o.off} ${o.len}`);
      } else if (o.kind === "discard") {
        img.discard(o.off, o.len);
        batch.push(`discard ${o.off} ${o.len}`);
      } else if (o.kind === "snap") {
        const name = `s${n++}`;
        img.snapshotCreate(name);
        flushBatch();
        qemuImg(["snapshot", "-c", name, theirs]);
        snapshots.push(name);
      } else if (snapshots.length) {
        const name = snapshots[o.pick % snapshots.length];
        if (o.kind === "apply") {
          img.snapshotApply(name);
          flushBatch();
          qemuImg(["snapshot", "-a", name, theirs]);
        } else {
          try {
            img.snapshotDelete(name);
          } catch (e) {
            // The owner scheme merges a snapshot into its only child and refuses otherwise.
            if (e instanceof SnapshotError && scheme === "owner") continue;
            throw e;
          }
          flushBatch();
          qemuImg(["snapshot", "-d", name, theirs]);
          snapshots.splice(snapshots.indexOf(name), 1);
        }
      }
    }
  } finally {
    img.close();
    flushBatch();
  }
  const check = qemuCheck(mine);
  expect(check.status, `qemu-img check of ${scheme}/${cache}:\n${check.out}`).toBe(0);
  expect(qemuCompare(mine, theirs), `active layer, ${scheme}/${cache}`).toBe(true);
  for (const s of snapshots) expect(qemuRaw(mine, s).equals(qemuRaw(theirs, s)), `snapshot ${s}, ${scheme}/${cache}`).toBe(true);
  expect(qemuImg(["snapshot", "-l", mine]).split("\n").length).toBe(qemuImg(["snapshot", "-l", theirs]).split("\n").length);
  fs.rmSync(mine);
  fs.rmSync(theirs);
}

describe("random sequences through refcow and through QEMU end equal", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writeback", "writethrough"] as const) {
      it(`${scheme}/${cache}`, () => {
        fc.assert(
          fc.property(fc.array(op, { minLength: 10, maxLength: 40 }), (ops) => runBoth(scheme, cache, ops)),
          { seed: 20261123, numRuns: 8, endOnFailure: true },
        );
      }, 120_000);
    }
  }
});
