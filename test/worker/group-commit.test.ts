/**
 * Group commit in the request ring's serve loop (serve-loop.ts): the durable requests in hand (writes when
 * the loop makes writes durable, FLUSHes) share one flush, issued before any of their completions is
 * published; a failed flush fails each of them and nothing else; without group commit each is flushed alone.
 * Both sides of the ring run in this thread; the server is stepped by hand, so a batch is what was submitted.
 */
import { describe, expect, it } from "vitest";
import { IoError } from "../../src/io/block-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { DiskClient } from "../../src/worker/disk-client.js";
import { C, createRing } from "../../src/worker/ring.js";
import { RingServer, type ServeOptions } from "../../src/worker/serve-loop.js";
import type { SyncDisk } from "../../src/disk/sync-disk.js";

function setUp(opts: ServeOptions) {
  const file = new MemoryFile();
  Qcow2Image.create(file, { size: 4 << 20, clusterSize: 65536 });
  const img = Qcow2Image.open(file, { cache: "writeback" });
  const calls: string[] = [];
  const state = { failFlush: false };
  const disk: SyncDisk = {
    get size() {
      return img.size;
    },
    readInto: (b, o) => img.readInto(b, o),
    write: (o, d) => {
      calls.push("w");
      img.write(o, d);
    },
    writeZeroes: (o, l, x) => img.writeZeroes(o, l, x),
    discard: (o, l) => img.discard(o, l),
    flush: () => {
      // When the flush runs, no completion of the batch may be visible yet.
      calls.push(`f@${Atomics.load(ctl, C.CQ_TAIL)}`);
      if (state.failFlush) throw new IoError("fdatasync failed: EIO", "EIO");
      img.flush();
    },
    close: () => img.close(),
  };
  const sab = createRing({ slots: 64 });
  const ctl = new Int32Array(sab, 0, 64);
  const server = new RingServer(sab, disk, { spinUs: 0, ...opts });
  const client = new DiskClient(sab, "memory", { spinUs: 0 });
  return { server, client, calls, state, ctl };
}

/** Submits `n` writes, a read and (optionally) a flush together, serves them in one go, settles each. */
async function batch(s: ReturnType<typeof setUp>, n: number, withFlush: boolean) {
  const ps: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) ps.push(s.client.write(i * 65536, new Uint8Array(4096).fill(i + 1)));
  ps.push(s.client.read(0, 4096));
  if (withFlush) ps.push(s.client.flush());
  s.server.serveAvailable();
  return Promise.allSettled(ps);
}

describe("group commit in the serve loop", () => {
  it("durable writes in hand share one flush, before any completion is published", async () => {
    const s = setUp({ durableWrites: true });
    const results = await batch(s, 16, false);
    expect(results.every((r) => r.status === "fulfilled")).toBe(true);
    expect(s.calls.filter((c) => c.startsWith("f"))).toEqual(["f@0"]);
    expect(s.server.commits).toBe(1);
  });

  it("FLUSHes in hand share one flush; plain writeback writes are published at once", async () => {
    const s = setUp({});
    await batch(s, 8, false);
    expect(s.calls.filter((c) => c.startsWith("f"))).toEqual([]);
    const results = await batch(s, 8, true);
    expect(results.every((r) => r.status === "fulfilled")).toBe(true);
    // The writes and the read before the FLUSH were published at once (9 of the second batch's 10 after 9
    // of the first); the flush ran before the FLUSH's completion.
    expect(s.calls.filter((c) => c.startsWith("f"))).toEqual(["f@18"]);
  });

  it("a failed flush fails each durable request, not the read before them", async () => {
    const s = setUp({ durableWrites: true });
    s.state.failFlush = true;
    const ps = [s.client.read(0, 4096), ...[0, 1, 2, 3].map((i) => s.client.write(i * 65536, new Uint8Array(4096).fill(9)))];
    s.server.serveAvailable();
    const results = await Promise.allSettled(ps);
    expect(results[0]!.status).toBe("fulfilled");
    for (const r of results.slice(1)) {
      expect(r.status).toBe("rejected");
      expect(String((r as PromiseRejectedResult).reason?.message)).toMatch(/EIO/);
    }
  });

  it("without group commit each durable write is flushed alone", async () => {
    const s = setUp({ durableWrites: true, groupCommit: false });
    await batch(s, 4, false);
    expect(s.calls.filter((c) => c.startsWith("f"))).toEqual(["f@0", "f@1", "f@2", "f@3"]);
  });
});
