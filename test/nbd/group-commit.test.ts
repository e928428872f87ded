/**
 * Group commit in the inline export (nbd/inline-port.ts): with cache=writethrough (or FUA), the writes of one
 * socket read share one flush of the image, issued before any of their replies; a failed flush fails each of
 * them (EIO) and nothing else. The image is opened by the test in writeback, as the export opens it
 * (open/serving.ts), behind a counter of the calls the export makes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { IoError } from "../../src/io/block-file.js";
import { type ExportSettings, nbdExport } from "../../src/nbd/export.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import { Cmd, CmdFlag, Err } from "../../src/nbd/protocol.js";
import { NbdServer } from "../../src/nbd/server.js";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { SyncDisk } from "../../src/disk/sync-disk.js";
import { WireClient } from "../helpers/nbd-wire.js";
import { tempDir } from "../helpers/qemu.js";

const SIZE = 4 << 20;
const settings = (cache: ExportSettings["cache"]): ExportSettings => ({
  name: "",
  description: "",
  readOnly: false,
  cache,
  discard: "unmap",
  detectZeroes: "off",
  multiConn: false,
  zeroClusters: 0,
  allocationDepth: false,
  bitmaps: [],
});

/** The image's calls in order ("w" a write, "f" a flush), and a switch that makes the next flushes fail. */
function counted(disk: SyncDisk) {
  const calls: string[] = [];
  const state = { failFlush: false };
  const wrapped: SyncDisk = {
    get size() {
      return disk.size;
    },
    readInto: (b: Uint8Array, o: number) => disk.readInto(b, o),
    write: (o: number, d: Uint8Array) => {
      calls.push("w");
      disk.write(o, d);
    },
    writeZeroes: (o: number, l: number, opts?: { unmap?: boolean }) => disk.writeZeroes(o, l, opts),
    discard: (o: number, l: number) => disk.discard(o, l),
    flush: () => {
      calls.push("f");
      if (state.failFlush) throw new IoError("fdatasync failed: EIO", "EIO");
      disk.flush();
    },
    close: () => disk.close(),
  };
  return { disk: wrapped, calls, state };
}

/** Every reply OK, between 1 and `under` flushes, and a flush last: no write was answered without one after it. */
function expectSharedFlush(calls: readonly string[], errors: Map<number, number>, under: number): void {
  expect([...errors.values()].every((e) => e === Err.OK)).toBe(true);
  const flushes = calls.filter((c) => c === "f").length;
  expect(flushes).toBeGreaterThanOrEqual(1);
  expect(flushes).toBeLessThan(under);
  expect(calls[calls.length - 1]).toBe("f");
}

describe("group commit in the inline export", () => {
  const dir = tempDir("nbd-group-commit");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function serve(name: string, cache: ExportSettings["cache"]) {
    const file = path.join(dir, `${name}.qcow2`);
    createImagePath(file, { size: SIZE });
    const img = openImagePath(file, { cache: "writeback" });
    const c = counted(img);
    const server = new NbdServer(nbdExport(inlinePort(c.disk), settings(cache)), { persistent: true });
    const sock = path.join(dir, `${name}.sock`);
    await server.listen({ socket: sock });
    const client = await WireClient.connect(sock);
    await client.open({});
    return { ...c, server, client, close: async () => (client.destroy(), await server.stop(), img.close()) };
  }

  /** Sends `n` writes (4 KiB at 64 KiB steps) in one socket write, then a read; returns the replies by handle. */
  async function burst(client: WireClient, n: number, flags = 0): Promise<Map<number, number>> {
    client.socket.cork();
    for (let i = 0; i < n; i++) client.request(Cmd.WRITE, BigInt(i), i * 65536, 4096, flags, new Uint8Array(4096).fill(i + 1));
    client.request(Cmd.READ, BigInt(n), 0, 4096);
    client.socket.uncork();
    const errors = new Map<number, number>();
    while (errors.size < n + 1) {
      const r = (await client.reply((h) => (h === BigInt(n) ? 4096 : 0)))!;
      errors.set(Number(r.handle), r.error);
    }
    return errors;
  }

  it("writethrough: the writes of one read share one flush, after all of them", async () => {
    const s = await serve("wt", "writethrough");
    try {
      expectSharedFlush(s.calls, await burst(s.client, 32), 8);
      expect(s.calls.filter((c) => c === "w").length).toBe(32);
    } finally {
      await s.close();
    }
  });

  it("writeback: FUA writes share one flush; plain writes flush nothing", async () => {
    const s = await serve("fua", "writeback");
    try {
      await burst(s.client, 16);
      expect(s.calls.filter((c) => c === "f")).toEqual([]);
      expectSharedFlush(s.calls, await burst(s.client, 16, CmdFlag.FUA), 4);
    } finally {
      await s.close();
    }
  });

  it("a failed flush fails each write that waited for it, not the read beside them", async () => {
    const s = await serve("fail", "writethrough");
    try {
      s.state.failFlush = true;
      const errors = await burst(s.client, 8);
      for (let i = 0; i < 8; i++) expect(errors.get(i)).toBe(Err.EIO);
      expect(errors.get(8)).toBe(Err.OK);
      s.state.failFlush = false;
      const again = await burst(s.client, 8);
      expect([...again.values()].every((e) => e === Err.OK)).toBe(true);
    } finally {
      await s.close();
    }
  });
});
