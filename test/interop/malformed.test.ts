/**
 * Malformed images and bad requests: a clear error naming what is wrong, no crash trace, no hang, and not one
 * byte written to the image.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { openImagePath } from "../../src/open/open-path.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("bad");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A valid image with data, a snapshot and a second L2 table; returns its bytes. */
function valid(): Buffer {
  const f = path.join(dir, "valid.qcow2");
  if (!fs.existsSync(f)) {
    qemuImg(["create", "-q", "-f", "qcow2", f, "1G"]);
    qemuIo(f, ["write -P 1 0 128k", "write -P 2 600M 64k"]);
    qemuImg(["snapshot", "-c", "snap", f]);
    qemuIo(f, ["write -P 3 0 4k"]);
  }
  return fs.readFileSync(f);
}

const be = (b: Buffer) => ({
  u32: (o: number) => b.readUInt32BE(o),
  u64: (o: number) => Number(b.readBigUInt64BE(o)),
  set32: (o: number, v: number) => b.writeUInt32BE(v >>> 0, o),
  set64: (o: number, v: number | bigint) => b.writeBigUInt64BE(BigInt(v), o),
});

let n = 0;
/** Writes a mutant, runs `use` on it, and checks the file was not modified. */
function mutant(mutate: (b: Buffer) => unknown, use: (file: string) => void): void {
  let b = Buffer.from(valid());
  const r = mutate(b);
  if (r instanceof Buffer) b = r;
  const f = path.join(dir, `m${n++}.qcow2`);
  fs.writeFileSync(f, b);
  use(f);
  // Found corrupt while open for writing, the image is marked corrupt (as QEMU does): that bit, nothing else.
  const after = fs.readFileSync(f);
  if (after.length === b.length && after[79] === (b[79] | 2)) after[79] = b[79];
  expect(after.equals(b), "the image must not be written (but for the corrupt bit)").toBe(true);
}

/** Opening (read-write) and reading everything fails with this message; the error is one of the engine's. */
function expectRefused(re: RegExp) {
  return (file: string) => {
    let err: Error | undefined;
    try {
      const img = openImagePath(file, { format: "qcow2" }) as Qcow2Image;
      try {
        for (let off = 0; off < img.size; off += 64 << 20) img.read(off, 65536);
        img.read(600 << 20, 65536);
        img.readSnapshot("snap", new Uint8Array(65536), 0);
        img.check();
      } finally {
        // Nothing was written: closing a refused image must not write either.
      }
    } catch (e) {
      err = e as Error;
    }
    expect(err, "expected an error").toBeDefined();
    expect(["ImageFormatError", "UnsupportedFeatureError", "RequestError"]).toContain(err!.name);
    expect(err!.message).toMatch(re);
  };
}

describe("malformed images", () => {
  it("a truncated file", () => mutant((b) => b.subarray(0, 50), expectRefused(/too short/)));
  it("a bad magic", () => mutant((b) => void b.writeUInt32BE(0x12345678, 0), expectRefused(/not a qcow2 image/)));
  it("an L1 table past the end of the file", () => mutant((b) => be(b).set64(40, 2 ** 40), expectRefused(/L1 table .* past the end/)));
  it("an unaligned L1 table", () => mutant((b) => be(b).set64(40, be(b).u64(40) + 512), expectRefused(/L1 table offset .* not cluster aligned/)));
  it("a refcount table past the end", () => mutant((b) => be(b).set64(48, 2 ** 40), expectRefused(/refcount table .* past the end/)));
  it("an empty refcount table", () => mutant((b) => be(b).set32(56, 0), expectRefused(/empty refcount table/)));
  it("a huge L1 size", () => mutant((b) => be(b).set32(36, 0x7fffffff), expectRefused(/L1 table too large/)));
  it("an L1 size too small for the disk", () => mutant((b) => be(b).set32(36, 1), expectRefused(/L1 table is too small/)));
  it("an unknown incompatible feature bit", () => mutant((b) => be(b).set64(72, 1n << 20n), expectRefused(/Unknown incompatible feature: bit 20/)));
  it("an encrypted image", () => mutant((b) => be(b).set32(32, 1), expectRefused(/encrypted/)));
  it("a snapshot table full of garbage", () =>
    mutant((b) => {
      const off = be(b).u64(64);
      for (let i = 0; i < 64; i++) b[off + i] = 0xff;
    }, expectRefused(/snapshot/)));
  it("too many snapshots", () => mutant((b) => be(b).set32(60, 100000), expectRefused(/too many snapshots/)));
  it("an L2 entry that points into the refcount table", () =>
    mutant((b) => {
      const l1 = be(b).u64(40);
      const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
      be(b).set64(l2, 0x8000_0000_0000_0000n | BigInt(be(b).u64(48))); // guest cluster 0 → the refcount table
    }, expectRefused(/holds the refcount table/)));
  it("an L2 entry with the COPIED flag and no cluster", () =>
    mutant((b) => {
      const l1 = be(b).u64(40);
      const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
      be(b).set64(l2, 0x8000_0000_0000_0000n);
    }, expectRefused(/COPIED flag without a cluster/)));
  it("an L2 entry with reserved bits", () =>
    mutant((b) => {
      const l1 = be(b).u64(40);
      const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
      b.writeUInt32BE(b.readUInt32BE(l2 + 4) | 0x2, l2 + 4);
    }, expectRefused(/reserved bits/)));
});

