/**
 * The IDE drive's write cache (hda-adapter.ts) against a plain byte array: random sequences of guest reads,
 * writes and flushes over a disk that completes after random delays, with writes completing to the guest
 * before the disk has them. Every read must return the bytes the array held when the guest issued it (what
 * a FIFO disk gives), every flush must complete after the writes before it, and the disk must end equal to
 * the array.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { AsyncDisk, DiskDone, WriteData } from "../../src/disk/async-disk.js";
import { HdaAdapter } from "../../src/v86/hda-adapter.js";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";

const SECTOR = 512;
const DISK = 256 * SECTOR;

/** A disk whose every completion comes after a delay drawn from `delays` (0: a microtask). */
function delayedDisk(inner: MemoryAsyncDisk, delays: number[]): AsyncDisk & { backgroundWrites: number } {
  let i = 0;
  const later = (f: () => void) => {
    const d = delays[i++ % delays.length]!;
    if (d === 0) queueMicrotask(f);
    else setTimeout(f, d);
  };
  const disk = {
    size: inner.size,
    backgroundWrites: 0,
    read(o: number, l: number, done: DiskDone<Uint8Array>) {
      // The data is taken when the request is served (now, in FIFO order), delivered later.
      inner.read(o, l, (err, data) => later(() => done(err, data, undefined)));
    },
    write(o: number, d: WriteData, done: DiskDone, background?: boolean) {
      if (background) disk.backgroundWrites++;
      inner.write(o, d, (err) => later(() => done(err, undefined, undefined)));
    },
    flush(done: DiskDone) {
      inner.flush((err) => later(() => done(err, undefined, undefined)));
    },
  };
  return disk;
}

/** `move`: go on from where the last request ended, back to where it began, or to sector `at`. */
type Op = { kind: "read" | "write" | "flush"; sectors: number; move: "on" | "back" | "jump"; at: number; fill: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom("read" as const, "write" as const, "write" as const, "flush" as const),
  sectors: fc.integer({ min: 1, max: 16 }),
  move: fc.constantFrom("on" as const, "on" as const, "back" as const, "jump" as const),
  at: fc.integer({ min: 0, max: 255 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

describe("IDE write cache against a byte array", () => {
  it("every read returns what the guest wrote before it, and every flush covers the writes before it (with and without read-ahead)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 60 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 8 }),
        fc.constantFrom(2 * SECTOR, 8 * SECTOR, 64 * SECTOR),
        fc.constantFrom(0, 8 * SECTOR, 48 * SECTOR),
        async (ops, delays, cacheBytes, readAhead) => {
          const model = new Uint8Array(DISK);
          const mem = new MemoryAsyncDisk(DISK);
          const disk = delayedDisk(mem, delays);
          const a = new HdaAdapter(disk, { writeCache: cacheBytes, readAhead });
          a.reusedBuffer = () => false; // DMA writes: the write cache applies
          const errors: string[] = [];
          a.onError = (e) => errors.push(e.message);
          const reads: Array<Promise<void>> = [];
          const wrong: string[] = [];
          let written = 0;
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
            if (op.kind === "flush") {
              const before = written;
              reads.push(
                new Promise<void>((resolve) =>
                  a.flush(() => {
                    if (mem.writesBeforeLastFlush < before) wrong.push(`flush after ${before} writes covered ${mem.writesBeforeLastFlush}`);
                    resolve();
                  }),
                ),
              );
              continue;
            }
            if (op.kind === "read") {
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
              written++;
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

  it("hands the disk the writes it told the guest about as background requests (no spin for them)", async () => {
    const mem = new MemoryAsyncDisk(DISK);
    const disk = delayedDisk(mem, [1]);
    const a = new HdaAdapter(disk, { writeCache: 4 * SECTOR });
    a.reusedBuffer = () => false;
    for (let i = 0; i < 8; i++) a.set(i * SECTOR, new Uint8Array(SECTOR).fill(i + 1), () => undefined);
    await a.whenIdle();
    expect(disk.backgroundWrites).toBe(4); // the first 4 fit the cache; the rest were waited for
  });

  it("keeps the disk busy with the cached writes: they are in flight together, and a flush waits for all of them", async () => {
    const mem = new MemoryAsyncDisk(DISK);
    let inFlight = 0;
    let most = 0;
    const order: string[] = [];
    const disk: AsyncDisk = {
      size: DISK,
      read: (o, l, done) => mem.read(o, l, done),
      write(o, d, done) {
        most = Math.max(most, ++inFlight);
        mem.write(o, d, () => setTimeout(() => (inFlight--, order.push(`write ${o / SECTOR}`), done(undefined, undefined, undefined)), 2));
      },
      flush(done) {
        order.push(`flush issued with ${inFlight} writes in flight`);
        mem.flush(done);
      },
    };
    const a = new HdaAdapter(disk, { writeCache: 64 * SECTOR });
    a.reusedBuffer = () => false;
    let told = 0;
    for (let i = 0; i < 4; i++) a.set(i * SECTOR, new Uint8Array(SECTOR).fill(i + 1), () => told++);
    expect(told).toBe(4);
    await new Promise<void>((resolve) => a.flush(resolve));
    expect(most).toBe(4);
    expect(order).toEqual(["write 0", "write 1", "write 2", "write 3", "flush issued with 0 writes in flight"]);
  });

  it("settled() waits for the writes the guest saw complete, not for what the guest queues after", async () => {
    const mem = new MemoryAsyncDisk(DISK);
    const a = new HdaAdapter(delayedDisk(mem, [2]), { writeCache: 64 * SECTOR });
    a.reusedBuffer = () => false;
    for (let i = 0; i < 4; i++) a.set(i * SECTOR, new Uint8Array(SECTOR).fill(7), () => undefined);
    const settled = a.settled();
    a.set(100 * SECTOR, new Uint8Array(SECTOR).fill(8), () => undefined); // queued after the call
    await settled;
    expect(mem.counts.writes).toBeGreaterThanOrEqual(4);
    expect(mem.bytes.subarray(0, 4 * SECTOR).every((b) => b === 7)).toBe(true);
    expect(a.idle).toBe(false);
    await a.whenIdle();
    await a.settled(); // nothing queued: at once
  });
});
