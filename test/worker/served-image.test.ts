/**
 * Images served from real worker threads (piscina, the compiled worker in dist/ built by `pretest`) through
 * the request ring, checked against the in-process engine.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClosedError, RequestError } from "../../src/engine/errors.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { NodeFile } from "../../src/io/node-file.js";
import { closeAllWorkers, DiskClient, ImageLockError, ImagePool, openServedImage, WorkerError } from "../../src/worker/index.js";
import type { RequestTiming } from "../../src/worker/ring-client.js";

const MiB = 1024 * 1024;
let dir: string;
const pool = new ImagePool();

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-worker-test-"));
});
afterAll(async () => {
  await pool.destroy();
  await closeAllWorkers();
  fs.rmSync(dir, { recursive: true, force: true });
});

let counter = 0;
function newImageFile(size = 8 * MiB, clusterSize = 65536): string {
  const p = path.join(dir, `img-${counter++}.qcow2`);
  const f = NodeFile.open(p, { create: true });
  Qcow2Image.create(f, { size, clusterSize });
  f.close();
  return p;
}

function oracleImage(size = 8 * MiB, clusterSize = 65536): Qcow2Image {
  const f = new MemoryFile();
  Qcow2Image.create(f, { size, clusterSize });
  return Qcow2Image.open(f);
}

/** The whole virtual disk of the image file at `p`, read in-process. */
function readFile(p: string): Uint8Array {
  const img = Qcow2Image.open(NodeFile.open(p, { readOnly: true }), { readOnly: true });
  try {
    return img.read(0, img.size);
  } finally {
    img.close();
  }
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed + 1) * 2654435761;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

type Logged =
  | { kind: "write"; offset: number; data: Uint8Array }
  | { kind: "read"; offset: number; length: number; result?: Uint8Array }
  | { kind: "zero"; offset: number; length: number }
  | { kind: "discard"; offset: number; length: number }
  | { kind: "flush" };

/**
 * `callers` async callers hammer `client` concurrently. Each request is logged when it is made, which is the
 * order the ring serves them in.
 */
async function hammer(client: DiskClient, callers: number, perCaller: number, seed: number): Promise<Logged[]> {
  const log: Logged[] = [];
  const size = client.size;
  const one = async (c: number) => {
    const rand = rng(seed * 131 + c);
    for (let i = 0; i < perCaller; i++) {
      const r = rand();
      const length = 1 + Math.floor(rand() * 300_000); // up to ~300 KiB: many requests span several slots
      const offset = Math.floor(rand() * (size - length));
      if (r < 0.45) {
        const data = pattern(length, seed * 1000 + c * 100 + i);
        log.push({ kind: "write", offset, data });
        await client.write(offset, data);
      } else if (r < 0.85) {
        const entry: Logged = { kind: "read", offset, length };
        log.push(entry);
        entry.result = await client.read(offset, length);
      } else if (r < 0.92) {
        log.push({ kind: "zero", offset, length });
        await client.writeZeroes(offset, length);
      } else if (r < 0.97) {
        log.push({ kind: "discard", offset, length });
        await client.discard(offset, length);
      } else {
        log.push({ kind: "flush" });
        await client.flush();
      }
    }
  };
  await Promise.all(Array.from({ length: callers }, (_, c) => one(c)));
  return log;
}

/** Replays the log in-process; every read must return what the served image returned. */
function replay(log: Logged[], oracle: Qcow2Image): void {
  for (const e of log) {
    switch (e.kind) {
      case "write":
        oracle.write(e.offset, e.data);
        break;
      case "read":
        expect(Buffer.from(e.result!).equals(Buffer.from(oracle.read(e.offset, e.length)))).toBe(true);
        break;
      case "zero":
        oracle.writeZeroes(e.offset, e.length);
        break;
      case "discard":
        oracle.discard(e.offset, e.length);
        break;
      case "flush":
        oracle.flush();
        break;
    }
  }
}

