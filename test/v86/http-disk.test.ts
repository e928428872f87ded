/**
 * A remote image under a kept local overlay, everywhere a disk opens in Node: `openV86Disk(url, { overlay })`
 * (made on first use, reused after, refused when the object changed), its faults (a failed fetch is an
 * error for that request, the overlay untouched, a later read works), and `refcow nbd` exporting the chain
 * to QEMU's NBD client.
 */
import { createHash, randomFillSync as randomFill } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openV86Disk } from "../../src/v86/v86-disk-node.js";
import { asPromise } from "../../src/disk/async-disk.js";
import { run, startNbd } from "../helpers/nbd.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { qemuCheck, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const MiB = 1 << 20;
let dir: string;
let server: TestHttpServer;
const savedCache = process.env.REFCOW_HTTP_CACHE;
let content: Buffer;
const expectBase = (got: Uint8Array, offset: number) => expect(Buffer.from(got).equals(content.subarray(offset, offset + got.length))).toBe(true);
const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");

beforeAll(async () => {
  dir = tempDir("http-disk");
  process.env.REFCOW_HTTP_CACHE = path.join(dir, "cache");
  fs.mkdirSync(path.join(dir, "srv"));
  // Incompressible data in two places (so that it spans several chunks of the compressed qcow2), zeroes elsewhere.
  content = Buffer.alloc(16 * MiB);
  randomFill(content.subarray(0, 2 * MiB));
  randomFill(content.subarray(8 * MiB, 12 * MiB));
  const plain = path.join(dir, "plain.raw");
  fs.writeFileSync(plain, content);
  qemuImg(["convert", "-c", "-f", "raw", "-O", "qcow2", plain, path.join(dir, "srv", "os.qcow2")]);
  server = await startHttpServer(path.join(dir, "srv"));
});

afterAll(async () => {
  await server?.close();
  if (savedCache === undefined) delete process.env.REFCOW_HTTP_CACHE;
  else process.env.REFCOW_HTTP_CACHE = savedCache;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("openV86Disk(url, { overlay })", () => {
  it("makes the overlay on first use and reuses it after; the guest's writes stay in it", async () => {
    const overlay = path.join(dir, "ov.qcow2");
    await expect(openV86Disk(server.url("os.qcow2"))).rejects.toThrow(/remote image, read-only: give an overlay/);
    const disk = await openV86Disk(server.url("os.qcow2"), { overlay, type: "virtio" });
    expectBase(await asPromise<Uint8Array>((done) => disk.disk.read(1 * MiB, 4096, done)), 1 * MiB);
    await asPromise((done) => disk.disk.write(9 * MiB, new Uint8Array(4096).fill(0x77), done));
    await disk.close();
    expect(qemuCheck(overlay).status).toBe(0);
    // QEMU reads the overlay through its curl driver: the write, and the base under it.
    expect(qemuIo(overlay, ["read -P 0x77 9M 4k"])).not.toMatch(/Pattern verification failed/);
    const flat = path.join(dir, "flat.raw");
    // One request at a time: QEMU 7.2's curl driver can stall for ever with several in flight.
    qemuImg(["convert", "-m", "1", "-O", "raw", overlay, flat]);
    const expected = Buffer.from(content);
    expected.fill(0x77, 9 * MiB, 9 * MiB + 4096);
    expect(fs.readFileSync(flat).equals(expected)).toBe(true);

    await server.stats(true);
    const again = await openV86Disk(server.url("os.qcow2"), { overlay });
    try {
      expect(Buffer.from(await asPromise<Uint8Array>((done) => again.disk.read(9 * MiB, 4096, done))).every((b) => b === 0x77)).toBe(true);
      expectBase(await asPromise<Uint8Array>((done) => again.disk.read(0, 4096, done)), 0);
    } finally {
      await again.close();
    }
    // The second open read its chunks from the persistent cache: only probes went over the wire.
    const s = await server.stats(true);
    expect(s.ranges.every(([, a, b]) => a === 0 && b === 0)).toBe(true);
  });

  it("refuses an object that changed since the overlay was made, naming the URL and what changed", async () => {
    const overlay = path.join(dir, "ov-etag.qcow2");
    (await openV86Disk(server.url("os.qcow2"), { overlay })).close();
    await server.configure({ etags: { "/os.qcow2": '"another-version"' } });
    try {
      await expect(openV86Disk(server.url("os.qcow2"), { overlay })).rejects.toThrow(
        new RegExp(`${server.url("os.qcow2")} changed since the overlay .*ov-etag\\.qcow2 was made over it \\(ETag .* -> "another-version"\\)`),
      );
    } finally {
      await server.configure({ etags: {} });
    }
  });

  it("a failed fetch fails that request only: the overlay is untouched and a later read works", async () => {
    const overlay = path.join(dir, "ov-fault.qcow2");
    const disk = await openV86Disk(server.url("os.qcow2"), { overlay, cache: "writethrough" });
    try {
      await asPromise((done) => disk.disk.write(0, new Uint8Array(512).fill(1), done));
      await asPromise((done) => disk.disk.flush(done));
      const before = sha(overlay);
      // Every chunk request now fails (the chunks read so far are in memory: ask for new ones).
      await server.configure({ faults: [{ status: 500, from: 1 }] });
      await expect(asPromise<Uint8Array>((done) => disk.disk.read(11 * MiB, 64 * 1024, done))).rejects.toThrow(/os\.qcow2.*500/);
      await server.configure({ faults: [{ status: 404, from: 1 }] });
      await expect(asPromise<Uint8Array>((done) => disk.disk.read(10 * MiB, 4096, done))).rejects.toThrow(/404/);
      expect(sha(overlay)).toBe(before);
      await server.configure({ faults: [] });
      expectBase(await asPromise<Uint8Array>((done) => disk.disk.read(11 * MiB, 64 * 1024, done)), 11 * MiB);
      expect(Buffer.from(await asPromise<Uint8Array>((done) => disk.disk.read(0, 1024, done))).subarray(0, 512).every((b) => b === 1)).toBe(true);
    } finally {
      await server.configure({ faults: [] });
      await disk.close();
    }
    expect(qemuCheck(overlay).status).toBe(0);
  });
});

describe("refcow nbd", () => {
  it("exports a local overlay over a URL to QEMU's NBD client", async () => {
    const overlay = path.join(dir, "ov-nbd.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-b", server.url("os.qcow2"), "-F", "qcow2", overlay]);
    const nbd = await startNbd(path.join(dir, "nbd.sock"), ["-t", "-f", "qcow2", overlay]);
    try {
      const io = await run("qemu-io", ["-f", "raw", "-c", "write -P 0x66 3M 64k", "-c", "read -P 0x66 3M 64k", nbd.uri]);
      expect(io.stdout).not.toMatch(/Pattern verification failed/);
      expect(io.status).toBe(0);
      // The whole disk through NBD (qemu-img as the NBD client): the base's bytes under the write.
      const copy = path.join(dir, "nbd-copy.raw");
      const got = await run("qemu-img", ["convert", "-f", "raw", "-O", "raw", nbd.uri, copy]);
      expect(got.status, got.stderr).toBe(0);
      const expected = Buffer.from(content);
      expected.fill(0x66, 3 * MiB, 3 * MiB + 64 * 1024);
      expect(fs.readFileSync(copy).equals(expected)).toBe(true);
    } finally {
      nbd.child.kill("SIGTERM");
      await nbd.exited;
    }
    expect(qemuCheck(overlay).status).toBe(0);
    expect(qemuIo(overlay, ["read -P 0x66 3M 64k"])).not.toMatch(/Pattern verification failed/);
  });
});
