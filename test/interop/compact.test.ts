/**
 * Compaction, checked by QEMU: images with snapshots — made by refcow under every scheme (with VM state), and
 * made by QEMU itself (qemu-img snapshot -c, qemu-io writes; also compressed clusters, 512-byte clusters with
 * many refcount blocks, extended L2 entries) — shrink, leave no free cluster inside the file, pass qemu-img
 * check, and qemu-img convert of the active layer and of every snapshot gives exactly the bytes it gave
 * before. Images that cannot be compacted safely are refused and left untouched.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { compactImage } from "../../src/open/qcow2.js";
import { referenceCounts } from "../../src/engine/check/check.js";
import { ImageFormatError, RequestError, UnsupportedFeatureError } from "../../src/engine/errors.js";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { NodeFile } from "../../src/io/node-file.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("compact");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const MIB = 1 << 20;

function snapshotNames(file: string): string[] {
  const info = JSON.parse(qemuImg(["info", "--output=json", "-U", file])) as { snapshots?: { name: string }[] };
  return (info.snapshots ?? []).map((s) => s.name);
}

/** Guest bytes of the active layer and of every snapshot, as QEMU reads them. */
function contents(file: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>([["(active)", qemuRaw(file)]]);
  for (const name of snapshotNames(file)) out.set(name, qemuRaw(file, name));
  return out;
}

/** Clusters below the end of the file that nothing references. */
function freeInside(file: string): number {
  const img = openImagePath(file, { readOnly: true }) as Qcow2Image;
  try {
    const refs = referenceCounts(img.core);
    const end = Math.ceil(fs.statSync(file).size / img.clusterSize);
    let n = 0;
    for (let c = 0; c < end; c++) if (c >= refs.length || refs[c] === 0) n++;
    return n;
  } finally {
    img.close();
  }
}

/** Compacts `file` and checks everything QEMU can see; returns the compaction result. */
function compactAndVerify(file: string, scheme?: string) {
  const before = contents(file);
  const sizeBefore = fs.statSync(file).size;
  expect(freeInside(file)).toBeGreaterThan(0);
  const f = NodeFile.open(file);
  let result: ReturnType<typeof compactImage>;
  try {
    result = compactImage(f, { scheme });
  } finally {
    f.close();
  }
  const sizeAfter = fs.statSync(file).size;
  expect(result.bytesBefore).toBe(sizeBefore);
  expect(result.bytesAfter).toBe(sizeAfter);
  expect(sizeAfter).toBeLessThan(sizeBefore);
  expect(result.clustersMoved).toBeGreaterThan(0);
  const check = qemuCheck(file);
  expect(check.status, check.out).toBe(0);
  expect(check.out).toContain(`Image end offset: ${sizeAfter}`);
  expect(freeInside(file)).toBe(0);
  const after = contents(file);
  expect([...after.keys()]).toEqual([...before.keys()]);
  for (const [name, data] of before) expect(after.get(name)!.equals(data), `${name} changed`).toBe(true);
  return result;
}

