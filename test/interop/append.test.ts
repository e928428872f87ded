/**
 * Images written under the `append` allocation policy are plain qcow2 for QEMU, for every scheme: qemu-img
 * check finds them clean, and qemu-img convert (active layer and every snapshot) and qemu-io read -P see
 * exactly what was written — starting from an image refcow created and from one QEMU created and wrote.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("append");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const MIB = 1 << 20;
const SIZE = 8 * MIB;

function pattern(byte: number, len: number): Uint8Array {
  return new Uint8Array(len).fill(byte);
}

/** Writes, discards, snapshots (one with VM state), a snapshot delete and a reopen, all under append. */
function workload(file: string, scheme: string, model: Uint8Array, snaps: Map<string, Uint8Array>): void {
  let img = openImagePath(file, { scheme, alloc: "append" }) as Qcow2Image;
  const write = (off: number, byte: number, len: number) => {
    img.write(off, pattern(byte, len));
    model.fill(byte, off, off + len);
  };
  write(0, 0x11, 2 * MIB);
  write(3 * MIB + 512, 0x22, 300_000);
  img.snapshotCreate("a", { vmState: pattern(0x5a, 100_000) });
  snaps.set("a", model.slice());
  write(MIB, 0x33, MIB + 4096);
  img.discard(6 * MIB, MIB);
  model.fill(0, 6 * MIB, 7 * MIB);
  img.discard(0, 512 * 1024);
  model.fill(0, 0, 512 * 1024);
  img.snapshotCreate("b");
  snaps.set("b", model.slice());
  img.close();
  img = openImagePath(file, { scheme, alloc: "append" }) as Qcow2Image;
  write(5 * MIB, 0x44, MIB);
  img.snapshotDelete("a");
  snaps.delete("a");
  write(200_000, 0x55, 70_000);
  img.writeZeroes(4 * MIB, 65536);
  model.fill(0, 4 * MIB, 4 * MIB + 65536);
  img.snapshotCreate("c");
  snaps.set("c", model.slice());
  write(7 * MIB + 4096, 0x66, 8192);
  img.close();
}

describe("images written under append, read by QEMU", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const origin of ["refcow", "qemu"] as const) {
      it(`${scheme}, image created by ${origin}`, () => {
        const file = path.join(dir, `${scheme}-${origin}.qcow2`);
        const model = new Uint8Array(SIZE);
        const snaps = new Map<string, Uint8Array>();
        if (origin === "refcow") {
          createImagePath(file, { size: SIZE });
        } else {
          qemuImg(["create", "-q", "-f", "qcow2", file, String(SIZE)]);
          qemuIo(file, ["write -P 0x77 1M 3M"]);
          model.fill(0x77, MIB, 4 * MIB);
          qemuImg(["snapshot", "-c", "q0", file]);
          snaps.set("q0", model.slice());
        }
        workload(file, scheme, model, snaps);
        const check = qemuCheck(file);
        expect(check.status, check.out).toBe(0);
        expect(qemuRaw(file).equals(Buffer.from(model))).toBe(true);
        for (const [name, data] of snaps) expect(qemuRaw(file, name).equals(Buffer.from(data)), `snapshot ${name}`).toBe(true);
        const io = qemuIo(file, ["read -P 0x44 5M 1M", "read -P 0x66 7344128 8192", "read -P 0 4M 64k"]);
        expect(io).not.toMatch(/Pattern verification failed|error/i);
      });
    }
  }
});
