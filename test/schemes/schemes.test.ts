/**
 * What makes each scheme what it is, checked through the I/O it does (the accounting wrapper), and the clean
 * images every one of them leaves for QEMU.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import type { CostBreakdown } from "../../src/engine/types.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-schemes-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const CS = 65536;

function qemuCheck(file: string): number {
  try {
    execFileSync("qemu-img", ["check", file], { stdio: "pipe" });
    return 0;
  } catch (e) {
    return (e as { status: number }).status;
  }
}

function writes(stats: CostBreakdown, purpose: string): number {
  return (stats as Record<string, { writes: number }>)[purpose]?.writes ?? 0;
}

/** A clean close left plain qcow2: no feature bit QEMU does not know, no refcow header extension. */
function expectPlain(file: string): void {
  const b = fs.readFileSync(file);
  expect(b.readBigUInt64BE(72) & ~0x1fn).toBe(0n);
  expect(b.readBigUInt64BE(80) & ~0x1n).toBe(0n);
  expect(b.readBigUInt64BE(88)).toBe(0n);
  const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
  expect(ro.core.header.extensions.map((e) => e.type.toString(16))).toEqual([]);
  ro.close();
}

function flushes(stats: CostBreakdown): number {
  return Object.values(stats).reduce((a, c) => a + (c?.flushes ?? 0), 0);
}

/** An image with 32 allocated clusters and one snapshot, open with `scheme`. */
function prepared(name: string, scheme: string, cache: "writeback" | "writethrough" = "writeback") {
  const file = path.join(dir, `${name}.qcow2`);
  createImagePath(file, { size: 64 * CS });
  const img = openImagePath(file, { scheme, cache }) as Qcow2Image;
  for (let i = 0; i < 32; i++) img.write(i * CS, new Uint8Array(4096).fill(i + 1));
  img.flush();
  return { file, img };
}

