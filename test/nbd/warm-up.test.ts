/**
 * The inline export's warm-up (src/nbd/warm-up.ts): it serves its scratch images to a client in another
 * thread — every request of the client's load reaches the scratch image, counted where the server calls the
 * engine — and leaves nothing behind, for qcow2 and raw; over TLS when the export has TLS, each connection
 * upgraded with credentials of the export's kind; and the export it serves has the shape of the real
 * export whatever the settings (one construction, nbdExport), so that code compiled on it stays valid.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { type ExportSettings, nbdExport } from "../../src/nbd/export.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import { loadPskCredentials, loadX509Credentials, TlsServer, type TlsSettings } from "../../src/nbd/tls.js";
import { warmUp } from "../../src/nbd/warm-up.js";
import { tempDir } from "../helpers/qemu.js";
import { makeTestCredentials } from "../helpers/tls-creds.js";

const realUpgrade = TlsServer.prototype.upgrade;

/** What the scratch images opened by the warm-up were asked, in this (the serving) thread. */
const served = { opens: 0, writes: 0, writeBytes: 0, foreignWrites: 0, reads: 0, readBytes: 0, flushes: 0 };

vi.mock("../../src/open/serving.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../src/open/serving.js")>();
  return {
    ...real,
    openServedPath: (...args: Parameters<typeof real.openServedPath>) => {
      const img = real.openServedPath(...args);
      served.opens++;
      const { write, readInto, flush } = img;
      img.write = (offset: number, data: Uint8Array) => {
        served.writes++;
        served.writeBytes += data.length;
        if (data.some((b) => b !== 0xa5)) served.foreignWrites++;
        return write.call(img, offset, data);
      };
      img.readInto = (buf: Uint8Array, offset: number) => {
        served.reads++;
        served.readBytes += buf.length;
        return readInto.call(img, buf, offset);
      };
      img.flush = () => {
        served.flushes++;
        return flush.call(img);
      };
      return img;
    },
  };
});

const settings: ExportSettings = {
  name: "",
  description: "",
  readOnly: false,
  cache: "writeback",
  discard: "ignore",
  detectZeroes: "off",
  multiConn: false,
  zeroClusters: 65536,
  allocationDepth: false,
  bitmaps: [],
};

describe("warm-up", () => {
  const dir = tempDir("nbd-warm-up");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it.each(["qcow2", "raw"] as const)("serves %s scratch images from a client thread and removes them", async (format) => {
    const tmp = fs.mkdtempSync(path.join(dir, `tmp-${format}-`));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    Object.assign(served, { opens: 0, writes: 0, writeBytes: 0, foreignWrites: 0, reads: 0, readBytes: 0, flushes: 0 });
    try {
      // 2 lifecycles × 2 connections × 2 rounds (one at queue depth 1, one at 16).
      await warmUp({ format, scheme: format === "qcow2" ? "eager" : undefined, export: { ...settings, readOnly: true } }, 2, 2, 2);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    expect(fs.readdirSync(tmp)).toEqual([]);
    // The client's load (warm-up-client.ts), counted by hand: a round writes 4 KiB of 0xa5 once per cluster of
    // the 256-cluster scratch image, reads 4 KiB with the batch starting at cluster 0, 64, 128 and 192, and
    // flushes after the batch ending at cluster 63, 127, 191 and 255: per round 256 writes, 4 reads and 4
    // flushes; 8 rounds in all, on 2 scratch images.
    expect(served).toEqual({ opens: 2, writes: 8 * 256, writeBytes: 8 * 256 * 4096, foreignWrites: 0, reads: 8 * 4, readBytes: 8 * 4 * 4096, flushes: 8 * 4 });
  }, 60000);

  it.each(["x509", "psk"] as const)("over TLS with %s credentials, every connection upgraded, whatever the real export's verify-peer and authz", async (kind) => {
    const creds = makeTestCredentials(path.join(dir, `creds-${kind}`));
    // The real export's: a client certificate required and an authz list no one is on; the warm-up's client
    // has no certificate, so its server asks for none.
    const tls: TlsSettings =
      kind === "x509"
        ? { creds: loadX509Credentials("tls0", creds.server, true), authz: { kind: "simple", id: "auth0", identity: "CN=nobody" } }
        : { creds: loadPskCredentials("tls0", creds.psk) };
    const upgrades: { ok: boolean; protocol: string | null; kind: string }[] = [];
    const spy = vi.spyOn(TlsServer.prototype, "upgrade").mockImplementation(async function (this: TlsServer, raw) {
      const u = await realUpgrade.call(this, raw);
      upgrades.push({ ok: u.ok, protocol: u.socket?.getProtocol() ?? null, kind: this.settings.creds.kind });
      return u;
    });
    Object.assign(served, { opens: 0, writes: 0, writeBytes: 0, foreignWrites: 0, reads: 0, readBytes: 0, flushes: 0 });
    try {
      await warmUp({ format: "qcow2", scheme: "eager", export: settings, tls }, 1, 2, 2);
    } finally {
      spy.mockRestore();
    }
    expect(upgrades).toEqual([0, 1].map(() => ({ ok: true, protocol: "TLSv1.3", kind })));
    // The whole load went through: 1 lifecycle × 2 connections × 2 rounds.
    expect(served).toMatchObject({ opens: 1, writes: 4 * 256, foreignWrites: 0, reads: 4 * 4, flushes: 4 * 4 });
  }, 60000);

  it("builds exports of one shape, with or without fast zeroes", () => {
    const file = path.join(dir, "shape.qcow2");
    createImagePath(file, { size: 1 << 20 });
    const img = openImagePath(file, {});
    try {
      const disk = inlinePort(img);
      const fast = nbdExport(disk, settings);
      const slow = nbdExport(disk, { ...settings, zeroClusters: 0, readOnly: true, multiConn: true });
      expect(Object.keys(slow)).toEqual(Object.keys(fast));
      expect(slow.fastZero).toBeUndefined();
      expect(fast.fastZero!(65536, 65536)).toBe(true);
      expect(fast.fastZero!(4096, 65536)).toBe(false);
      expect(fast.fastZero!(0, 1 << 20)).toBe(true);
    } finally {
      img.close();
    }
  });
});
