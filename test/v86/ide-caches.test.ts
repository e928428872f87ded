/**
 * The IDE drive's caches (hda-adapter.ts: write cache; read-ahead.ts: read-ahead) against a plain byte
 * array: random sequences of guest reads and writes — mostly sequential, so windows are read ahead and
 * overlapped by writes — over a disk that completes after random delays. Every read must return the bytes
 * the array held when the guest issued it (what a FIFO disk gives), whatever was cached or read ahead.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AsyncDisk, DiskDone, WriteData } from "../../src/disk/async-disk.js";
import { HdaAdapter } from "../../src/v86/hda-adapter.js";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";
import { ReadAhead } from "../../src/v86/read-ahead.js";

const SECTOR = 512;
const DISK = 256 * SECTOR;

/** A disk whose every completion comes after a delay drawn from `delays` (0: a microtask). */
function delayedDisk(inner: MemoryAsyncDisk, delays: number[]): AsyncDisk & { backgroundReads: number } {
  let i = 0;
  const later = (f: () => void) => {
    const d = delays[i++ % delays.length]!;
    if (d === 0) queueMicrotask(f);
    else setTimeout(f, d);
  };
  const disk = {
    size: inner.size,
    backgroundReads: 0,
    read(o: number, l: number, done: DiskDone<Uint8Array>, background?: boolean) {
      if (background) disk.backgroundReads++;
      // The data is taken when the request is served (now, in FIFO order), delivered later.
      inner.read(o, l, (err, data) => later(() => done(err, data, undefined)));
    },
    write(o: number, d: WriteData, done: DiskDone) {
      inner.write(o, d, (err) => later(() => done(err, undefined, undefined)));
    },
    flush(done: DiskDone) {
      inner.flush((err) => later(() => done(err, undefined, undefined)));
    },
  };
  return disk;
}

/** `move`: go on from where the last request ended, back to where it began, or to sector `at`. */
type Op = { read: boolean; sectors: number; move: "on" | "back" | "jump"; at: number; fill: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  read: fc.boolean(),
  sectors: fc.integer({ min: 1, max: 16 }),
  move: fc.constantFrom("on" as const, "on" as const, "back" as const, "jump" as const),
  at: fc.integer({ min: 0, max: 255 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

describe("IDE caches against a byte array", () => {
  it("every read returns what the guest wrote before it, with read-ahead and the write cache on", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 8 }),
        fc.constantFrom(4 * SECTOR, 16 * SECTOR, 64 * SECTOR),
        async (ops, delays, window) => {
          const model = new Uint8Array(DISK);
          const mem = new MemoryAsyncDisk(DISK);
          const disk = delayedDisk(mem, delays);
          const a = new HdaAdapter(disk, { writeCache: 8 * SECTOR, readAhead: window });
          a.reusedBuffer = () => false; // DMA writes: the write cache applies
          const errors: string[] = [];
          a.onError = (e) => errors.push(e.message);
          const reads: Array<Promise<void>> = [];
          const wrong: string[] = [];
          let pos = 0;
          let last = 0;
          for (const op of ops) {
            if (op.move === "jump") pos = op.at * SECTOR;
            else if (op.move === "back") pos = last;
            last = pos;
            const len = Math.min(op.sectors * SECTOR, DISK - pos);
            if (len === 0) {
              pos = 0;
              continue;
            }
            if (op.read) {
              const expected = model.slice(pos, pos + len);
              const at = pos;
              reads.push(
                new Promise<void>((resolve) =>
                  a.get(at, len, (data) => {
                    if (Buffer.compare(data, expected) !== 0) wrong.push(`read of ${len} bytes at ${at}`);
                    resolve();
                  }),
                ),
              );
            } else {
              const data = new Uint8Array(len).fill(op.fill);
              model.set(data, pos);
              a.set(pos, data, () => undefined);
            }
            pos += len;
            if (pos >= DISK) pos = 0;
          }
          await Promise.all(reads);
          await a.whenIdle();
          expect(wrong).toEqual([]);
          expect(errors).toEqual([]);
          expect(Buffer.compare(mem.bytes, model)).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("answers a sequential reader from windows read in the background, fewer trips than reads", async () => {
    const mem = new MemoryAsyncDisk(DISK);
    for (let i = 0; i < DISK; i++) mem.bytes[i] = i % 251;
    const disk = delayedDisk(mem, [1]);
    const a = new HdaAdapter(disk, { readAhead: 32 * SECTOR });
    for (let off = 0; off < DISK; off += 8 * SECTOR) {
      const data = await new Promise<Uint8Array>((resolve) => a.get(off, 8 * SECTOR, resolve));
      expect(Buffer.compare(data, mem.bytes.subarray(off, off + 8 * SECTOR))).toBe(0);
    }
    await a.whenIdle();
    // 32 guest reads of 4 KiB: the first two go to the disk, the rest come from 16 KiB windows.
    expect(mem.counts.reads).toBeLessThan(12);
    expect(disk.backgroundReads).toBeGreaterThan(0);
  });

  it("drops every window at a machine-state restore (the disk under it changed)", async () => {
    const mem = new MemoryAsyncDisk(DISK);
    const a = new HdaAdapter(mem, { readAhead: 16 * SECTOR });
    const read = (off: number) => new Promise<Uint8Array>((resolve) => a.get(off, SECTOR, resolve));
    await read(0);
    await read(SECTOR); // sequential: [2, 18) sectors read ahead
    await a.whenIdle();
    mem.bytes.fill(9, 2 * SECTOR, 3 * SECTOR); // loadvm put the disk back to another state
    a.invalidateCallbacks();
    expect((await read(2 * SECTOR))[0]).toBe(9);
  });

  it("refuses a window that is not whole sectors", () => {
    expect(() => new ReadAhead(1000, DISK)).toThrow(/multiple of 512/);
  });
});