describe("served images", () => {
  it("serves concurrent callers on one image with the in-process engine's bytes", async () => {
    const p = newImageFile();
    const client = await pool.open(p);
    expect(client.size).toBe(8 * MiB);
    const log = await hammer(client, 5, 40, 1);
    const oracle = oracleImage();
    replay(log, oracle);
    await client.close();
    expect(Buffer.from(readFile(p)).equals(Buffer.from(oracle.read(0, oracle.size)))).toBe(true);
  });

  it("serves several images at once, each from its own thread", async () => {
    const files = [newImageFile(), newImageFile(4 * MiB, 4096), newImageFile()];
    const clients = await Promise.all(files.map((f, i) => pool.open(f, { cache: i === 1 ? "writethrough" : "writeback" })));
    expect(new Set(clients.map((c) => c.serverId)).size).toBe(3);
    expect(pool.openImages).toBe(3);
    const logs = await Promise.all(clients.map((c, i) => hammer(c, 3, 25, 10 + i)));
    await Promise.all(clients.map((c) => c.close()));
    files.forEach((f, i) => {
      const oracle = i === 1 ? oracleImage(4 * MiB, 4096) : oracleImage();
      replay(logs[i], oracle);
      expect(Buffer.from(readFile(f)).equals(Buffer.from(oracle.read(0, oracle.size)))).toBe(true);
    });
  });

  it("splits a request larger than the whole data area instead of failing", async () => {
    const p = newImageFile();
    // 2 slots of 4 KiB: an 8 KiB data area.
    const client = await pool.open(p, { ring: { slots: 2, slotDataBytes: 4096 } });
    const data = pattern(3 * MiB + 777, 5);
    const t = await timedWrite(client, 12345, data);
    expect(t.chunks).toBe(Math.ceil((12345 + data.length) / 4096) - Math.floor(12345 / 4096));
    expect(Buffer.from(await client.read(12345, data.length)).equals(Buffer.from(data))).toBe(true);
    const state = pattern(100_000, 6);
    await client.snapshotCreate("big-state", { vmState: state });
    expect(Buffer.from(await client.readVmState("big-state")).equals(Buffer.from(state))).toBe(true);
    await client.close();
    const back = readFile(p);
    expect(Buffer.from(back.subarray(12345, 12345 + data.length)).equals(Buffer.from(data))).toBe(true);
  });

  it("rejects out-of-range requests clearly and loses nothing written before", async () => {
    const p = newImageFile();
    const client = await pool.open(p);
    const data = pattern(65536, 9);
    await client.write(0, data);
    const size = client.size;
    await expect(client.read(size, 1)).rejects.toBeInstanceOf(RequestError);
    await expect(client.write(size - 100, new Uint8Array(4096))).rejects.toThrow(/past the end of the disk \(8388608 bytes\)/);
    await expect(client.writeZeroes(-1, 10)).rejects.toThrow(/invalid offset -1/);
    await expect(client.read(0, 1.5)).rejects.toThrow(/invalid length/);
    expect(Buffer.from(await client.read(0, 65536)).equals(Buffer.from(data))).toBe(true);
    await client.close();
    expect(Buffer.from(readFile(p).subarray(0, 65536)).equals(Buffer.from(data))).toBe(true);
  });

  it("reports engine errors from the worker (read-only image, unknown snapshot, missing file)", async () => {
    const p = newImageFile();
    const ro = await pool.open(p, { readOnly: true });
    expect(ro.readOnly).toBe(true);
    await expect(ro.write(0, new Uint8Array(512))).rejects.toThrow(/read-only/);
    await ro.close();
    const rw = await pool.open(p);
    await expect(rw.snapshotApply("missing")).rejects.toMatchObject({ name: "SnapshotError" });
    await rw.close();
    await expect(pool.open(path.join(dir, "no-such.qcow2"))).rejects.toThrow(/Could not open/);
  });

  it("refuses a second owner of an image, as QEMU's image locking does", async () => {
    const p = newImageFile();
    const a = await pool.open(p);
    await expect(pool.open(p)).rejects.toBeInstanceOf(ImageLockError);
    await expect(pool.open(p)).rejects.toThrow(/Failed to get "write" lock/);
    await expect(pool.open(path.join(dir, ".", path.basename(p)), { readOnly: true })).rejects.toThrow(/Failed to get shared "write" lock/);
    await a.close();
    const r1 = await pool.open(p, { readOnly: true });
    const r2 = await pool.open(p, { readOnly: true });
    await expect(pool.open(p)).rejects.toThrow(/already open read-only/);
    await Promise.all([r1.close(), r2.close()]);
    const b = await pool.open(p);
    await b.close();
  });

  it("rejects requests after close, flushes on close, and reopens with the data", async () => {
    const p = newImageFile();
    const client = await pool.open(p);
    const data = pattern(200_000, 3);
    const w = client.write(4096, data); // in flight when close is called
    const closing = client.close();
    await expect(client.read(0, 10)).rejects.toBeInstanceOf(ClosedError);
    await w;
    await closing;
    await expect(client.flush()).rejects.toThrow(/has been closed/);
    await expect(client.close()).resolves.toBeUndefined();
    const again = await pool.open(p);
    expect(Buffer.from(await again.read(4096, data.length)).equals(Buffer.from(data))).toBe(true);
    await again.close();
  });

  it("a killed worker fails its own image's requests and no other image's", async () => {
    const pa = newImageFile();
    const pb = newImageFile();
    const a = await pool.open(pa, { cache: "writethrough" });
    const b = await pool.open(pb);
    const before = pattern(100_000, 1);
    await a.write(0, before);
    await b.write(0, before);
    // Many writes in flight or queued, to distinct places, when the worker is killed.
    const writes = Array.from({ length: 64 }, (_, i) => ({ offset: MiB + i * 65536, data: pattern(65536, 100 + i) }));
    const pending = writes.map((w) => a.write(w.offset, w.data));
    const worker = pool.workerOf(a);
    expect(worker).toBeDefined();
    await worker!.terminate();
    const settled = await Promise.allSettled(pending);
    // 64 writethrough writes (a flush each) cannot all be done before terminate() takes effect.
    expect(settled.some((s) => s.status === "rejected")).toBe(true);
    for (const s of settled) {
      if (s.status === "rejected") {
        expect(s.reason).toBeInstanceOf(WorkerError);
        expect(String(s.reason.message)).toMatch(/worker serving .* died/);
      }
    }
    await expect(a.read(0, 10)).rejects.toThrow(/worker serving .* died/);
    await expect(a.close()).rejects.toBeInstanceOf(WorkerError);
    // The other image is untouched.
    expect(Buffer.from(await b.read(0, before.length)).equals(Buffer.from(before))).toBe(true);
    await b.write(200_000, before);
    await b.close();
    // The killed image can be opened again; every write acknowledged before the kill is there (writethrough).
    const again = await pool.open(pa);
    expect(Buffer.from(await again.read(0, before.length)).equals(Buffer.from(before))).toBe(true);
    for (let i = 0; i < writes.length; i++) {
      if (settled[i].status === "fulfilled") {
        expect(Buffer.from(await again.read(writes[i].offset, 65536)).equals(Buffer.from(writes[i].data))).toBe(true);
      }
    }
    await again.close();
  });

  it("times every request and exposes snapshots and stats through the worker", async () => {
    const p = newImageFile();
    const client = await pool.open(p);
    const timing = await timedWrite(client, 0, pattern(4096, 1));
    expect(timing.chunks).toBe(1);
    expect(timing.submitted).toBeGreaterThanOrEqual(timing.called);
    expect(timing.workerEnd).toBeGreaterThanOrEqual(timing.workerStart);
    expect(timing.completed).toBeGreaterThanOrEqual(timing.submitted);
    expect(Number.isFinite(timing.workerStart)).toBe(true);
    await client.snapshotCreate("one");
    await client.write(0, pattern(4096, 2));
    expect((await client.snapshotList()).map((s) => s.name)).toEqual(["one"]);
    await client.snapshotApply("one");
    expect(Buffer.from(await client.read(0, 4096)).equals(Buffer.from(pattern(4096, 1)))).toBe(true);
    await client.snapshotDelete("one");
    expect(await client.snapshotList()).toEqual([]);
    const stats = await client.stats();
    expect(stats === null || typeof stats === "object").toBe(true);
    await client.close();
  });

  it("the worker applies a log scheme's pending copies once the ring has been idle", async () => {
    const p = newImageFile();
    const client = await pool.open(p, { scheme: "log", cache: "writeback" });
    await client.write(0, pattern(65536, 5));
    await client.snapshotCreate("s");
    await client.write(4096, pattern(4096, 6));
    const cow = async () => ((await client.stats()) as Record<string, { writes: number } | undefined>)["cow-write"]?.writes ?? 0;
    const before = await cow();
    // Only idle time applies it: no request for a while.
    for (let i = 0; i < 100 && (await cow()) === before; i++) await new Promise((r) => setTimeout(r, 150));
    expect(await cow()).toBeGreaterThan(before);
    const expected = pattern(65536, 5);
    expected.set(pattern(4096, 6), 4096);
    expect(Buffer.from(await client.read(0, 65536)).equals(Buffer.from(expected))).toBe(true);
    await client.close();
  });

  it("openServedImage / closeAllWorkers use a process-wide pool", async () => {
    const p = newImageFile();
    const c = await openServedImage(p, { scheme: "eager", cache: "writeback" });
    await c.write(0, pattern(512, 4));
    await closeAllWorkers(); // closes (and flushes) the image
    expect(c.closed).toBe(true);
    expect(Buffer.from(readFile(p).subarray(0, 512)).equals(Buffer.from(pattern(512, 4)))).toBe(true);
  });
});

/** A write, with the timing the client's hook reports for it. */
async function timedWrite(client: DiskClient, offset: number, data: Uint8Array): Promise<RequestTiming> {
  let timing: RequestTiming | undefined;
  client.onTiming = (_op, t) => (timing = t);
  try {
    await client.write(offset, data);
  } finally {
    client.onTiming = undefined;
  }
  return timing!;
}