describe("compact", () => {
  for (const scheme of SCHEME_NAMES) {
    it(`an image written by refcow (${scheme}), snapshots with VM state`, () => {
      const file = path.join(dir, `refcow-${scheme}.qcow2`);
      createImagePath(file, { size: 16 * MIB });
      let img = openImagePath(file, { scheme, alloc: "append" }) as Qcow2Image;
      const vm1 = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
      const vm2 = new Uint8Array(70_000).fill(0x99);
      img.write(0, new Uint8Array(6 * MIB).fill(0x11));
      img.snapshotCreate("one", { vmState: vm1 });
      img.write(MIB, new Uint8Array(2 * MIB).fill(0x22));
      img.snapshotCreate("two", { vmState: vm2 });
      img.write(2 * MIB + 512, new Uint8Array(3 * MIB).fill(0x33));
      img.discard(5 * MIB, MIB);
      img.snapshotCreate("three");
      img.write(9 * MIB, new Uint8Array(MIB).fill(0x44));
      img.close();
      img = openImagePath(file, { scheme }) as Qcow2Image;
      img.snapshotDelete("two");
      img.write(12 * MIB, new Uint8Array(100_000).fill(0x55));
      img.close();
      const result = compactAndVerify(file, scheme);
      expect(result.moved.data).toBeGreaterThan(0);
      const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
      expect(Buffer.from(ro.readVmState("one")).equals(Buffer.from(vm1))).toBe(true);
      expect(ro.snapshotList().map((s) => s.name)).toEqual(["one", "three"]);
      ro.close();
      // Compacting again finds nothing to do (opened with eager: the owner scheme's own close rebuilds the
      // refcount structures at the end of the file, which a compaction would move down again).
      const f = NodeFile.open(file);
      const again = compactImage(f);
      f.close();
      expect(again.clustersMoved).toBe(0);
      expect(again.bytesAfter).toBe(again.bytesBefore);
    });
  }

  it("an image written by QEMU: qemu-img snapshot -c, qemu-io writes and discards, a snapshot deleted", () => {
    const file = path.join(dir, "qemu.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", file, "32M"]);
    qemuIo(file, ["write -P 1 0 12M"]);
    qemuImg(["snapshot", "-c", "s1", file]);
    qemuIo(file, ["write -P 2 1M 4M", "write -P 3 20M 1M"]);
    qemuImg(["snapshot", "-c", "s2", file]);
    qemuIo(file, ["write -P 4 2M 6M", "discard 10M 2M"]);
    qemuImg(["snapshot", "-c", "s3", file]);
    qemuIo(file, ["write -P 5 0 1M"]);
    qemuImg(["snapshot", "-d", "s1", file]);
    qemuImg(["snapshot", "-d", "s3", file]);
    const r = compactAndVerify(file);
    expect(r.moved.data).toBeGreaterThan(0);
  });

  it("compressed clusters (runs crossing cluster boundaries move as one)", () => {
    const raw = path.join(dir, "src.raw");
    const data = Buffer.alloc(4 * MIB);
    for (let i = 0; i < data.length; i++) data[i] = (i % 251) ^ (Math.floor(i / 4096) * 13);
    fs.writeFileSync(raw, data);
    const file = path.join(dir, "compressed.qcow2");
    qemuImg(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw, file]);
    qemuImg(["snapshot", "-c", "c1", file]);
    qemuIo(file, ["write -P 7 0 1M", "write -P 8 3M 512k"]);
    qemuImg(["snapshot", "-c", "c2", file]);
    qemuIo(file, ["write -P 9 512k 1M"]);
    qemuImg(["snapshot", "-d", "c1", file]);
    compactAndVerify(file);
    const check = qemuCheck(file);
    expect(check.out).toMatch(/compressed clusters/);
  });

  it("512-byte clusters: many refcount blocks, L2 tables and the refcount table move too", () => {
    const file = path.join(dir, "small.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", file, "2M"]);
    qemuIo(file, ["write -P 1 0 1M", "write -P 2 1536k 256k"]);
    qemuImg(["snapshot", "-c", "a", file]);
    qemuIo(file, ["write -P 3 0 768k"]);
    qemuImg(["snapshot", "-c", "b", file]);
    qemuIo(file, ["write -P 4 256k 1M"]);
    qemuImg(["snapshot", "-d", "a", file]);
    const r = compactAndVerify(file);
    expect(r.moved.l2).toBeGreaterThan(0);
    expect(r.moved.refcount).toBeGreaterThan(0);
  });

  it("extended L2 entries (subclusters)", () => {
    const file = path.join(dir, "extl2.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=65536", file, "8M"]);
    qemuIo(file, ["write -P 1 0 3M", "write -P 2 5M 4k"]);
    qemuImg(["snapshot", "-c", "x", file]);
    qemuIo(file, ["write -P 3 4k 2M", "write -P 4 6M 8k"]);
    qemuImg(["snapshot", "-c", "y", file]);
    qemuIo(file, ["write -P 5 1M 1M"]);
    qemuImg(["snapshot", "-d", "x", file]);
    compactAndVerify(file);
  });

  describe("refusals leave the file untouched", () => {
    const fragmented = (name: string, opts: string[] = []) => {
      const file = path.join(dir, name);
      qemuImg(["create", "-q", "-f", "qcow2", ...opts, file, "8M"]);
      qemuIo(file, ["write -P 1 0 4M"]);
      qemuImg(["snapshot", "-c", "s", file]);
      qemuIo(file, ["write -P 2 0 2M"]);
      qemuImg(["snapshot", "-d", "s", file]);
      return file;
    };
    const attempt = (file: string, opts: { readOnly?: boolean } = {}) => {
      const before = fs.readFileSync(file);
      const f = NodeFile.open(file, { readOnly: opts.readOnly });
      let error: unknown;
      try {
        compactImage(f, opts);
      } catch (e) {
        error = e;
      } finally {
        f.close();
      }
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      return error as Error;
    };

    it("opened read-only", () => {
      const e = attempt(fragmented("ro.qcow2"), { readOnly: true });
      expect(e).toBeInstanceOf(RequestError);
      expect(e.message).toMatch(/read-only/);
    });

    it("version 2 (no dirty bit)", () => {
      const e = attempt(fragmented("v2.qcow2", ["-o", "compat=0.10"]));
      expect(e).toBeInstanceOf(UnsupportedFeatureError);
      expect(e.message).toMatch(/version 3/);
    });

    it("a corrupt image (a cluster in use counted 0)", () => {
      const file = fragmented("corrupt.qcow2");
      // Zero the refcount of the first L2 table: qemu-img check reports it as an error.
      const img = openImagePath(file, { readOnly: true }) as Qcow2Image;
      const l2 = img.core.l1[0];
      const block = img.core.refcounts.table[0];
      img.close();
      const fd = fs.openSync(file, "r+");
      fs.writeSync(fd, Buffer.alloc(2), 0, 2, block + (l2 / 65536) * 2);
      fs.closeSync(fd);
      expect(qemuCheck(file).status).toBe(2);
      const e = attempt(file);
      expect(e).toBeInstanceOf(ImageFormatError);
      expect(e.message).toMatch(/check -r all/);
    });
  });
});
