/**
 * The browser's HTTP file with a stand-in for a Worker's synchronous XMLHttpRequest (serving a byte array
 * with the Range semantics of RFC 9110, plus faults): the same bytes as the array, retries of transient
 * failures, refusals of a server without Range support and of a changed object.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import path from "node:path";
import { createBundler } from "../../src/cli/web-server.js";
import { describe, expect, it } from "vitest";
import { openWebHttpFile, type SyncXhr } from "../../src/io/http-file-web.js";
import { type HttpObject, objectValidator } from "../../src/io/http-object.js";
import { type PinRecord, pinRefusal } from "../../src/open/pin-record.js";
import { SlotChunkCache } from "../../src/io/slot-chunk-cache.js";
import { MemoryHandle } from "../helpers/memory-sync-handle.js";

const SIZE = 300_000;
const data = new Uint8Array(SIZE).map((_, i) => (i * 7 + (i >> 9)) & 0xff);

interface Server {
  etag: string;
  noRange?: boolean;
  /** Statuses to answer before serving normally. */
  failures: number[];
  requests: string[];
}

function xhrFor(server: Server): () => SyncXhr {
  return () => {
    const headers: Record<string, string> = {};
    const answer: Record<string, string> = {};
    const xhr = {
      responseType: "" as XMLHttpRequestResponseType,
      timeout: 0,
      status: 0,
      response: null as unknown,
      responseURL: "",
      open(_m: string, url: string) {
        xhr.responseURL = url;
      },
      setRequestHeader(name: string, value: string) {
        headers[name.toLowerCase()] = value;
      },
      getResponseHeader: (name: string) => answer[name.toLowerCase()] ?? null,
      send() {
        server.requests.push(headers.range ?? "");
        const failure = server.failures.shift();
        if (failure !== undefined) {
          xhr.status = failure;
          xhr.response = new ArrayBuffer(0);
          return;
        }
        answer.etag = server.etag;
        const m = /^bytes=(\d+)-(\d+)$/.exec(headers.range ?? "");
        if (!m || server.noRange) {
          xhr.status = 200;
          xhr.response = data.slice().buffer;
          return;
        }
        const [a, b] = [Number(m[1]), Math.min(SIZE - 1, Number(m[2]))];
        xhr.status = 206;
        answer["content-range"] = `bytes ${a}-${b}/${SIZE}`;
        xhr.response = data.slice(a, b + 1).buffer;
      },
    };
    return xhr;
  };
}

describe("openWebHttpFile (synchronous XHR in a Worker)", () => {
  it("reads the object's bytes through the chunk reader, retrying transient failures", () => {
    const server: Server = { etag: '"v1"', failures: [], requests: [] };
    const f = openWebHttpFile("https://example.test/disk.raw", { newXhr: xhrFor(server), chunkSize: 64 * 1024, backoffMs: 1 });
    expect(f.size()).toBe(SIZE);
    for (const [off, len] of [[0, 100], [65_000, 70_000], [SIZE - 10, 50], [123_456, 1]]) {
      const buf = new Uint8Array(len);
      f.read(buf, off);
      const want = new Uint8Array(len);
      want.set(data.subarray(off, Math.min(SIZE, off + len)));
      expect(buf).toEqual(want);
    }
    server.failures.push(503, 500);
    const buf = new Uint8Array(10);
    f.read(buf, 200_000);
    expect(buf).toEqual(data.subarray(200_000, 200_010));
    const g = openWebHttpFile("https://example.test/disk.raw", { newXhr: xhrFor(server), chunkSize: 64 * 1024, log: () => {} });
    server.failures.push(404);
    expect(() => g.read(new Uint8Array(10), 140_000)).toThrow(/404/);
    g.read(buf, 140_000);
    expect(buf).toEqual(data.subarray(140_000, 140_010));
  });

  it("refuses a server without Range support and an object that changed", () => {
    expect(() => openWebHttpFile("https://example.test/disk.raw", { newXhr: xhrFor({ etag: '"v1"', noRange: true, failures: [], requests: [] }) })).toThrow(
      /does not support Range requests/,
    );
    const server: Server = { etag: '"v1"', failures: [], requests: [] };
    const f = openWebHttpFile("https://example.test/disk.raw", { newXhr: xhrFor(server), chunkSize: 64 * 1024, log: () => {} });
    server.etag = '"v2"';
    expect(() => f.read(new Uint8Array(10), 0)).toThrow(/changed since it was opened \(ETag "v1" -> "v2"\)/);
  });
});

