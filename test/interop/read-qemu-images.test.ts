/**
 * refcow reads every image QEMU writes byte for byte as QEMU does: each feature of the format, the active
 * layer and every internal snapshot, compared with `qemu-img convert -O raw`.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("read");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const p = (f: string) => path.join(dir, f);

function readAll(file: string, snapshot?: string): Buffer {
  const img = openImagePath(file, { readOnly: true });
  try {
    const buf = new Uint8Array(img.size);
    if (snapshot) (img as Qcow2Image).readSnapshot(snapshot, buf, 0);
    else img.readInto(buf, 0);
    return Buffer.from(buf);
  } finally {
    img.close();
  }
}

function expectSame(file: string, snapshots: string[] = []): void {
  expect(readAll(file).equals(qemuRaw(file)), `${path.basename(file)} active layer`).toBe(true);
  for (const s of snapshots) expect(readAll(file, s).equals(qemuRaw(file, s)), `${path.basename(file)} snapshot ${s}`).toBe(true);
}

/** A few writes that leave data, zero clusters of both kinds, unallocated ranges and partial clusters. */
function mixedWrites(file: string, cs: number): void {
  qemuIo(file, [
    `write -P 0x11 0 ${cs * 3}`,
    `write -P 0x22 ${cs * 5 + 512} 1536`,
    `write -z ${cs} ${cs}`, // allocated → zero with its offset kept (v3)
    `write -z ${cs * 8} ${cs * 2}`, // unallocated → zero flag
    `write -P 0x33 ${cs * 11 - 512} 1024`,
  ]);
}

describe("reading images written by QEMU", () => {
  for (const compat of ["0.10", "1.1"]) {
    for (const cs of [512, 4096, 65536, 2 * 1024 * 1024]) {
      it(`compat=${compat}, cluster_size=${cs}, with snapshots`, () => {
        const f = p(`c${compat}-${cs}.qcow2`);
        qemuImg(["create", "-q", "-f", "qcow2", "-o", `compat=${compat},cluster_size=${cs}`, f, String(Math.max(cs * 16, 4 << 20) + 5 * 1024)]);
        mixedWrites(f, cs);
        qemuImg(["snapshot", "-c", "one", f]);
        qemuIo(f, [`write -P 0x44 ${cs * 2} ${cs}`, `discard 0 ${cs}`]);
        qemuImg(["snapshot", "-c", "two", f]);
        qemuIo(f, [`write -P 0x55 ${cs / 2} ${cs}`]);
        expectSame(f, ["one", "two"]);
      });
    }
  }

  for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
    it(`refcount_bits=${bits}`, () => {
      const f = p(`rc${bits}.qcow2`);
      qemuImg(["create", "-q", "-f", "qcow2", "-o", `refcount_bits=${bits},cluster_size=4096`, f, "8M"]);
      mixedWrites(f, 4096);
      const snaps = bits > 1 ? ["a"] : []; // 1-bit refcounts cannot hold a snapshot's second reference
      for (const s of snaps) qemuImg(["snapshot", "-c", s, f]);
      qemuIo(f, ["write -P 0x66 4096 8192"]);
      expectSame(f, snaps);
    });
  }

  it("compressed clusters, deflate and zstd", () => {
    const src = p("plain.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", src, "4M"]);
    qemuIo(src, ["write -P 0x77 0 3M", "write -P 0x12 3M 700k"]);
    for (const type of ["zlib", "zstd"]) {
      const f = p(`comp-${type}.qcow2`);
      qemuImg(["convert", "-c", "-O", "qcow2", "-o", `compression_type=${type}`, src, f]);
      expectSame(f);
      const img = openImagePath(f, { readOnly: true }) as Qcow2Image;
      expect(img.map().some((e) => e.compressed)).toBe(true);
      img.close();
    }
  });

  it("extended L2 entries (subclusters)", () => {
    const f = p("ext.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", f, "8M"]);
    qemuIo(f, ["write -P 1 8k 4k", "write -z 300k 8k", "write -P 2 3M 5k", "write -P 3 1M 128k"]);
    qemuImg(["snapshot", "-c", "s", f]);
    qemuIo(f, ["write -P 4 12k 4k"]);
    expectSame(f, ["s"]);
  });

  it("backing chains: raw and qcow2 backing files, depth 3, with -F", () => {
    qemuImg(["create", "-q", "-f", "raw", p("base.raw"), "4M"]);
    qemuIo(p("base.raw"), ["write -P 0x11 0 1M"]);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("mid.qcow2")]);
    qemuIo(p("mid.qcow2"), ["write -P 0x22 512k 100k"]);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "-o", "cluster_size=4k", p("top.qcow2")]);
    qemuIo(p("top.qcow2"), ["write -P 0x33 8k 4k", "write -z 600k 8k", "discard 0 4k"]);
    expectSame(p("top.qcow2"));
  });

  it("a virtual size that is not a multiple of the cluster size", () => {
    const f = p("odd.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", f, String((1 << 20) + 5 * 1024 + 512)]);
    qemuIo(f, [`write -P 0x5a ${(1 << 20) - 512} ${5 * 1024 + 1024}`]);
    expectSame(f);
  });

  it("an image far above 4 GiB", () => {
    const f = p("big.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", f, "10G"]);
    qemuIo(f, ["write -P 0x55 5G 64k", "write -P 0x66 4294966784 1024", `write -P 0x77 ${2 ** 33 + 4096} 8k`, "write -z 6G 128k"]);
    const img = openImagePath(f, { readOnly: true });
    const check = (off: number, len: number, byte: number) => {
      const b = img.read(off, len);
      expect(b.every((x) => x === byte), `bytes at ${off}`).toBe(true);
    };
    check(5 * 2 ** 30, 65536, 0x55);
    check(4294966784, 1024, 0x66);
    check(2 ** 33 + 4096, 8192, 0x77);
    check(6 * 2 ** 30, 131072, 0);
    check(7 * 2 ** 30, 4096, 0);
    img.close();
  });

  it("a VM-state area written by refcow survives QEMU's snapshot list and check", () => {
    const f = p("vmstate.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", f, "16M"]);
    const img = openImagePath(f) as Qcow2Image;
    img.write(0, new Uint8Array(4096).fill(1));
    const state = new Uint8Array(300_000).map((_, i) => i % 251);
    img.snapshotCreate("with-state", { vmState: state, vmClockNsec: 1_500_000_000 });
    img.close();
    expect(qemuImg(["snapshot", "-l", f])).toMatch(/with-state\s+293 KiB/);
    expect(qemuImg(["check", f])).toMatch(/No errors/);
    const again = openImagePath(f, { readOnly: true }) as Qcow2Image;
    expect(Buffer.from(again.readVmState("with-state")).equals(Buffer.from(state))).toBe(true);
    again.close();
    // QEMU keeps the VM state across its own snapshot operations.
    qemuImg(["snapshot", "-c", "later", f]);
    const third = openImagePath(f, { readOnly: true }) as Qcow2Image;
    expect(Buffer.from(third.readVmState("with-state")).equals(Buffer.from(state))).toBe(true);
    third.close();
  });
});
