/**
 * The slot chunk cache (the browser's OPFS chunk cache, src/io/slot-chunk-cache.ts) over an in-memory
 * stand-in for OPFS sync access handles that can "crash": writes not yet flushed are kept whole, torn at
 * any byte or lost, each independently. The real OPFS path runs in Chromium (test/web/os-remote.test.ts).
 *
 */
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { MemoryHandle } from "../helpers/memory-sync-handle.js";
import { SlotChunkCache } from "../../src/io/slot-chunk-cache.js";
import { crc32c } from "../../src/io/crc32c.js";

const SLOT = 1024;

/** Chunk `index` of object `obj`: its bytes are a function of both (and so is its length). */
function chunk(obj: number, index: number): Uint8Array {
  const length = index % 3 === 2 ? 700 : SLOT;
  return Uint8Array.from({ length }, (_, i) => (obj * 131 + index * 17 + i * 7 + ((i >> 8) ^ obj)) & 0xff);
}

const OBJECTS = ["http://a.test/base.qcow2", "http://b.test/raw.img"];
function store(cache: SlotChunkCache, obj: number) {
  return cache.forObject(OBJECTS[obj], `${obj}|"etag-${obj}"|`, SLOT)!;
}

describe("SlotChunkCache", () => {
  it("keeps chunks across a reopen, refuses a wrong length, and keys by URL, validator and chunk size", () => {
    const [data, index] = [new MemoryHandle(), new MemoryHandle()];
    let cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: 8 * SLOT });
    store(cache, 0).put(0, chunk(0, 0));
    store(cache, 0).put(2, chunk(0, 2));
    store(cache, 1).put(0, chunk(1, 0));
    cache.close();
    expect(data.closed && index.closed).toBe(true);
    cache = new SlotChunkCache(data.reopened(), index.reopened(), { slotSize: SLOT, maxBytes: 8 * SLOT });
    expect(store(cache, 0).get(0, SLOT)).toEqual(chunk(0, 0));
    expect(store(cache, 0).get(2, 700)).toEqual(chunk(0, 2));
    expect(store(cache, 1).get(0, SLOT)).toEqual(chunk(1, 0));
    expect(store(cache, 1).get(2, 700)).toBeUndefined();
    // Another validator or URL is another object; another chunk size is not cached here.
    expect(cache.forObject(OBJECTS[0], `0|"etag-changed"|`, SLOT)!.get(0, SLOT)).toBeUndefined();
    expect(cache.forObject(OBJECTS[0] + "?", `0|"etag-0"|`, SLOT)!.get(0, SLOT)).toBeUndefined();
    expect(cache.forObject(OBJECTS[0], `0|"etag-0"|`, 2 * SLOT)).toBeUndefined();
    // A length that does not match the entry reads as absent (and the entry is dropped).
    expect(store(cache, 0).get(0, 700)).toBeUndefined();
    expect(store(cache, 0).has(0)).toBe(false);
    expect(cache.stats.dropped).toBe(1);
  });

  it("evicts the least recently used chunk, across objects, and stays within its bound", () => {
    const [data, index] = [new MemoryHandle(), new MemoryHandle()];
    const cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: 3 * SLOT + 100 });
    expect(cache.slotCount).toBe(3);
    store(cache, 0).put(0, chunk(0, 0));
    store(cache, 1).put(0, chunk(1, 0));
    store(cache, 0).put(1, chunk(0, 1));
    expect(store(cache, 0).get(0, SLOT)).toEqual(chunk(0, 0)); // now the most recent
    store(cache, 1).put(1, chunk(1, 1)); // evicts object 1's chunk 0
    expect(store(cache, 1).has(0)).toBe(false);
    expect([store(cache, 0).has(0), store(cache, 0).has(1), store(cache, 1).has(1)]).toEqual([true, true, true]);
    expect(store(cache, 1).get(1, SLOT)).toEqual(chunk(1, 1));
    expect(data.getSize()).toBeLessThanOrEqual(3 * SLOT);
    expect(cache.stats.evictions).toBe(1);
    // Recency survives a reopen: chunk 1 of object 0 is now the oldest.
    cache.close();
    const again = new SlotChunkCache(data.reopened(), index.reopened(), { slotSize: SLOT, maxBytes: 3 * SLOT });
    store(again, 1).put(2, chunk(1, 2));
    expect(store(again, 0).has(1)).toBe(false);
    expect(store(again, 0).get(0, SLOT)).toEqual(chunk(0, 0));
  });

  it("a smaller bound keeps the chunks that fit; another slot size or a damaged header starts afresh", () => {
    const [data, index] = [new MemoryHandle(), new MemoryHandle()];
    const cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: 4 * SLOT });
    for (let i = 0; i < 4; i++) store(cache, 0).put(i, chunk(0, i));
    cache.close();
    const smaller = new SlotChunkCache(data.reopened(), index.reopened(), { slotSize: SLOT, maxBytes: 2 * SLOT });
    expect([0, 1, 2, 3].map((i) => store(smaller, 0).has(i))).toEqual([true, true, false, false]);
    expect(store(smaller, 0).get(1, SLOT)).toEqual(chunk(0, 1));
    smaller.close();
    const other = new SlotChunkCache(data.reopened(), index.reopened(), { slotSize: 2 * SLOT, maxBytes: 8 * SLOT });
    expect(other.bytesHeld()).toBe(0);
    other.close();
    const idx = index.reopened();
    idx.bytes[20] ^= 1; // the header's CRC no longer matches
    const reset = new SlotChunkCache(data.reopened(), idx, { slotSize: SLOT, maxBytes: 4 * SLOT });
    expect(reset.bytesHeld()).toBe(0);
  });

  it("never serves a changed payload or a forged entry", () => {
    const [data, index] = [new MemoryHandle(), new MemoryHandle()];
    const cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: 4 * SLOT });
    store(cache, 0).put(0, chunk(0, 0));
    store(cache, 0).put(1, chunk(0, 1));
    cache.close();
    const d = data.reopened();
    const x = index.reopened();
    // Slot 0's payload changed in place (its entry's CRC no longer matches it).
    d.bytes[100] ^= 0x40;
    // Slot 1's entry forged to claim another chunk, its own CRC recomputed but not the payload's.
    const entry = new DataView(x.bytes.buffer, 64 + 64, 64);
    entry.setFloat64(16, 5);
    entry.setUint32(60, crc32c(x.bytes.subarray(128, 188)));
    const reopened = new SlotChunkCache(d, x, { slotSize: SLOT, maxBytes: 4 * SLOT });
    expect(store(reopened, 0).get(0, SLOT)).toBeUndefined();
    expect(store(reopened, 0).get(1, SLOT)).toBeUndefined();
    expect(store(reopened, 0).get(5, SLOT)).toBeUndefined(); // the payload is chunk 1's, not chunk 5's
    expect(reopened.stats.dropped).toBe(2);
    // The dropped slots are free again and reused cleanly.
    store(reopened, 0).put(0, chunk(0, 0));
    expect(store(reopened, 0).get(0, SLOT)).toEqual(chunk(0, 0));
  });

  it("property: after any crash a chunk reads back whole or not at all; what was put and not evicted survives a clean close", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("put" as const), obj: fc.integer({ min: 0, max: 1 }), index: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("get" as const), obj: fc.integer({ min: 0, max: 1 }), index: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("crash" as const), fates: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 40 }) }),
      fc.record({ kind: fc.constant("reopen" as const), slots: fc.integer({ min: 1, max: 6 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        let data = new MemoryHandle();
        let index = new MemoryHandle();
        let slots = 4;
        let cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: slots * SLOT });
        /** Chunks that must be present: put since the last crash and not evicted (tracked in LRU order). */
        let sure: string[] = [];
        const touch = (name: string) => {
          sure = sure.filter((n) => n !== name);
          sure.push(name);
        };
        for (const o of ops) {
          if (o.kind === "put") {
            store(cache, o.obj).put(o.index, chunk(o.obj, o.index));
            touch(`${o.obj}:${o.index}`);
            if (sure.length > slots) sure.shift();
          } else if (o.kind === "get") {
            const want = chunk(o.obj, o.index);
            const got = store(cache, o.obj).get(o.index, want.length);
            if (got) {
              expect(got).toEqual(want);
              // Present now, and the most recently used.
              touch(`${o.obj}:${o.index}`);
            } else expect(sure).not.toContain(`${o.obj}:${o.index}`);
          } else if (o.kind === "crash") {
            // Each pending operation's fate: <0.33 lost, <0.66 torn at some byte, else whole.
            const fate = (i: number, length: number) => {
              const f = o.fates[i % o.fates.length];
              return f < 0.33 ? 0 : f < 0.66 ? Math.floor(((f - 0.33) / 0.33) * length) : length;
            };
            data = data.crashed(fate);
            index = index.crashed(fate);
            cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: slots * SLOT });
            // Every put flushed its entry before returning, so what was sure is still there... unless torn
            // by a later unflushed recency update: those read as absent, never wrong. Nothing is sure now.
            sure = [];
          } else {
            cache.close();
            data = data.reopened();
            index = index.reopened();
            const before = new Map(sure.map((n) => [n, true]));
            const shrunk = o.slots < slots;
            slots = o.slots;
            cache = new SlotChunkCache(data, index, { slotSize: SLOT, maxBytes: slots * SLOT });
            // A smaller bound keeps the chunks in the first slots, whichever they are: no loss is checked
            // only when the bound did not shrink.
            if (shrunk) sure = [];
            for (const n of before.keys()) if (sure.includes(n)) expect(store(cache, Number(n[0])).has(Number(n.slice(2)))).toBe(true);
          }
        }
        for (let obj = 0; obj < 2; obj++) {
          for (let i = 0; i < 8; i++) {
            const got = store(cache, obj).get(i, chunk(obj, i).length);
            if (got) expect(got).toEqual(chunk(obj, i));
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