describe("refcount schemes", () => {
  it("registers the six schemes", () => {
    expect([...SCHEME_NAMES].sort()).toEqual(["eager", "journal", "lazy", "lazy-count", "log", "owner"]);
  });

  for (const scheme of SCHEME_NAMES) {
    it(`${scheme}: post-snapshot writes copy, and the closed image is plain qcow2 that QEMU reads the same`, () => {
      const { file, img } = prepared(`plain-${scheme}`, scheme);
      img.snapshotCreate("s");
      for (let i = 0; i < 32; i++) img.write(i * CS + 4096, new Uint8Array(4096).fill(0xee));
      img.close();
      expect(qemuCheck(file)).toBe(0);
      const raw = path.join(dir, `plain-${scheme}.raw`);
      execFileSync("qemu-img", ["convert", "-l", "snapshot.name=s", "-O", "raw", file, raw]);
      const snap = fs.readFileSync(raw);
      execFileSync("qemu-img", ["convert", "-O", "raw", file, raw]);
      const active = fs.readFileSync(raw);
      for (let i = 0; i < 32; i++) {
        expect(snap[i * CS]).toBe(i + 1);
        expect(snap[i * CS + 4096]).toBe(0);
        expect(active[i * CS]).toBe(i + 1);
        expect(active[i * CS + 4096]).toBe(0xee);
      }
      // Only standard features are left: no dirty bit, no journal bit.
      const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", file]).toString());
      expect(info["dirty-flag"]).toBe(false);
    });
  }

  it("eager orders each allocating writethrough write with refcount and L2 flushes; lazy needs no refcount write, but its data before the L2 entry", () => {
    for (const scheme of ["eager", "lazy"]) {
      const { img } = prepared(`wt-${scheme}`, scheme, "writethrough");
      img.resetStats();
      img.write(40 * CS, new Uint8Array(4096).fill(7));
      const st = img.stats();
      if (scheme === "eager") {
        expect(writes(st, "refcount")).toBe(1);
        expect(flushes(st)).toBe(2);
      } else {
        expect(writes(st, "refcount")).toBe(0);
        // The new cluster's data, then its L2 entry: an entry past the end of the file after a crash is a
        // corruption qemu-img check -r all cannot repair.
        expect(flushes(st)).toBe(2);
      }
      img.close();
    }
  });

  it("lazy-count writes no refcount on the write path, even after a snapshot, and reports its conversion", () => {
    const prep = prepared("lc", "lazy-count");
    prep.img.close();
    // Reopened: the conversion at open takes the 32 active clusters (and their L2 table) off the counts.
    const img = openImagePath(prep.file, { scheme: "lazy-count" }) as Qcow2Image;
    img.snapshotCreate("s");
    img.resetStats();
    for (let i = 0; i < 32; i++) img.write(i * CS, new Uint8Array(4096).fill(9));
    img.flush();
    expect(writes(img.stats(), "refcount")).toBe(0);
    expect(writes(img.stats(), "cow-write")).toBe(32);
    img.close();
    const report = img.core.scheme.report?.() ?? {};
    expect(report.openConvertClusters).toBeGreaterThan(0);
    expect(report.closeConvertClusters).toBeGreaterThan(32);
  });

  it("journal commits each writeback flush with one journal write and no table written in place", () => {
    const { img } = prepared("jr", "journal");
    img.snapshotCreate("s");
    img.resetStats();
    for (let i = 0; i < 32; i++) img.write(i * CS, new Uint8Array(4096).fill(9));
    img.flush();
    const st = img.stats();
    expect(writes(st, "journal")).toBe(1);
    expect(writes(st, "refcount")).toBe(0);
    expect(writes(st, "l2")).toBe(1); // the copy of the shared L2 table, written whole when it is made
    img.close();
    expect((img.core.scheme.report?.() ?? {}).transactions).toBeGreaterThan(0);
  });

  it("journal: QEMU refuses an image whose journal was not checkpointed, and refcow replays it", () => {
    const { file, img } = prepared("jr-crash", "journal");
    img.write(50 * CS, new Uint8Array(4096).fill(0x42));
    img.flush();
    // Simulate a crash: the process goes away without closing (the file is left as it is on disk).
    const copy = path.join(dir, "jr-crash-copy.qcow2");
    fs.copyFileSync(file, copy);
    img.close();
    let err = "";
    try {
      execFileSync("qemu-img", ["info", copy], { stdio: "pipe" });
    } catch (e) {
      err = String((e as { stderr: Buffer }).stderr);
    }
    expect(err).toMatch(/refcow journal/);
    const re = openImagePath(copy, { scheme: "eager" }) as Qcow2Image;
    expect(re.read(50 * CS, 1)[0]).toBe(0x42);
    re.close();
    expect(qemuCheck(copy)).toBe(0);
  });

  it("owner: snapshot create does no per-cluster work; delete merges into the only child and refuses two", () => {
    const { file, img } = prepared("ow", "owner");
    img.resetStats();
    img.snapshotCreate("a");
    const st = img.stats();
    expect(writes(st, "refcount")).toBe(0);
    expect(writes(st, "l2")).toBe(0);
    img.write(0, new Uint8Array(4096).fill(0x55)); // the active layer diverges from "a"
    img.snapshotCreate("b"); // child of "a"'s node
    img.snapshotApply("a"); // a second child of "a"
    expect(() => img.snapshotDelete("a")).toThrow(/2 children/);
    img.snapshotDelete("b"); // "b" has one child? no: its active child went away with apply
    img.snapshotDelete("a"); // now "a" has one child: the active layer
    img.close();
    expect(qemuCheck(file)).toBe(0);
    expectPlain(file);
  });

  it("owner: after a reopen every snapshot is a legacy node: any can be deleted, and what only the active layer still references is written in place", () => {
    const { file, img } = prepared("owl", "owner");
    img.snapshotCreate("a");
    img.write(0, new Uint8Array(4096).fill(0x55)); // a copy of cluster 0 that "b" will share
    img.snapshotCreate("b");
    img.snapshotApply("a"); // "a" has two children now
    expect(() => img.snapshotDelete("a")).toThrow(/2 children/);
    img.close();
    expectPlain(file);
    const re = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
    re.snapshotDelete("a"); // legacy: no tree to refuse it by
    re.resetStats();
    // Guest cluster 0 is now referenced by the active layer alone (b has its copy): in place.
    re.write(0, new Uint8Array(4096).fill(0x66));
    expect(writes(re.stats(), "cow-write")).toBe(0);
    expect(writes(re.stats(), "l2")).toBe(0);
    // Guest cluster 1 is still shared with "b": copied.
    re.write(CS, new Uint8Array(4096).fill(0x67));
    expect(writes(re.stats(), "cow-write")).toBeGreaterThan(0);
    re.close();
    expect(qemuCheck(file)).toBe(0);
    const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
    expect(ro.snapshotList().map((s) => s.name)).toEqual(["b"]);
    const b = new Uint8Array(64 * CS);
    ro.readSnapshot("b", b, 0);
    expect([b[0], b[CS], b[2 * CS]]).toEqual([0x55, 2, 3]);
    expect([ro.read(0, 1)[0], ro.read(CS, 1)[0], ro.read(2 * CS, 1)[0]]).toEqual([0x66, 0x67, 3]);
    ro.close();
    // QEMU's writes to the image (it knows nothing of the scheme) change nothing refcow trusts.
    execFileSync("qemu-io", ["-c", "write -P 0x11 1M 64k", file], { stdio: "pipe" });
    const again = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
    expect(again.read(1 << 20, 1)[0]).toBe(0x11);
    again.close();
    expect(qemuCheck(file)).toBe(0);
  });

  it("owner: two L2 entries of the active layer on one host cluster (refcount 2, check clean) are not written in place", () => {
    const { file, img } = prepared("owdup", "eager");
    img.close();
    // Guest cluster 1's L2 entry pointed at guest cluster 0's host cluster (COPIED cleared, as a count of 2
    // wants); qemu-img check -r all then makes the counts match and frees the orphan.
    const b = fs.readFileSync(file);
    const l2 = Number(b.readBigUInt64BE(Number(b.readBigUInt64BE(40))) & 0x00fffffffffffe00n);
    const host0 = b.readBigUInt64BE(l2) & 0x00fffffffffffe00n;
    b.writeBigUInt64BE(host0, l2);
    b.writeBigUInt64BE(host0, l2 + 8);
    fs.writeFileSync(file, b);
    execFileSync("qemu-img", ["check", "-r", "all", file], { stdio: "pipe" });
    expect(qemuCheck(file)).toBe(0);
    const ow = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
    expect(ow.read(CS, 1)[0]).toBe(1);
    ow.write(0, new Uint8Array(4096).fill(0x77));
    expect(ow.read(CS, 1)[0]).toBe(1);
    ow.close();
    expect(qemuCheck(file)).toBe(0);
    const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
    expect([ro.read(0, 1)[0], ro.read(CS, 1)[0]]).toEqual([0x77, 1]);
    ro.close();
  });

  it("converting between schemes is reopening with another scheme", () => {
    const { file, img } = prepared("conv", "eager");
    img.snapshotCreate("s");
    img.close();
    for (const scheme of ["lazy", "lazy-count", "journal", "owner", "eager"]) {
      const im = openImagePath(file, { scheme }) as Qcow2Image;
      im.write(60 * CS, new Uint8Array(512).fill(scheme.length));
      im.close();
      expect(qemuCheck(file)).toBe(0);
      const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
      expect(ro.read(60 * CS, 1)[0]).toBe(scheme.length);
      ro.close();
    }
  });
});
