/**
 * The NBD server's edge cases, on the wire (test/helpers/nbd-wire.ts): the protocol's error for each bad
 * request, a connection that breaks the handshake or vanishes mid-flight without disturbing the others,
 * many requests in flight with replies matched by handle, structured reads with holes, block status from
 * the engine, and flushed writes surviving a client that disappears. The image is served by a real worker.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { NbdExport } from "../../src/nbd/export.js";
import { Cmd, CmdFlag, encodeClientFlags, encodeInfoRequest, encodeOption, Err, IHAVEOPT, Info, Opt, Rep, TxFlag, BaseAllocation } from "../../src/nbd/protocol.js";
import { NbdServer } from "../../src/nbd/server.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import type { NbdPort } from "../../src/nbd/port.js";
import { RingPort } from "../../src/nbd/ring-port.js";
import { closeAllWorkers, openServedImage } from "../../src/worker/index.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";
import { WireClient } from "../helpers/nbd-wire.js";

const MiB = 1 << 20;
const SIZE = 4 * MiB;
/** An open image as an export serves it: behind the ring (RingPort), or opened in this thread (InlinePort). */
interface Served {
  disk: NbdPort;
  close(): Promise<void>;
}

async function openServed(mode: "ring" | "inline", file: string, opts: { cache?: "writeback"; scheme?: string }): Promise<Served> {
  if (mode === "ring") {
    const d = await openServedImage(file, opts);
    return { disk: new RingPort(d, opts.cache), close: () => d.close() };
  }
  const img = openImagePath(file, opts);
  return { disk: inlinePort(img), close: async () => img.close() };
}

