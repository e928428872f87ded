/**
 * The page's probe of a remote image's chain (src/web/remote-probe.ts), run in Node against the local test
 * HTTP server with images QEMU made: a qcow2 over a relative backing name over a raw base, every layer's
 * version recorded (sizes from the files, ETags from the server), a change in a deeper layer refused by
 * the record's check, a backing name past the first 512 bytes read by a second request.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { probeRemoteImage } from "../../src/web/remote-probe.js";
import { pinRefusal } from "../../src/open/pin-record.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { qemuImg, tempDir } from "../helpers/qemu.js";

let dir: string;
let server: TestHttpServer;

describe("probeRemoteImage", () => {
  beforeAll(async () => {
    dir = tempDir("remote-probe");
    qemuImg(["create", "-q", "-f", "raw", path.join(dir, "base.raw"), "3M"]);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", path.join(dir, "mid.qcow2"), "4M"]);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", path.join(dir, "top.qcow2"), "5M"]);
    // A long backing name: past the first 512 bytes of the header cluster.
    const long = `${"sub/".repeat(130)}base.raw`;
    fs.mkdirSync(path.join(dir, path.dirname(long)), { recursive: true });
    fs.copyFileSync(path.join(dir, "base.raw"), path.join(dir, long));
    qemuImg(["create", "-q", "-f", "qcow2", "-u", "-b", long, "-F", "raw", path.join(dir, "far.qcow2"), "3M"]);
    server = await startHttpServer(dir);
  });

  afterAll(async () => {
    await server?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("records every remote layer, top first, and a change in a deeper one is refused", async () => {
    const probe = await probeRemoteImage(server.url("top.qcow2"));
    expect([probe.format, probe.size]).toEqual(["qcow2", 5 * 2 ** 20]);
    expect(probe.layers.map((l) => [l.url, l.size])).toEqual([
      [server.url("top.qcow2"), fs.statSync(path.join(dir, "top.qcow2")).size],
      [server.url("mid.qcow2"), fs.statSync(path.join(dir, "mid.qcow2")).size],
      [server.url("base.raw"), 3 * 2 ** 20],
    ]);
    expect(probe.layers.every((l) => typeof l.etag === "string" || typeof l.lastModified === "string")).toBe(true);

    await server.configure({ etags: { "/base.raw": '"rebuilt"' } });
    try {
      const now = await probeRemoteImage(server.url("top.qcow2"));
      const refusals = now.layers.map((l) => pinRefusal(probe.layers, l, "remote-1.qcow2")).filter(Boolean);
      expect(refusals).toHaveLength(1);
      expect(refusals[0]).toMatch(/base\.raw changed since the overlay remote-1\.qcow2 was made over it \(ETag .* -> "rebuilt"\)/);
    } finally {
      await server.configure({ etags: {} });
    }
  });

  it("reads a backing name beyond the first 512 bytes, and takes a raw image as one layer", async () => {
    const far = await probeRemoteImage(server.url("far.qcow2"));
    expect(far.layers.map((l) => l.url)).toEqual([server.url("far.qcow2"), server.url(`${"sub/".repeat(130)}base.raw`)]);
    const raw = await probeRemoteImage(server.url("base.raw"));
    expect([raw.format, raw.size, raw.layers.length]).toEqual(["raw", 3 * 2 ** 20, 1]);
    await expect(probeRemoteImage(server.url("missing.qcow2"))).rejects.toThrow(/missing\.qcow2: HTTP status 404/);
  });
});