describe("openWebHttpFile with a persistent store and read-ahead", () => {
  const CHUNK = 16 * 1024;
  const url = "https://example.test/disk.raw";

  function readAll(f: { read(buf: Uint8Array, offset: number): number }, step: number): void {
    for (let off = 0; off < SIZE; off += step) {
      const buf = new Uint8Array(Math.min(step, SIZE - off));
      f.read(buf, off);
      expect(buf).toEqual(data.subarray(off, off + buf.length));
    }
  }

  it("a sequential reader gets the next chunks in the same request; a second open is served by the store", () => {
    const [d, x] = [new MemoryHandle(), new MemoryHandle()];
    let cache = new SlotChunkCache(d, x, { slotSize: CHUNK, maxBytes: 64 * CHUNK });
    const server: Server = { etag: '"v1"', failures: [], requests: [] };
    const opts = { newXhr: xhrFor(server), chunkSize: CHUNK, readAheadChunks: 4, store: (o: Parameters<typeof objectValidator>[0], size: number) => cache.forObject(o.url, objectValidator(o), size) };
    readAll(openWebHttpFile(url, opts), 4096);
    const chunks = Math.ceil(SIZE / CHUNK);
    // The probe, then far fewer requests than chunks (read-ahead folded into demand requests), each in order.
    const first = server.requests.length;
    expect(first).toBeLessThanOrEqual(1 + Math.ceil(chunks / 4) + 2);
    const spans = server.requests.slice(1).map((r) => /bytes=(\d+)-(\d+)/.exec(r)!.slice(1).map(Number));
    expect(spans.reduce((n, [a, b]) => n + b - a + 1, 0)).toBe(SIZE);
    cache.close();
    // A second "page load": the store holds every chunk; only the probe goes to the server.
    cache = new SlotChunkCache(d.reopened(), x.reopened(), { slotSize: CHUNK, maxBytes: 64 * CHUNK });
    readAll(openWebHttpFile(url, opts), 10_000);
    expect(server.requests.length - first).toBe(1);
    expect(cache.stats.hits).toBe(chunks);
    // A damaged chunk is fetched again, not served.
    cache.close();
    const damaged = d.reopened();
    damaged.bytes[5 * CHUNK + 77] ^= 1;
    cache = new SlotChunkCache(damaged, x.reopened(), { slotSize: CHUNK, maxBytes: 64 * CHUNK });
    const before = server.requests.length;
    readAll(openWebHttpFile(url, opts), 8192);
    expect(server.requests.slice(before + 1)).toEqual([`bytes=${5 * CHUNK}-${6 * CHUNK - 1}`]);
    expect(cache.stats.dropped).toBe(1);
    // Another version of the object does not meet the old chunks.
    server.etag = '"v2"';
    const again = server.requests.length;
    readAll(openWebHttpFile(url, opts), 65536);
    expect(server.requests.length - again).toBeGreaterThan(1);
  });

  it("refuses another version than the one an overlay was made over, naming what changed", () => {
    const server: Server = { etag: '"v2"', failures: [], requests: [] };
    const over = (pin: PinRecord) => ({ newXhr: xhrFor(server), refuse: (o: HttpObject) => pinRefusal([pin], o, "remote-1.qcow2") });
    expect(() => openWebHttpFile(url, over({ url, size: SIZE, etag: '"v1"' }))).toThrow(
      /disk.raw changed since the overlay remote-1.qcow2 was made over it \(ETag "v1" -> "v2"\)/,
    );
    expect(() => openWebHttpFile(url, over({ url, size: SIZE + 1, etag: '"v2"' }))).toThrow(/size 300001 -> 300000/);
    expect(openWebHttpFile(url, over({ url, size: SIZE, etag: '"v2"' })).size()).toBe(SIZE);
    // A record of another URL says nothing about this one.
    expect(openWebHttpFile(url, over({ url: url + "x", size: 1, etag: '"v1"' })).size()).toBe(SIZE);
  });

  it("a store that fails is reported once and the bytes are still served", () => {
    const server: Server = { etag: '"v1"', failures: [], requests: [] };
    const lines: string[] = [];
    const broken = { get: () => undefined, has: () => false, put: () => { throw new Error("QuotaExceededError"); } };
    readAll(openWebHttpFile(url, { newXhr: xhrFor(server), chunkSize: CHUNK, store: () => broken, log: (l) => lines.push(l) }), 30_000);
    expect(lines).toEqual([`refcow: the chunk cache failed for ${url}: QuotaExceededError`]);
  });
});

describe("the browser worker with remote backing files", () => {
  it("the worker bundle (as the page server builds it) takes the browser's HTTP file", async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-web-bundle-"));
    const bundler = await createBundler(out);
    try {
      const worker = fs.readFileSync(path.join(out, "web-worker.js"), "utf8");
      expect(worker).toContain("the request failed (network error, timeout or CORS refusal)");
      expect(worker).not.toMatch(/from\s*["']node:/);
    } finally {
      await bundler.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);
});
