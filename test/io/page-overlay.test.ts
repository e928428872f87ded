/**
 * The in-memory copy-on-write views against a MemoryFile given the same writes and truncates: StagedFile
 * (4 KiB pages), the CLI's OverlayFile (64 KiB pages) and PageOverlay itself read the same bytes and report
 * the same size after every step, and the base file is never written (StagedFile's until commit, which then
 * leaves it equal to the model).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { OverlayFile } from "../../src/cli/overlay-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { PageOverlay } from "../../src/io/page-overlay.js";
import { StagedFile } from "../../src/io/staged-file.js";

type ViewOp =
  | { kind: "write"; offset: number; length: number; byte: number }
  | { kind: "truncate"; size: number }
  | { kind: "read"; offset: number; length: number };

const LIMIT = 300_000;
const viewOps = fc.array(
  fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant("write" as const), offset: fc.nat(LIMIT), length: fc.integer({ min: 1, max: 70_000 }), byte: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("truncate" as const), size: fc.nat(LIMIT) }) },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("read" as const), offset: fc.nat(LIMIT + 10_000), length: fc.integer({ min: 1, max: 140_000 }) }) },
  ),
  { maxLength: 30 },
);

/** Base contents that differ from byte to byte, so a misplaced read shows. */
function baseBytes(length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 7 + (i >> 12)) & 0xff || 1;
  return b;
}

type View = Pick<PageOverlay, "read" | "write" | "size" | "truncate">;
const views: [string, (base: MemoryFile) => View][] = [
  ["StagedFile", (base) => new StagedFile(base)],
  ["OverlayFile", (base) => new OverlayFile(base)],
  ["PageOverlay, 512-byte pages", (base) => new PageOverlay(base, 512)],
];

describe("copy-on-write views match a MemoryFile given the same operations", () => {
  for (const [label, make] of views) {
    it(label, () => {
      fc.assert(
        fc.property(fc.nat(200_000), viewOps, (baseLength, ops) => {
          const original = baseBytes(baseLength);
          const base = new MemoryFile(original);
          const view = make(base);
          const model = new MemoryFile(original);
          for (const o of ops) {
            if (o.kind === "write") {
              const data = new Uint8Array(o.length).fill(o.byte);
              view.write(data, o.offset);
              model.write(data, o.offset);
            } else if (o.kind === "truncate") {
              view.truncate(o.size);
              model.truncate(o.size);
            } else {
              const got = new Uint8Array(o.length).fill(0xee);
              const want = new Uint8Array(o.length);
              expect(view.read(got, o.offset)).toBe(model.read(want, o.offset));
              expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
            }
            expect(view.size()).toBe(model.size());
          }
          const all = new Uint8Array(model.size());
          view.read(all, 0);
          expect(Buffer.from(all).equals(Buffer.from(model.contents()))).toBe(true);
          expect(Buffer.from(base.contents()).equals(Buffer.from(original))).toBe(true);
          if (view instanceof StagedFile) {
            view.commit();
            expect(Buffer.from(base.contents()).equals(Buffer.from(model.contents()))).toBe(true);
          }
        }),
        { seed: 6161, numRuns: 150 },
      );
    });
  }
});
