/**
 * The chunk reader against a plain byte array: any sequence of reads (sequential runs, jumps, reads past
 * the end, reads larger than the memory bound) returns the array's bytes, never holds more than its bound,
 * and asks its source only for chunks that exist, each once per miss.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ChunkReader, type ChunkSource } from "../../src/io/chunk-reader.js";

function source(bytes: Uint8Array, chunkSize: number, log: { fetched: number[]; prefetched: number[] }): ChunkSource {
  const count = Math.ceil(bytes.length / chunkSize);
  return {
    fetch(indices) {
      for (const i of indices) if (i < 0 || i >= count) throw new Error(`chunk ${i} does not exist`);
      expect(new Set(indices).size).toBe(indices.length);
      log.fetched.push(...indices);
      return indices.map((i) => bytes.slice(i * chunkSize, (i + 1) * chunkSize));
    },
    prefetch(indices) {
      for (const i of indices) if (i < 0 || i >= count) throw new Error(`read-ahead of chunk ${i} that does not exist`);
      log.prefetched.push(...indices);
    },
  };
}

describe("ChunkReader", () => {
  it("reads what a byte array holds, within its memory bound", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.constantFrom(512, 1024, 4096),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 3 }),
        fc.array(fc.record({ sequential: fc.boolean(), offset: fc.nat(6000), length: fc.integer({ min: 0, max: 6000 }) }), { maxLength: 40 }),
        (size, chunkSize, memoryChunks, readAheadChunks, reads) => {
          const bytes = new Uint8Array(size).map((_, i) => (i * 31 + 7) & 0xff);
          const log = { fetched: [] as number[], prefetched: [] as number[] };
          const reader = new ChunkReader(size, source(bytes, chunkSize, log), { chunkSize, memoryBytes: memoryChunks * chunkSize, readAheadChunks });
          let next = 0;
          for (const r of reads) {
            const offset = r.sequential ? next : r.offset;
            const buf = new Uint8Array(r.length).fill(0xee);
            const n = reader.read(buf, offset);
            const want = new Uint8Array(r.length);
            want.set(bytes.subarray(Math.min(offset, size), Math.min(size, offset + r.length)));
            if (n !== Math.max(0, Math.min(size, offset + r.length) - offset)) throw new Error(`returned ${n}`);
            if (Buffer.compare(buf, want) !== 0) throw new Error(`read of ${r.length} at ${offset} differs`);
            if (reader.memoryInUse() > memoryChunks * chunkSize) throw new Error(`holds ${reader.memoryInUse()} bytes`);
            next = offset + r.length;
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("reads a repeated range from memory", () => {
    const bytes = new Uint8Array(10_000).map((_, i) => i & 0xff);
    const log = { fetched: [] as number[], prefetched: [] as number[] };
    const reader = new ChunkReader(bytes.length, source(bytes, 1024, log), { chunkSize: 1024, readAheadChunks: 0 });
    reader.read(new Uint8Array(3000), 500);
    reader.read(new Uint8Array(3000), 500);
    expect(log.fetched).toEqual([0, 1, 2, 3]);
  });

  it("refuses a bad chunk size", () => {
    expect(() => new ChunkReader(10, source(new Uint8Array(10), 512, { fetched: [], prefetched: [] }), { chunkSize: 100 })).toThrow(/invalid chunk size/);
  });
});
