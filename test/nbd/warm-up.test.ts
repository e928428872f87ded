/**
 * The inline export's warm-up (src/nbd/warm-up.ts): it serves its scratch images to a client in another
 * thread and leaves nothing behind, for qcow2 and raw; and the export it serves has the shape of the real
 * export whatever the settings (one construction, inlineExport), so that code compiled on it stays valid.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createImagePath, openImagePath } from "../../src/engine/open-path.js";
import { inlineExport, type InlineExportSettings } from "../../src/nbd/export.js";
import { inlineDisk } from "../../src/nbd/inline-disk.js";
import { warmUp } from "../../src/nbd/warm-up.js";
import { tempDir } from "../helpers/qemu.js";

const settings: InlineExportSettings = {
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
    try {
      await warmUp({ format, scheme: format === "qcow2" ? "eager" : undefined, cache: "writethrough", export: { ...settings, readOnly: true } }, 2, 2, 1);
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
    expect(fs.readdirSync(tmp)).toEqual([]);
  }, 60000);

  it("builds exports of one shape, with or without fast zeroes", () => {
    const file = path.join(dir, "shape.qcow2");
    createImagePath(file, { size: 1 << 20 });
    const img = openImagePath(file, {});
    try {
      const disk = inlineDisk(img);
      const fast = inlineExport(disk, settings);
      const slow = inlineExport(disk, { ...settings, zeroClusters: 0, readOnly: true, multiConn: true });
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
