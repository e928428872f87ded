/**
 * The chunk store seam (src/io/chunk-store.ts): Node's chunk service (the fetch side, asynchronous) takes
 * the browser's slot cache (synchronous) as it takes the chunk folder, over a real local HTTP server whose
 * counters are the oracle: the second service fetches nothing, and a damaged chunk is fetched again.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChunkService } from "../../src/io/chunk-service.js";
import { openHttpObject } from "../../src/io/http-fetch.js";
import { objectValidator } from "../../src/io/http-object.js";
import { SlotChunkCache } from "../../src/io/slot-chunk-cache.js";
import { MemoryHandle } from "../helpers/memory-sync-handle.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";

const CHUNK = 64 * 1024;
const SIZE = 5 * CHUNK + 1000;
const content = Buffer.from(Uint8Array.from({ length: SIZE }, (_, i) => (i * 13 + (i >> 10)) & 0xff));

describe("the chunk store seam", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-seam-"));
  let server: TestHttpServer;

  beforeAll(async () => {
    fs.writeFileSync(path.join(dir, "obj.raw"), content);
    server = await startHttpServer(dir);
  });

  afterAll(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("Node's chunk service fills and reads the slot cache", async () => {
    const [data, index] = [new MemoryHandle(), new MemoryHandle()];
    const indices = [0, 1, 2, 3, 4, 5];
    const want = indices.map((i) => content.subarray(i * CHUNK, Math.min(SIZE, (i + 1) * CHUNK)));
    const serve = async (cache: SlotChunkCache) => {
      const obj = await openHttpObject(server.url("obj.raw"));
      const service = new ChunkService(obj, { chunkSize: CHUNK, store: cache.forObject(obj.url, objectValidator(obj), CHUNK) });
      const got = await service.get(indices);
      got.forEach((c, k) => expect(Buffer.from(c).equals(want[k])).toBe(true));
      return service.stats.storeHits;
    };
    await server.stats(true);
    let cache = new SlotChunkCache(data, index, { slotSize: CHUNK, maxBytes: 8 * CHUNK });
    expect(await serve(cache)).toBe(0);
    expect((await server.stats(true)).bytes).toBeGreaterThanOrEqual(SIZE);
    cache.close();
    cache = new SlotChunkCache(data.reopened(), index.reopened(), { slotSize: CHUNK, maxBytes: 8 * CHUNK });
    expect(await serve(cache)).toBe(6);
    // Only the probe went over the wire.
    expect((await server.stats(true)).ranges.every(([, a, b]) => a === 0 && b === 0)).toBe(true);
    cache.close();
    const damaged = data.reopened();
    damaged.bytes[2 * CHUNK + 5] ^= 0x80;
    cache = new SlotChunkCache(damaged, index.reopened(), { slotSize: CHUNK, maxBytes: 8 * CHUNK });
    expect(await serve(cache)).toBe(5);
    expect((await server.stats(true)).ranges.filter(([, a]) => a !== 0).map(([, a, b]) => [a, b])).toEqual([[2 * CHUNK, 3 * CHUNK - 1]]);
  });
});
