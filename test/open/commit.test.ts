/**
 * commitOverlay (src/open/commit.ts) against QEMU: an overlay made and written by qemu-img / qemu-io over a
 * base image (qcow2 with compressed clusters and a different cluster size, or raw) is committed by refcow
 * into one copy of the base and by `qemu-img commit` into another; both bases must read the same as the
 * overlay did (qemu-img compare), as each other, and pass qemu-img check.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { commitOverlay } from "../../src/open/commit.js";
import { qemuCheck, qemuCompare, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("commit");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The overlay's writes: data, data across a base cluster boundary, zeroes over base data, a tail write. */
const OVERLAY_WRITES = ["write -P 0x11 0 4k", "write -P 0x22 60k 136k", "write -z 1M 64k", "write -P 0x33 3M 1k", "write -P 0x44 8388096 512"];

function makeBase(name: string, format: "qcow2" | "raw"): string {
  const base = path.join(dir, `${name}.${format}`);
  const seed = path.join(dir, `${name}-seed.raw`);
  qemuImg(["create", "-f", "raw", seed, "8M"]);
  qemuIo(seed, ["write -P 0xaa 0 2M", "write -P 0xbb 2M 1M", "write -P 0xcc 6M 64k"]);
  if (format === "qcow2") qemuImg(["convert", "-c", "-O", "qcow2", "-o", "cluster_size=16384", seed, base]);
  else fs.copyFileSync(seed, base);
  fs.rmSync(seed);
  return base;
}

describe("commitOverlay", () => {
  for (const format of ["qcow2", "raw"] as const) {
    it(`writes what a qemu-made overlay holds into its ${format} base, as qemu-img commit does`, () => {
      const base = makeBase(`base-${format}`, format);
      const overlay = path.join(dir, `overlay-${format}.qcow2`);
      qemuImg(["create", "-f", "qcow2", "-b", base, "-F", format, overlay]);
      qemuIo(overlay, OVERLAY_WRITES);
      // The oracle: the same overlay over a copy of the base, committed by QEMU.
      const qemuBase = path.join(dir, `qemu-base-${format}.${format}`);
      const qemuOverlay = path.join(dir, `qemu-overlay-${format}.qcow2`);
      fs.copyFileSync(base, qemuBase);
      fs.copyFileSync(overlay, qemuOverlay);
      qemuImg(["rebase", "-u", "-b", qemuBase, "-F", format, qemuOverlay]);
      qemuImg(["commit", "-d", qemuOverlay]);

      const r = commitOverlay(overlay, base, format);
      expect(r.bytes).toBeGreaterThanOrEqual(4096 + 136 * 1024 + 65536 + 1024 + 512);
      expect(qemuCompare(overlay, base)).toBe(true);
      expect(qemuCompare(qemuBase, base)).toBe(true);
      if (format === "qcow2") expect(qemuCheck(base).status).toBe(0);
      // The overlay is left as it was.
      expect(qemuCheck(overlay).status).toBe(0);
      expect(qemuIo(overlay, ["read -P 0x22 60k 136k"])).not.toContain("Pattern verification failed");
    });
  }

  it("refuses a base smaller than the overlay and leaves it unchanged", () => {
    const base = makeBase("small", "raw");
    const overlay = path.join(dir, "big-overlay.qcow2");
    qemuImg(["create", "-f", "qcow2", "-b", base, "-F", "raw", overlay, "16M"]);
    qemuIo(overlay, ["write -P 0x55 0 4k"]);
    const before = fs.readFileSync(base);
    expect(() => commitOverlay(overlay, base, "raw")).toThrow(/smaller than its overlay/);
    expect(fs.readFileSync(base).equals(before)).toBe(true);
  });
});
