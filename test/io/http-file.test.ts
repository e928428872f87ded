/**
 * The HTTP block file against a local server with fault injection: same bytes as the file, bounded memory,
 * read-ahead, retries, pinning, refusals, and the persistent chunk cache (a second open fetches no chunk,
 * a damaged chunk is fetched again).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpFile, type HttpFileOptions } from "../../src/io/http-file.js";
import { IoError } from "../../src/io/block-file.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { tempDir } from "../helpers/qemu.js";

const CHUNK = 64 * 1024;
const SIZE = 40 * CHUNK + 1234; // a short last chunk

let dir: string;
let server: TestHttpServer;
let content: Buffer;

beforeAll(async () => {
  dir = tempDir("http-file");
  const words = Buffer.alloc(SIZE + 4);
  for (let i = 0; i < SIZE; i += 4) words.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, i);
  content = words.subarray(0, SIZE);
  fs.writeFileSync(path.join(dir, "blob.bin"), content);
  server = await startHttpServer(dir);
});

afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function open(opts: HttpFileOptions = {}, name = "blob.bin"): HttpFile {
  return HttpFile.open(server.url(name), { chunkSize: CHUNK, cacheDir: false, backoffMs: 5, timeoutMs: 2000, log: () => {}, ...opts });
}

function readAt(f: HttpFile, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  f.read(buf, offset);
  return buf;
}

describe("HttpFile", () => {
  it("reads the file's bytes at any offset and length, zeroes past the end, within its memory bound", () => {
    const f = open({ memoryBytes: 4 * CHUNK });
    try {
      expect(f.size()).toBe(SIZE);
      expect(f.readOnly).toBe(true);
      let seed = 7;
      const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
      for (let k = 0; k < 60; k++) {
        const offset = rand(SIZE);
        const length = 1 + rand(3 * CHUNK);
        const got = readAt(f, offset, length);
        const want = Buffer.alloc(length);
        content.copy(want, 0, offset, Math.min(SIZE, offset + length));
        expect(got.equals(want)).toBe(true);
        expect(f.memoryInUse()).toBeLessThanOrEqual(4 * CHUNK);
      }
      expect(readAt(f, SIZE + 10, 100).every((b) => b === 0)).toBe(true);
    } finally {
      f.close();
    }
  });

  it("reads ahead of a sequential reader, several requests in flight", async () => {
    const f = open({ readAheadChunks: 4 });
    try {
      await server.stats(true);
      for (let off = 0; off < 8 * CHUNK; off += CHUNK / 2) readAt(f, off, CHUNK / 2);
      // Chunks past the last one read were asked for ahead (in the background: wait for them to arrive).
      const ahead = async () => (await server.stats()).ranges.filter(([, first]) => first >= 8 * CHUNK).length;
      for (let i = 0; i < 400 && (await ahead()) < 4; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await ahead()).toBe(4);
      // Read ahead chunks are served without asking the server again. (Reading them moves the read-ahead on,
      // so requests for chunks past them may follow: only those for the four chunks read count.)
      const forRead = async () => (await server.stats()).ranges.filter(([, first]) => first >= 8 * CHUNK && first < 12 * CHUNK).length;
      const before = await forRead();
      readAt(f, 8 * CHUNK, 4 * CHUNK);
      expect(await forRead()).toBe(before);
    } finally {
      f.close();
    }
  });

  it("refuses writes in one line", () => {
    const f = open();
    try {
      expect(() => f.write(new Uint8Array(1), 0)).toThrow(/remote image is read-only/);
    } finally {
      f.close();
    }
  });

  it("follows redirects", () => {
    const f = open({}, "redirect/blob.bin");
    try {
      expect(readAt(f, CHUNK - 10, 20).equals(content.subarray(CHUNK - 10, CHUNK + 10))).toBe(true);
    } finally {
      f.close();
    }
  });

  it("retries transient failures: 500, reset, truncated body, timeout", async () => {
    for (const fault of [{ status: 503 }, { reset: true }, { truncate: 100 }, { delayMs: 600 }]) {
      const f = open({ timeoutMs: 300 });
      try {
        await server.configure({ faults: [{ ...fault, from: 1, times: 2 }] });
        expect(readAt(f, 5 * CHUNK, 100).equals(content.subarray(5 * CHUNK, 5 * CHUNK + 100))).toBe(true);
        expect(f.wireStats().retries).toBe(2);
      } finally {
        f.close();
        await server.configure({ faults: [] });
      }
    }
  });

  it("a failed read is an IoError for that request, said once, and a later read retries", async () => {
    const lines: string[] = [];
    const f = open({ retries: 1, log: (l) => lines.push(l) });
    try {
      await server.configure({ faults: [{ status: 404, from: 1 }] });
      expect(() => readAt(f, 3 * CHUNK, 10)).toThrow(IoError);
      expect(() => readAt(f, 3 * CHUNK, 10)).toThrow(/404/);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(server.url("blob.bin"));
      expect(lines[0]).toMatch(/bytes \d+-\d+/);
      await server.configure({ faults: [] });
      expect(readAt(f, 3 * CHUNK, 10).equals(content.subarray(3 * CHUNK, 3 * CHUNK + 10))).toBe(true);
    } finally {
      f.close();
    }
  });

  it("refuses a server without Range support, or answering the wrong range", async () => {
    await server.configure({ faults: [{ noRange: true }] });
    expect(() => open()).toThrow(/does not support Range requests/);
    await server.configure({ faults: [{ wrongRange: true, from: 1 }] });
    const f = open();
    try {
      expect(() => readAt(f, 2 * CHUNK, 10)).toThrow(/wrong range/);
    } finally {
      f.close();
      await server.configure({ faults: [] });
    }
    expect(() => open({}, "missing.bin")).toThrow(/404/);
  });

  it("refuses an object that changed since it was opened, naming the URL and what changed", async () => {
    const f = open();
    try {
      readAt(f, 0, 10);
      await server.configure({ etags: { "/blob.bin": '"changed"' } });
      expect(() => readAt(f, 20 * CHUNK, 10)).toThrow(new RegExp(`${server.url("blob.bin")} changed since it was opened \\(ETag .* -> "changed"\\)`));
    } finally {
      f.close();
      await server.configure({ etags: {} });
    }
  });

  it("keeps chunks in the persistent cache: a second open fetches none, a damaged chunk is fetched again", async () => {
    const cacheDir = path.join(dir, "cache");
    const first = open({ cacheDir });
    readAt(first, 0, SIZE);
    first.close();
    await server.stats(true);
    const second = open({ cacheDir });
    try {
      expect(readAt(second, 0, SIZE).equals(content)).toBe(true);
      expect(second.wireStats().storeHits).toBeGreaterThanOrEqual(41);
      const s = await server.stats(true);
      expect(s).toEqual({ requests: 1, bytes: 1, ranges: [["/blob.bin", 0, 0]] }); // the open's probe only
    } finally {
      second.close();
    }
    // Damage one chunk's payload: it reads as absent and comes from the server again.
    const [key] = fs.readdirSync(cacheDir);
    const victim = path.join(cacheDir, key, "3.chunk");
    const bytes = fs.readFileSync(victim);
    bytes[100] ^= 0xff;
    fs.writeFileSync(victim, bytes);
    const third = open({ cacheDir });
    try {
      expect(readAt(third, 3 * CHUNK, CHUNK).equals(content.subarray(3 * CHUNK, 4 * CHUNK))).toBe(true);
      const s = await server.stats(true);
      expect(s.ranges).toEqual([["/blob.bin", 0, 0], ["/blob.bin", 3 * CHUNK, 4 * CHUNK - 1]]);
    } finally {
      third.close();
    }
  });

  it("bounds the persistent cache, least recently used chunks evicted", () => {
    const cacheDir = path.join(dir, "small-cache");
    const f = open({ cacheDir, cacheBytes: 10 * CHUNK, readAheadChunks: 0 });
    try {
      for (let off = 0; off < SIZE; off += CHUNK) readAt(f, off, CHUNK);
    } finally {
      f.close();
    }
    const [key] = fs.readdirSync(cacheDir);
    const files = fs.readdirSync(path.join(cacheDir, key)).filter((n) => n.endsWith(".chunk"));
    const total = files.reduce((n, name) => n + fs.statSync(path.join(cacheDir, key, name)).size, 0);
    expect(total).toBeLessThanOrEqual(10 * CHUNK);
    expect(files).toContain("40.chunk"); // the most recent survives
  });
});