// Every case runs against both transmission modes of the server.
describe.each(["ring", "inline"] as const)("%s", (mode) => {
  const dir = tempDir(`nbd-server-${mode}`);
  const image = path.join(dir, "wire.qcow2");
  let served: Served;
  let disk: NbdPort;
  let server: NbdServer;
  let roServer: NbdServer;
  const sock = path.join(dir, "rw.sock");
  const roSock = path.join(dir, "ro.sock");

  function exportOf(d: NbdPort, readOnly: boolean): NbdExport {
    return {
      name: "",
      description: "wire test",
      port: d,
      readOnly,
      cache: "writeback",
      discard: "unmap",
      detectZeroes: "off",
      multiConn: true,
      allocationDepth: true,
      bitmaps: [],
      fastZero: (o, l) => o % 65536 === 0 && (o + l) % 65536 === 0,
    };
  }

  beforeAll(async () => {
    createImagePath(image, { size: SIZE });
    served = await openServed(mode, image, { cache: "writeback" });
    disk = served.disk;
    server = new NbdServer(exportOf(disk, false), { shared: 8, persistent: true });
    await server.listen({ socket: sock });
    // The read-only export shares the same client: its policy, not the image, refuses writes.
    roServer = new NbdServer(exportOf(disk, true), { shared: 2, persistent: true });
    await roServer.listen({ socket: roSock });
  });

  afterAll(async () => {
    await server.stop();
    await roServer.stop();
    await served.close();
    await closeAllWorkers();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function connected(path = sock, opts: { structured?: boolean; meta?: boolean } = {}): Promise<WireClient> {
    const c = await WireClient.connect(path);
    await c.open(opts);
    return c;
  }

  describe("requests", () => {
    it("each bad request gets the protocol's error and the connection goes on", async () => {
      const c = await connected(sock, { structured: true });
      const cases: [string, () => void, number][] = [
        ["read past the end", () => c.request(Cmd.READ, 1n, SIZE - 512, 1024), Err.EINVAL],
        ["write past the end", () => c.request(Cmd.WRITE, 2n, SIZE - 512, 1024, 0, new Uint8Array(1024)), Err.ENOSPC],
        ["trim past the end", () => c.request(Cmd.TRIM, 3n, SIZE, 512), Err.EINVAL],
        ["write zeroes past the end", () => c.request(Cmd.WRITE_ZEROES, 4n, SIZE, 512), Err.ENOSPC],
        ["structured read over 32 MiB", () => c.request(Cmd.READ, 5n, 0, 33 * MiB), Err.EOVERFLOW],
        ["unknown command", () => c.request(99, 6n, 0, 512), Err.EINVAL],
        ["flag the command does not take", () => c.request(Cmd.FLUSH, 7n, 0, 0, CmdFlag.FUA), Err.EINVAL],
        ["block status without a metadata context", () => c.request(Cmd.BLOCK_STATUS, 8n, 0, 4096), Err.EINVAL],
        ["fast zero that would write data", () => c.request(Cmd.WRITE_ZEROES, 9n, 512, 512, CmdFlag.FAST_ZERO), Err.ENOTSUP],
        ["offset beyond 2^53", () => c.request(Cmd.READ, 10n, 2 ** 60, 512), Err.EINVAL],
      ];
      for (const [what, send, errno] of cases) {
        send();
        const r = await c.reply();
        expect(r, what).not.toBeNull();
        expect(r!.error, what).toBe(errno);
      }
      c.request(Cmd.READ, 11n, 0, 4096);
      const ok = await c.reply();
      expect(ok!.error).toBe(0);
      c.request(Cmd.DISC, 12n, 0, 0);
      await c.closed();
    });

    it("a simple-reply client gets EINVAL for a read over 32 MiB", async () => {
      const c = await connected(sock, { structured: false });
      c.request(Cmd.READ, 1n, 0, 33 * MiB);
      expect((await c.reply())!.error).toBe(Err.EINVAL);
      c.destroy();
    });

    it("a read-only export refuses writes, trims and write-zeroes with EPERM and says so in its flags", async () => {
      const c = await connected(roSock);
      expect(c.txFlags & TxFlag.READ_ONLY).toBeTruthy();
      expect(c.txFlags & TxFlag.SEND_TRIM).toBe(0);
      c.request(Cmd.WRITE, 1n, 0, 512, 0, new Uint8Array(512).fill(9));
      c.request(Cmd.TRIM, 2n, 0, 512);
      c.request(Cmd.WRITE_ZEROES, 3n, 0, 512);
      for (let i = 0; i < 3; i++) expect((await c.reply())!.error).toBe(Err.EPERM);
      c.destroy();
    });

    it("many requests in flight: every reply carries its request's handle, reads see the writes before them", async () => {
      const c = await connected(sock);
      const n = 64;
      for (let i = 0; i < n; i++) c.request(Cmd.WRITE, BigInt(1000 + i), i * 4096, 4096, 0, new Uint8Array(4096).fill(i + 1));
      c.request(Cmd.FLUSH, 2000n, 0, 0);
      const seen = new Set<bigint>();
      for (let i = 0; i <= n; i++) {
        const r = (await c.reply())!;
        expect(r.error).toBe(0);
        seen.add(r.handle);
      }
      expect(seen.size).toBe(n + 1);
      for (let i = 0; i < n; i++) c.request(Cmd.READ, BigInt(3000 + i), i * 4096, 4096);
      for (let i = 0; i < n; i++) {
        const r = (await c.reply())!;
        const k = Number(r.handle) - 3000;
        const bytes = WireClient.assemble(r, k * 4096, 4096);
        expect(bytes.every((b) => b === k + 1)).toBe(true);
      }
      c.destroy();
    });

    it("structured reads send holes for unallocated ranges; block status comes from the engine's map", async () => {
      const c = await connected(sock, { meta: true });
      const at = 2 * MiB;
      c.request(Cmd.WRITE, 1n, at, 65536, 0, new Uint8Array(65536).fill(0x5a));
      expect((await c.reply())!.error).toBe(0);
      c.request(Cmd.READ, 2n, at, 3 * 65536);
      const r = (await c.reply())!;
      expect(r.error).toBe(0);
      expect(r.holes).toEqual([{ offset: at + 65536, length: 2 * 65536 }]);
      expect(WireClient.assemble(r, at, 3 * 65536).subarray(0, 65536).every((b) => b === 0x5a)).toBe(true);
      c.request(Cmd.BLOCK_STATUS, 3n, at, 3 * 65536);
      const bs = (await c.reply())!;
      const HZ = BaseAllocation.STATE_HOLE | BaseAllocation.STATE_ZERO;
      expect(bs.extents).toEqual([
        { length: 65536, flags: 0 },
        { length: 2 * 65536, flags: HZ },
      ]);
      c.request(Cmd.BLOCK_STATUS, 4n, at, 3 * 65536, CmdFlag.REQ_ONE);
      expect((await c.reply())!.extents).toEqual([{ length: 65536, flags: 0 }]);
      c.destroy();
    });
  });

  describe("handshake", () => {
    it("options: LIST, INFO of an unknown export, an unknown option, then GO", async () => {
      const c = await WireClient.connect(sock);
      await c.greeting();
      c.send(encodeClientFlags(1));
      const list = await c.option(Opt.LIST);
      expect(list.map((r) => r.type)).toEqual([Rep.SERVER, Rep.ACK]);
      const unknown = await c.option(Opt.INFO, encodeInfoRequest({ name: "nope", infos: [] }));
      expect(unknown[0]!.type).toBe(Rep.ERR_UNKNOWN);
      expect((await c.option(77))[0]!.type).toBe(Rep.ERR_UNSUP);
      expect((await c.option(Opt.STARTTLS))[0]!.type).toBe(Rep.ERR_POLICY);
      expect((await c.option(Opt.SET_META_CONTEXT, new Uint8Array(3)))[0]!.type).toBe(Rep.ERR_INVALID); // before STRUCTURED_REPLY
      expect((await c.option(Opt.INFO, new Uint8Array([0, 0, 0, 9, 1])))[0]!.type).toBe(Rep.ERR_INVALID); // truncated
      const go = await c.option(Opt.GO, encodeInfoRequest({ name: "", infos: [Info.NAME, Info.DESCRIPTION] }));
      expect(go[go.length - 1]!.type).toBe(Rep.ACK);
      c.request(Cmd.READ, 1n, 0, 512);
      expect((await c.reply((h) => (h === 1n ? 512 : 0)))!.error).toBe(0);
      c.destroy();
    });

    it("a broken handshake loses only its own connection", async () => {
      const other = await connected(sock);
      const bad: Uint8Array[] = [
        new Uint8Array([0, 0]), // truncated client flags
        new Uint8Array([0, 0, 0, 0x80]), // unknown client flag
        Buffer.concat([encodeClientFlags(1), Buffer.from("NOTAMAGIC-------")]), // bad option magic
        Buffer.concat([encodeClientFlags(1), encodeOption(Opt.GO).subarray(0, 12)]), // truncated option header
        (() => {
          const o = Buffer.from(encodeOption(Opt.LIST));
          o.writeUInt32BE(1 << 30, 12); // a gigabyte of option data
          return Buffer.concat([encodeClientFlags(1), o]);
        })(),
      ];
      for (const bytes of bad) {
        const c = await WireClient.connect(sock);
        await c.greeting();
        c.send(bytes);
        c.socket.end();
        await c.closed();
      }
      expect(IHAVEOPT).toBeTypeOf("bigint");
      other.request(Cmd.READ, 5n, 0, 4096);
      expect((await other.reply())!.error).toBe(0);
      other.destroy();
    });
  });

  describe("durability", () => {
    it("writes acknowledged by a FLUSH survive a client that vanishes with requests in flight", async () => {
      const c = await connected(sock);
      const at = 3 * MiB;
      c.request(Cmd.WRITE, 1n, at, 65536, 0, new Uint8Array(65536).fill(0x77));
      c.request(Cmd.WRITE, 2n, at + 65536, 4096, CmdFlag.FUA, new Uint8Array(4096).fill(0x78));
      c.request(Cmd.FLUSH, 3n, 0, 0);
      for (let i = 0; i < 3; i++) expect((await c.reply())!.error).toBe(0);
      for (let i = 0; i < 32; i++) c.request(Cmd.WRITE, BigInt(10 + i), at + 2 * 65536 + i * 4096, 4096, 0, new Uint8Array(4096).fill(1));
      c.destroy();
      // The server goes on serving others.
      const d = await connected(sock);
      d.request(Cmd.READ, 1n, at, 65536 + 4096);
      const r = (await d.reply())!;
      const bytes = WireClient.assemble(r, at, 65536 + 4096);
      expect(bytes.subarray(0, 65536).every((b) => b === 0x77)).toBe(true);
      expect(bytes.subarray(65536).every((b) => b === 0x78)).toBe(true);
      d.destroy();
    });
  });

  describe("shutdown", () => {
    it("stop() answers the requests in flight, refuses new ones with ESHUTDOWN, and the image closes clean", async () => {
      const file = path.join(dir, "stop.qcow2");
      createImagePath(file, { size: SIZE });
      const d = await openServed(mode, file, { scheme: "lazy" });
      const s = new NbdServer(exportOf(d.disk, false), { persistent: true });
      const p = path.join(dir, "stop.sock");
      await s.listen({ socket: p });
      const c = await connected(p);
      for (let i = 0; i < 32; i++) c.request(Cmd.WRITE, BigInt(i), i * 65536, 65536, 0, new Uint8Array(65536).fill(i + 1));
      const errors = new Map<number, number>();
      const first = (await c.reply())!;
      errors.set(Number(first.handle), first.error);
      const stopped = s.stop();
      for (;;) {
        const r = await c.reply();
        if (!r) break;
        errors.set(Number(r.handle), r.error);
      }
      await stopped;
      expect(errors.size).toBeGreaterThan(0);
      expect([...errors.values()].every((e) => e === 0 || e === Err.ESHUTDOWN)).toBe(true);
      await d.close();
      expect(qemuCheck(file).status).toBe(0);
      const img = openImagePath(file, { readOnly: true });
      const buf = new Uint8Array(65536);
      // What was answered OK is there.
      errors.forEach((e, i) => {
        if (e !== 0) return;
        img.readInto(buf, i * 65536);
        expect(buf.every((b) => b === i + 1)).toBe(true);
      });
      img.close();
    });

    it("a client that never reads its replies does not hold up stop()", async () => {
      const s = new NbdServer(exportOf(disk, true), { persistent: true });
      const p = path.join(dir, "stuck.sock");
      await s.listen({ socket: p });
      const c = await connected(p);
      c.socket.pause();
      // Far more reply bytes than the socket buffers and the server queues before it stops reading.
      for (let i = 0; i < 160; i++) c.request(Cmd.READ, BigInt(i), 0, 1 << 20);
      await new Promise((r) => setTimeout(r, 300));
      await s.stop();
      c.destroy();
    });
  });
});
