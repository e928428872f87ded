/**
 * Backing files named by URL, against QEMU's curl driver: the same chains (raw base, qcow2 base,
 * compressed qcow2 base, two remote levels under a local overlay) read through both, from a local HTTP
 * server; info / map / compare / convert agree with qemu-img's; a writable open of a URL is refused in one
 * line. Overlays are made by refcow and written by QEMU, so each side checks the other.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, both, run } from "../cli/qemu-harness.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";
import { HttpFile } from "../../src/io/http-file.js";
import { openRemoteChain } from "../../src/open/remote-chain.js";

const MiB = 1 << 20;
let dir: string;
let server: TestHttpServer;
const savedCache = process.env.REFCOW_HTTP_CACHE;

describe("backing files by URL (QEMU's curl driver as the oracle)", () => {
  beforeAll(async () => {
    assertBuilt();
    dir = tempDir("http-chain");
    process.env.REFCOW_HTTP_CACHE = path.join(dir, "cache");
    const srv = path.join(dir, "srv");
    fs.mkdirSync(srv);
    // A base with data in several places, zero runs and a pattern QEMU can verify.
    qemuImg(["create", "-q", "-f", "qcow2", path.join(srv, "base.qcow2"), "12M"]);
    qemuIo(path.join(srv, "base.qcow2"), ["write -P 0x5a 0 1M", "write -P 0x33 3M 640k", "write -P 0x11 11M 1M", "write -z 5M 1M"]);
    qemuImg(["convert", "-O", "raw", path.join(srv, "base.qcow2"), path.join(srv, "base.raw")]);
    qemuImg(["convert", "-c", "-O", "qcow2", path.join(srv, "base.qcow2"), path.join(srv, "base-c.qcow2")]);
    // A remote middle layer naming the remote base by a relative name (resolved against its URL).
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "base-c.qcow2", "-F", "qcow2", path.join(srv, "mid.qcow2")]);
    qemuIo(path.join(srv, "mid.qcow2"), ["write -P 0x44 2M 1M", "write -P 0x45 11M 64k"]);
    server = await startHttpServer(srv);
  });

  afterAll(async () => {
    await server?.close();
    if (savedCache === undefined) delete process.env.REFCOW_HTTP_CACHE;
    else process.env.REFCOW_HTTP_CACHE = savedCache;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, fmt] of [
    ["base.raw", "raw"],
    ["base.qcow2", "qcow2"],
    ["base-c.qcow2", "qcow2"],
    ["mid.qcow2", "qcow2"],
  ] as const) {
    it(`reads the same bytes as QEMU through a local overlay on ${name}`, async () => {
      const url = server.url(name);
      const ov = `ov-${name}.qcow2`;
      const made = await run("refcow", ["create", "-q", "-f", "qcow2", "-b", url, "-F", fmt, ov], dir);
      expect(made.stderr).toBe("");
      expect(made.status).toBe(0);
      // QEMU writes into refcow's overlay through the curl driver; refcow writes too; both read both.
      qemuIo(path.join(dir, ov), ["write -P 0x77 512k 8k", "write -P 0x78 6M 64k"]);
      const readBack = await run("refcow", ["io", "-c", "write -P 0x79 4M 4k", "-c", "read -P 0x77 512k 8k", "-c", "read -P 0x79 4M 4k", "-c", "read -P 0x5a 0 512k", ov], dir);
      expect(readBack.stdout).not.toMatch(/Pattern verification failed/);
      expect(readBack.status).toBe(0);

      // The flattened image: refcow's convert against QEMU's, through the same URL chain.
      const r = await run("refcow", ["convert", "-O", "raw", ov, `r-${name}.raw`], dir);
      expect(r.stderr).toBe("");
      qemuImg(["convert", "-m", "1", "-O", "raw", ov, `q-${name}.raw`], dir); // one request at a time: see http-disk.test.ts
      expect(fs.readFileSync(path.join(dir, `r-${name}.raw`)).equals(fs.readFileSync(path.join(dir, `q-${name}.raw`)))).toBe(true);

      if (name !== "mid.qcow2") return;
      // On the deepest chain: map, info --backing-chain and compare as qemu-img prints them.
      const [map, info, same, differ] = await Promise.all([
        both(["map", "--output=json", ov], dir),
        both(["info", "--backing-chain", "--output=json", ov], dir),
        both(["compare", ov, `q-${name}.raw`], dir),
        both(["compare", ov, url], dir),
      ]);
      expect(map.r.stdout).toBe(map.q.stdout);
      expect(JSON.parse(info.r.stdout).map(stripSizes)).toEqual(JSON.parse(info.q.stdout).map(stripSizes));
      expect(JSON.parse(info.r.stdout)).toHaveLength(3);
      expect([same.r.status, same.r.stdout]).toEqual([same.q.status, same.q.stdout]);
      expect([differ.r.status, differ.r.stdout]).toEqual([differ.q.status, differ.q.stdout]);
      expect(differ.r.status).toBe(1);
    });
  }

  it("opens a URL as the image itself, read-only; a writable open is refused in one line", async () => {
    const url = server.url("base-c.qcow2");
    const { q, r } = await both(["info", "--output=json", url], dir);
    expect(stripSizes(JSON.parse(r.stdout))).toEqual(stripSizes(JSON.parse(q.stdout)));
    const read = await run("refcow", ["io", "-r", "-c", "read -P 0x33 3M 640k", url], dir);
    expect(read.stdout).toContain("read 655360/655360 bytes at offset 3145728");
    const write = await run("refcow", ["io", "-c", "write 0 512", url], dir);
    expect(write.status).not.toBe(0);
    expect(write.stderr.trim().split("\n")).toHaveLength(1);
    expect(write.stderr).toMatch(/remote image is read-only/);
  });

  it("rebase -u points an overlay at the base's URL: same bytes through QEMU and refcow", async () => {
    fs.copyFileSync(path.join(dir, "srv", "base.qcow2"), path.join(dir, "local-base.qcow2"));
    expect((await run("refcow", ["create", "-q", "-f", "qcow2", "-b", "local-base.qcow2", "-F", "qcow2", "moved.qcow2"], dir)).status).toBe(0);
    qemuIo(path.join(dir, "moved.qcow2"), ["write -P 0x61 1M 64k"]);
    qemuImg(["convert", "-O", "raw", "moved.qcow2", "before-move.raw"], dir);
    const r = await run("refcow", ["rebase", "-u", "-b", server.url("base.qcow2"), "-F", "qcow2", "moved.qcow2"], dir);
    expect([r.status, r.stderr]).toEqual([0, ""]);
    fs.rmSync(path.join(dir, "local-base.qcow2"));
    expect(qemuImg(["info", "moved.qcow2"], dir)).toContain(`backing file: ${server.url("base.qcow2")}`);
    expect(qemuImg(["check", "moved.qcow2"], dir)).toContain("No errors were found");
    const { q, r: rc } = await both(["compare", "moved.qcow2", "before-move.raw"], dir);
    expect([q.status, rc.status, rc.stdout]).toEqual([0, 0, q.stdout]);
    const missingFormat = await run("refcow", ["rebase", "-u", "-b", server.url("base.qcow2"), "moved.qcow2"], dir);
    expect(missingFormat.stderr).toMatch(/backing format must be specified/);
  });

  it("safe rebase (no -u) of an overlay over a two-level URL chain onto another URL, then onto nothing: QEMU reads the same bytes", async () => {
    expect((await run("refcow", ["create", "-q", "-f", "qcow2", "-b", server.url("mid.qcow2"), "-F", "qcow2", "safe.qcow2"], dir)).status).toBe(0);
    qemuIo(path.join(dir, "safe.qcow2"), ["write -P 0x62 1M 64k", "write -P 0x63 6M 8k"]);
    // The guest's view, read by QEMU (curl driver) before any change.
    qemuImg(["convert", "-m", "1", "-O", "raw", "safe.qcow2", "safe-before.raw"], dir);
    const r = await run("refcow", ["rebase", "-b", server.url("base.raw"), "-F", "raw", "safe.qcow2"], dir);
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(qemuImg(["info", "safe.qcow2"], dir)).toContain(`backing file: ${server.url("base.raw")}`);
    expect(qemuImg(["check", "safe.qcow2"], dir)).toContain("No errors were found");
    const { q, r: rc } = await both(["compare", "safe.qcow2", "safe-before.raw"], dir);
    expect([q.status, q.stdout, rc.status, rc.stdout]).toEqual([0, "Images are identical.\n", 0, q.stdout]);
    // Only mid.qcow2's data (2M-3M, 11M+64k) differs from base.raw: little was copied.
    const map = JSON.parse(qemuImg(["map", "--output=json", "safe.qcow2"], dir)) as { start: number; length: number; depth: number; data: boolean }[];
    const copied = map.filter((e) => e.depth === 0 && e.data).reduce((n, e) => n + e.length, 0);
    expect(copied).toBeLessThanOrEqual(MiB + 64 * 1024 + 128 * 1024);
    // Onto nothing: the image stands alone, same bytes.
    const alone = await run("refcow", ["rebase", "-b", "", "safe.qcow2"], dir);
    expect([alone.status, alone.stderr]).toEqual([0, ""]);
    expect(qemuImg(["info", "safe.qcow2"], dir)).not.toContain("backing file:");
    expect(qemuImg(["compare", "safe.qcow2", "safe-before.raw"], dir)).toContain("Images are identical.");
    expect(qemuImg(["check", "safe.qcow2"], dir)).toContain("No errors were found");
    // A new backing file that cannot be opened changes nothing.
    const missing = await run("refcow", ["rebase", "-b", server.url("missing.raw"), "-F", "raw", "safe.qcow2"], dir);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/Could not open new backing file/);
    expect(qemuImg(["info", "safe.qcow2"], dir)).not.toContain("backing file:");
  });

  it("the browser's chain opener (remote layers only) reads what QEMU reads", () => {
    const disk = openRemoteChain(server.url("mid.qcow2"), (u) => HttpFile.open(u, { cacheDir: false }));
    try {
      const got = Buffer.from(disk.read(0, disk.size));
      expect(got.equals(qemuRaw(path.join(dir, "srv", "mid.qcow2")))).toBe(true);
    } finally {
      disk.close();
    }
    expect(() => openRemoteChain("local.qcow2", (u) => HttpFile.open(u))).toThrow(/not an http\(s\) URL/);
  });

  it("says which URL failed when the server refuses", async () => {
    const made = await run("refcow", ["create", "-q", "-f", "qcow2", "-b", server.url("missing.qcow2"), "-F", "qcow2", "x.qcow2"], dir);
    expect(made.status).toBe(1);
    expect(made.stderr).toMatch(/missing\.qcow2.*404/);
  });
});

/** info's JSON without the fields that depend on how the file is stored (disk usage). */
function stripSizes(o: Record<string, unknown>): Record<string, unknown> {
  const { "actual-size": _a, ...rest } = o;
  return rest;
}
