/**
 * Qcow2Image.resize (qemu-io's truncate) under every refcount scheme and allocation policy, on an image QEMU
 * made with a snapshot: shrinking drops the clusters and L2 tables past the new end (shared ones included,
 * and the active VM-state area),
 * growing makes room in the L1 table; after close, `qemu-img check` finds the image clean and QEMU reads
 * the bytes a plain byte array given the same operations holds, in the active layer and in the snapshot.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openImagePath } from "../../src/open/open-path.js";
import { RequestError } from "../../src/engine/errors.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tempDir("resize");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** 16 MiB, 4 KiB clusters (an L2 table maps 2 MiB): data at 0 and at 12 MiB, snapshot "s". */
function qemuImage(name: string): { file: string; model: Uint8Array } {
  const file = path.join(dir, name);
  qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", file, "16M"]);
  qemuIo(file, ["write -P 0x11 0 64k", "write -P 0x22 12M 64k", "write -z 14M 8k"]);
  qemuImg(["snapshot", "-c", "s", file]);
  const model = new Uint8Array(16 * MiB);
  model.fill(0x11, 0, 64 * KiB);
  model.fill(0x22, 12 * MiB, 12 * MiB + 64 * KiB);
  return { file, model };
}

/** The model's bytes after a resize: cut, or grown with zeroes. */
function resized(model: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(model.subarray(0, Math.min(size, model.length)));
  return out;
}

describe.each(SCHEME_NAMES)("resize under %s", (scheme) => {
  it.each(["first-fit", "append"] as const)("shrink past shared clusters and L2 tables, grow, write (%s)", (alloc) => {
    const { file, model: before } = qemuImage(`${scheme}-${alloc}.qcow2`);
    const snapshot = before.slice();
    let model = before;
    const img = openImagePath(file, { scheme, alloc, cache: "writeback" }) as Qcow2Image;
    const write = (offset: number, length: number, value: number) => {
      img.write(offset, new Uint8Array(length).fill(value));
      model.fill(value, offset, offset + length);
    };
    write(4 * KiB, 4 * KiB, 0x33); // a COW of a cluster shared with the snapshot
    write(13 * MiB, 4 * KiB, 0x44);
    // The active VM-state area (past the disk) goes with the L2 tables a shrink drops, without a leak.
    img.writeVmStateArea(512, new Uint8Array(64 * KiB).fill(0x77));
    const vm = new Uint8Array(64 * KiB);
    img.readVmStateArea(vm, 512);
    expect(vm.every((b) => b === 0x77)).toBe(true);
    img.resize(3 * MiB + 512);
    img.readVmStateArea(vm, 512);
    expect(vm.every((b) => b === 0)).toBe(true); // L1 entries 2..7 dropped; a partial last cluster
    model = resized(model, 3 * MiB + 512);
    expect(img.size).toBe(3 * MiB + 512);
    expect(() => img.read(3 * MiB + 512, 1)).toThrow(RequestError);
    img.resize(40 * MiB); // the L1 table grows
    model = resized(model, 40 * MiB);
    write(39 * MiB, 8 * KiB, 0x55);
    write(12 * MiB, 4 * KiB, 0x66);
    img.flush();
    expect(Buffer.compare(img.read(0, 40 * MiB), model)).toBe(0);
    expect(() => img.resize(1000)).toThrow("The new size must be a multiple of 512");
    img.close();

    expect(qemuCheck(file)).toMatchObject({ status: 0 });
    expect(qemuImg(["info", "--output=json", file])).toContain('"virtual-size": 41943040');
    expect(Buffer.compare(qemuRaw(file), model)).toBe(0);
    // qemu-img convert reads a snapshot at the image's current size: its own 16 MiB, then zeroes.
    expect(Buffer.compare(qemuRaw(file, "s"), resized(snapshot, 40 * MiB))).toBe(0);
    const again = openImagePath(file, { scheme }) as Qcow2Image;
    expect(Buffer.compare(again.read(0, again.size), model)).toBe(0);
    again.close();
    expect(qemuCheck(file)).toMatchObject({ status: 0 });
  });
});

describe("resize refusals", () => {
  it("a read-only image, a v2 image with snapshots", () => {
    const { file } = qemuImage("ro.qcow2");
    const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
    expect(() => ro.resize(32 * MiB)).toThrow("read-only");
    ro.close();
    const v2 = path.join(dir, "v2.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M"]);
    qemuImg(["snapshot", "-c", "s", v2]);
    const img = openImagePath(v2) as Qcow2Image;
    expect(() => img.resize(2 * MiB)).toThrow("Can't resize a v2 image which has snapshots");
    img.close();
    expect(qemuCheck(v2)).toMatchObject({ status: 0 });
  });
});
