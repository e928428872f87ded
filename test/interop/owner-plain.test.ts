/**
 * An image the `owner` scheme closed cleanly is plain qcow2 that no QEMU tool can damage. The case that
 * motivated it: `qemu-img check -r leaks|all` (QEMU 7.2) drops every internal snapshot of an image with an
 * autoclear bit QEMU does not know, and the earlier owner format set one. Here: snapshots made over several
 * opens under `owner` survive `qemu-img check -r all` with their bytes, as QEMU reads them; and an image the
 * earlier format left opens under every scheme, and one writable open leaves it plain.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { main } from "../../src/cli/main.js";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { EXT_REFCOW_OWNER_LEGACY } from "../../src/schemes/owner.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { withLegacyOwnerTable } from "../helpers/legacy-owner.js";
import { qemuCheck, qemuImg, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("owner-plain");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const SIZE = 4 << 20;
const CS = 65536;

/** An owner image written over three opens, and what each view holds: the active layer ("") and each snapshot. */
function ownerImage(file: string): Map<string, Uint8Array> {
  const model = new Uint8Array(SIZE);
  const views = new Map<string, Uint8Array>();
  createImagePath(file, { size: SIZE, clusterSize: CS });
  const put = (img: Qcow2Image, off: number, len: number, value: number) => {
    const data = new Uint8Array(len).fill(value);
    img.write(off, data);
    model.set(data, off);
  };
  const snap = (img: Qcow2Image, name: string, vmState?: Uint8Array) => {
    img.snapshotCreate(name, { vmState });
    views.set(name, model.slice());
  };
  let img = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
  put(img, 0, 2 << 20, 0xa1);
  snap(img, "one");
  put(img, CS, 3 * CS, 0xb2);
  snap(img, "two", new Uint8Array(3000).fill(0x5e));
  put(img, 1 << 20, 8192, 0xc3);
  img.close();
  img = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
  snap(img, "three");
  put(img, 0, 4096, 0xd4);
  put(img, 3 << 20, CS, 0xd5);
  snap(img, "four");
  img.snapshotDelete("three"); // merged into "four", its only child
  views.delete("three");
  put(img, 3 << 20, 4096, 0xe6);
  img.close();
  img = openImagePath(file, { scheme: "owner" }) as Qcow2Image;
  put(img, 2 * CS, 512, 0xf7); // a legacy cluster shared with the snapshots: copied
  img.close();
  views.set("", model);
  return views;
}

/** No feature bit QEMU 7.2 does not know (incompatible 0-4, compatible 0, autoclear 0-1) and no refcow extension. */
function expectPlain(file: string): void {
  const b = fs.readFileSync(file);
  expect(b.readBigUInt64BE(72) & ~0x1fn, "incompatible features").toBe(0n);
  expect(b.readBigUInt64BE(80) & ~0x1n, "compatible features").toBe(0n);
  expect(b.readBigUInt64BE(88), "autoclear features").toBe(0n);
  const img = openImagePath(file, { readOnly: true }) as Qcow2Image;
  expect(img.core.header.extensions.map((e) => `0x${e.type.toString(16)}`)).toEqual([]);
  img.close();
  // QEMU's own report (7.2 lists no feature bits; what it does say must be clean).
  const info = JSON.parse(qemuImg(["info", "--output=json", file]));
  expect(info["dirty-flag"]).toBe(false);
  expect(info["format-specific"].data.corrupt).toBe(false);
  expect(info["format-specific"].data["lazy-refcounts"]).toBe(false);
}

/** Every view as QEMU reads it after `qemu-img check -r all`: the snapshot list kept, and each one's bytes. */
function expectQemuKeepsViews(file: string, views: Map<string, Uint8Array>): void {
  const r = qemuCheck(file, ["-r", "all"]);
  expect(r.status, r.out).toBe(0);
  expect(r.out).toMatch(/^No errors were found on the image\./);
  const listed = qemuImg(["snapshot", "-l", file]);
  const names = [...views.keys()].filter((n) => n).sort();
  expect(
    listed
      .split("\n")
      .slice(2)
      .filter((l) => l.trim())
      .map((l) => l.trim().split(/\s+/)[1])
      .sort(),
  ).toEqual(names);
  for (const [name, want] of views) {
    expect(qemuRaw(file, name || undefined).equals(Buffer.from(want)), name ? `snapshot ${name}` : "the active layer").toBe(true);
  }
  expect(qemuCheck(file).status).toBe(0);
}

describe("owner images and QEMU's tools", () => {
  it("a cleanly closed owner image is plain: qemu-img check -r all keeps every snapshot and its bytes", () => {
    const file = path.join(dir, "owner.qcow2");
    const views = ownerImage(file);
    expectPlain(file);
    expect(qemuCheck(file).status).toBe(0);
    expectQemuKeepsViews(file, views);
    // -r leaks too, on a fresh copy.
    const copy = path.join(dir, "owner-leaks.qcow2");
    fs.copyFileSync(path.join(dir, "owner.qcow2"), copy);
    expect(qemuCheck(copy, ["-r", "leaks"]).status).toBe(0);
    expect(qemuImg(["snapshot", "-l", copy])).toMatch(/\bfour\b/);
    expect(qemuRaw(copy, "one").equals(Buffer.from(views.get("one")!))).toBe(true);
  }, 60_000);

  it("an image the earlier owner format closed opens under every scheme, and a writable open leaves it plain", async () => {
    const base = path.join(dir, "base.qcow2");
    const views = ownerImage(base);
    const legacy = withLegacyOwnerTable(new Uint8Array(fs.readFileSync(base)));
    expect(Buffer.from(legacy).readBigUInt64BE(88)).toBe(1n << 32n);
    for (const scheme of [...SCHEME_NAMES, "check -r all"]) {
      const file = path.join(dir, `legacy-${scheme.replace(/ /g, "-")}.qcow2`);
      fs.writeFileSync(file, legacy);
      // A read-only open reads every view as it was, and changes nothing.
      const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
      expect(ro.core.header.extensions.some((e) => e.type === EXT_REFCOW_OWNER_LEGACY)).toBe(true);
      for (const [name, want] of views) {
        const got = new Uint8Array(SIZE);
        if (name) ro.readSnapshot(name, got, 0);
        else ro.readInto(got, 0);
        expect(Buffer.from(got).equals(Buffer.from(want)), `${scheme}: ${name || "active"}`).toBe(true);
      }
      ro.close();
      expect(Buffer.from(fs.readFileSync(file)).equals(Buffer.from(legacy))).toBe(true);
      const expected = new Map(views);
      if (scheme === "check -r all") {
        // What a user runs first: refcow's check, which opens writable.
        const status = await main(["check", "-r", "all", file], { out: () => {}, err: () => {} });
        expect(status).toBe(0);
      } else {
        const img = openImagePath(file, { scheme }) as Qcow2Image;
        const data = new Uint8Array(CS + 512).fill(scheme.length);
        img.write(CS / 2, data); // over clusters the snapshots share, and in the old table's place if reused
        img.write(SIZE - 4096, data.subarray(0, 4096));
        img.close();
        const active = views.get("")!.slice();
        active.set(data, CS / 2);
        active.set(data.subarray(0, 4096), SIZE - 4096);
        expected.set("", active);
      }
      expectPlain(file);
      expectQemuKeepsViews(file, expected);
    }
  }, 120_000);
});