describe("an image found corrupt while open for writing", () => {
  it("is marked corrupt as QEMU marks it, refused from then on, and repaired by check -r all", () => {
    const f = path.join(dir, "marked.qcow2");
    const b = Buffer.from(valid());
    const l1 = be(b).u64(40);
    const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
    b.writeUInt32BE(b.readUInt32BE(l2 + 4) | 0x2, l2 + 4); // reserved bits in guest cluster 0's entry
    fs.writeFileSync(f, b);
    const img = openImagePath(f) as Qcow2Image;
    expect(() => img.read(600 << 20, 4096)).not.toThrow(); // another L2 table: fine
    expect(() => img.read(0, 4096)).toThrow(/reserved bits/);
    expect(img.corrupt).toBe(true);
    expect(() => img.write(600 << 20, new Uint8Array(4096))).toThrow(/image is corrupt .* refused/);
    expect(() => img.read(600 << 20, 4096)).toThrow(/refused/);
    img.close();
    const after = fs.readFileSync(f);
    expect(after[79] & 2, "corrupt bit").toBe(2);
    after[79] &= ~2;
    expect(after.equals(b), "nothing but the corrupt bit was written").toBe(true);
    expect(qemuImg(["info", f])).toMatch(/corrupt: true/);
    expect(() => openImagePath(f)).toThrow(/marked corrupt/);
    openImagePath(f, { readOnly: true }).close();
  });
});

describe("requests and writers", () => {
  it("a request past the end of the disk is refused and changes nothing", () => {
    mutant(() => undefined, (file) => {
      const img = openImagePath(file, { readOnly: true });
      expect(() => img.read(img.size - 10, 20)).toThrow(/past the end of the disk/);
      img.close();
    });
    const f = path.join(dir, "req.qcow2");
    fs.writeFileSync(f, valid());
    const before = fs.readFileSync(f);
    const img = openImagePath(f) as Qcow2Image;
    expect(() => img.write(img.size - 4096, new Uint8Array(8192))).toThrow(/past the end of the disk/);
    expect(() => img.snapshotApply("nope")).toThrow(/snapshot 'nope' does not exist/);
    expect(() => img.snapshotDelete("nope")).toThrow(/does not exist/);
    img.close();
    expect(fs.readFileSync(f).equals(before)).toBe(true);
  });

  it("unknown autoclear bits are cleared by a writable open, as QEMU does", () => {
    const f = path.join(dir, "autoclear.qcow2");
    const b = Buffer.from(valid());
    be(b).set64(88, 1n << 7n);
    fs.writeFileSync(f, b);
    openImagePath(f, { readOnly: true }).close();
    expect(fs.readFileSync(f).readBigUInt64BE(88)).toBe(1n << 7n);
    openImagePath(f).close();
    expect(fs.readFileSync(f).readBigUInt64BE(88)).toBe(0n);
  });

  it("a refcount overflow is refused before anything is written", () => {
    const f = path.join(dir, "narrow.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "refcount_bits=2", f, "4M"]);
    qemuIo(f, ["write -P 1 0 64k"]);
    const img = openImagePath(f) as Qcow2Image;
    img.snapshotCreate("a");
    img.snapshotCreate("b");
    expect(() => img.snapshotCreate("c")).toThrow(/2-bit refcounts can hold/);
    img.close();
    expect(qemuImg(["check", f])).toMatch(/No errors/);
  });
});
