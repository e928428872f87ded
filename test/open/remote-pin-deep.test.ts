/**
 * Pins of remote layers deeper than an overlay's backing file (open/remote-pin.ts, pin-record.ts): a local
 * overlay over http://…/mid.qcow2, itself over http://…/base.raw. The overlay's record names both versions;
 * a change of the deeper one is refused by the library's chain walk and by the CLI (convert, which reads
 * through the chain), naming that URL. A safe rebase records the new chain's versions instead.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { ensureOverlay } from "../../src/open/persistent-overlay.js";
import { pinPath } from "../../src/open/remote-pin.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";

const MiB = 2 ** 20;
const bin = path.resolve("dist/cli/bin.js");

function refcow(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [bin, ...args], { encoding: "utf8" }, (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

describe("pins of deeper remote layers", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-pin-deep-"));
  const savedCache = process.env.REFCOW_HTTP_CACHE;
  let server: TestHttpServer;

  beforeAll(async () => {
    process.env.REFCOW_HTTP_CACHE = "off";
    const root = path.join(dir, "www");
    fs.mkdirSync(root);
    fs.writeFileSync(path.join(root, "base.raw"), Buffer.alloc(2 * MiB, 0x5a));
    server = await startHttpServer(root);
    createImagePath(path.join(root, "mid.qcow2"), { size: 2 * MiB, backingFile: server.url("base.raw"), backingFormat: "raw" });
  });

  afterAll(async () => {
    await server.close();
    if (savedCache === undefined) delete process.env.REFCOW_HTTP_CACHE;
    else process.env.REFCOW_HTTP_CACHE = savedCache;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("records every remote layer and refuses a changed deeper one", async () => {
    const overlay = path.join(dir, "ov.qcow2");
    ensureOverlay(server.url("mid.qcow2"), overlay);
    const record = JSON.parse(fs.readFileSync(pinPath(overlay), "utf8"));
    expect(record.url).toBe(server.url("mid.qcow2"));
    expect(record.layers.map((l: { url: string }) => l.url)).toEqual([server.url("base.raw")]);
    expect(record.layers[0].size).toBe(2 * MiB);

    const img = openImagePath(overlay, { readOnly: true });
    expect(img.read(MiB, 4096).every((b) => b === 0x5a)).toBe(true);
    img.close();

    await server.configure({ etags: { "/base.raw": '"rebuilt"' } });
    try {
      const refusal = new RegExp(`${server.url("base.raw")} changed since the overlay .*ov\\.qcow2 was made over it \\(ETag .* -> "rebuilt"\\)`);
      expect(() => openImagePath(overlay, { readOnly: true })).toThrow(refusal);
      const cli = await refcow(["convert", "-O", "raw", overlay, path.join(dir, "flat.raw")]);
      expect(cli.status).not.toBe(0);
      expect(cli.stderr).toMatch(refusal);
      // The middle layer alone (no overlay above it) is not pinned: it opens.
      const mid = await refcow(["info", server.url("mid.qcow2")]);
      expect(mid.status, mid.stderr).toBe(0);
    } finally {
      await server.configure({ etags: {} });
    }
  });

  it("a safe rebase records the new chain's versions", async () => {
    const overlay = path.join(dir, "ov-rebase.qcow2");
    ensureOverlay(server.url("mid.qcow2"), overlay);
    const r = await refcow(["rebase", "-b", server.url("base.raw"), "-F", "raw", overlay]);
    expect([r.status, r.stderr]).toEqual([0, ""]);
    const record = JSON.parse(fs.readFileSync(pinPath(overlay), "utf8"));
    expect([record.url, record.size, record.layers]).toEqual([server.url("base.raw"), 2 * MiB, undefined]);
    await server.configure({ etags: { "/base.raw": '"rebuilt"' } });
    try {
      expect(() => openImagePath(overlay, { readOnly: true })).toThrow(/base\.raw changed since the overlay/);
    } finally {
      await server.configure({ etags: {} });
    }
    const alone = await refcow(["rebase", "-b", "", overlay]);
    expect([alone.status, alone.stderr]).toEqual([0, ""]);
    expect(fs.existsSync(pinPath(overlay))).toBe(false);
  });
});
