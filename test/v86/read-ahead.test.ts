import { describe, expect, it } from "vitest";
import fc from "fast-check";
import type { AsyncDisk, DiskDone, WriteData } from "../../src/disk/async-disk.js";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";
import { ReadAhead } from "../../src/v86/read-ahead.js";

const KiB = 1024;

/** Reads one request through `ra`, copying the answer inside its callback (the view is valid only there). */
function readVia(ra: ReadAhead, offset: number, length: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => ra.read(offset, length, (err, data) => (err ? reject(err) : resolve(data!.slice()))));
}

function writeVia(ra: ReadAhead, disk: AsyncDisk, offset: number, data: Uint8Array): Promise<void> {
  ra.written(offset, data.length);
  return new Promise((resolve, reject) => disk.write(offset, data, (err) => (err ? reject(err) : resolve())));
}

/** Byte-for-byte equality without a deep comparison of every element (which is slow for large arrays). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

function pattern(size: number, seed = 1): Uint8Array {
  const b = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** A disk served in call order whose reads of [badFrom, badTo) fail; counts the reads it serves. */
class FaultyDisk implements AsyncDisk {
  reads: Array<[number, number]> = [];
  constructor(
    private readonly inner: MemoryAsyncDisk,
    private readonly badFrom: number,
    private readonly badTo: number,
  ) {}
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number, done: DiskDone<Uint8Array>, background?: boolean, into?: Uint8Array): void {
    this.reads.push([offset, length]);
    if (offset < this.badTo && offset + length > this.badFrom) {
      queueMicrotask(() => done(new Error(`I/O error at ${offset}`), undefined, undefined));
      return;
    }
    this.inner.read(offset, length, done, background, into);
  }
  write(offset: number, data: WriteData, done: DiskDone): void {
    this.inner.write(offset, data, done);
  }
  flush(done: DiskDone): void {
    this.inner.flush(done);
  }
}

describe("ReadAhead", () => {
  it("answers a sequential reader from units read ahead, with the disk's bytes", async () => {
    const bytes = pattern(8 * 2 ** 20);
    const disk = new MemoryAsyncDisk(bytes.slice());
    const ra = new ReadAhead(disk, 1 * 2 ** 20);
    const len = 128 * KiB;
    for (let off = 0; off < 4 * 2 ** 20; off += len) {
      expect(same(await readVia(ra, off, len), bytes.subarray(off, off + len))).toBe(true);
    }
    // The first read goes to the disk; from the second on, every one is answered from read-ahead.
    expect(ra.hits).toBe(4 * 8 - 2);
    // Units never reach more than the window past the reader.
    expect(ra.aheadBytes).toBeLessThanOrEqual(2 ** 20 + len);
    // Each byte read from the disk once (plus the window left ahead at the end).
    expect(disk.counts.bytesRead).toBeLessThanOrEqual(4 * 2 ** 20 + 2 ** 20 + len);
  });

  it("never answers with data a write ordered before the read changed", async () => {
    const disk = new MemoryAsyncDisk(pattern(2 ** 20));
    const ra = new ReadAhead(disk, 256 * KiB);
    await readVia(ra, 0, 64 * KiB);
    await readVia(ra, 64 * KiB, 64 * KiB); // units now cover [128K, 384K)
    const fresh = new Uint8Array(4 * KiB).fill(0xab);
    await writeVia(ra, disk, 200 * KiB, fresh);
    const got = await readVia(ra, 128 * KiB, 128 * KiB);
    expect(same(got.subarray(72 * KiB, 76 * KiB), fresh)).toBe(true);
  });

  it("is a plain byte array to any sequence of reads and writes (model check)", async () => {
    const size = 512 * KiB;
    const op = fc.oneof(
      fc.record({ kind: fc.constant("read" as const), sector: fc.nat(size / 512 - 1), sectors: fc.integer({ min: 1, max: 96 }), seq: fc.boolean() }),
      fc.record({ kind: fc.constant("write" as const), sector: fc.nat(size / 512 - 1), sectors: fc.integer({ min: 1, max: 32 }), fill: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("clear" as const) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), fc.integer({ min: 1, max: 8 }), async (ops, windowSectors) => {
        const model = pattern(size, 7);
        const disk = new MemoryAsyncDisk(model.slice());
        const ra = new ReadAhead(disk, windowSectors * 16 * KiB);
        let lastEnd = 0;
        for (const o of ops) {
          if (o.kind === "clear") {
            ra.clear();
            continue;
          }
          // A sequential read starts where the last one ended (most of a guest's reads, when `seq`).
          const start = o.kind === "read" && o.seq ? lastEnd : o.sector * 512;
          const length = Math.min(o.sectors * 512, size - start);
          if (length <= 0) continue;
          if (o.kind === "read") {
            expect(same(await readVia(ra, start, length), model.subarray(start, start + length))).toBe(true);
            lastEnd = start + length;
          } else {
            const data = new Uint8Array(length).fill(o.fill);
            model.set(data, start);
            await writeVia(ra, disk, start, data);
          }
        }
      }),
      { numRuns: 200 },
    );
  });

  it("sends a read whose unit failed to the disk itself: an error only for the data asked for", async () => {
    const bytes = pattern(2 ** 20);
    const disk = new FaultyDisk(new MemoryAsyncDisk(bytes.slice()), 300 * KiB, 304 * KiB);
    const ra = new ReadAhead(disk, 256 * KiB);
    await readVia(ra, 0, 128 * KiB);
    await readVia(ra, 128 * KiB, 128 * KiB);
    // [256K, 384K) was read ahead as one unit, which failed; the read of [256K, 296K) is sent to the disk and succeeds.
    expect(same(await readVia(ra, 256 * KiB, 40 * KiB), bytes.subarray(256 * KiB, 296 * KiB))).toBe(true);
    await expect(readVia(ra, 296 * KiB, 8 * KiB)).rejects.toThrow(/I\/O error/);
    expect(same(await readVia(ra, 304 * KiB, 64 * KiB), bytes.subarray(304 * KiB, 368 * KiB))).toBe(true);
  });

  it("answers a read waiting for a unit when clear() drops it (a restored machine state)", async () => {
    const bytes = pattern(2 ** 20);
    const disk = new MemoryAsyncDisk(bytes.slice(), 5);
    const ra = new ReadAhead(disk, 256 * KiB);
    await readVia(ra, 0, 64 * KiB);
    await readVia(ra, 64 * KiB, 64 * KiB);
    const waiting = readVia(ra, 128 * KiB, 64 * KiB); // its unit is still in flight (5 ms disk)
    ra.clear();
    expect(same(await waiting, bytes.subarray(128 * KiB, 192 * KiB))).toBe(true);
  });

  it("reads nothing ahead of a reader that jumps about", async () => {
    const disk = new MemoryAsyncDisk(pattern(2 ** 20));
    const ra = new ReadAhead(disk, 256 * KiB);
    for (const off of [4096, 0, 64 * KiB, 8192, 900 * KiB]) await readVia(ra, off, 512);
    expect(ra.unitsIssued).toBe(0);
    expect(disk.counts.reads).toBe(5);
  });
});
