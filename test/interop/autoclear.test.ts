/**
 * Autoclear bits and what QEMU does with them. QEMU 7.2's `check -r` rewrites the header without the
 * snapshot table when it clears an autoclear bit it does not know, so no scheme may leave one behind: after a
 * clean close under every scheme the only autoclear bit is QEMU's own bit 0 (bitmaps consistent, and only
 * when the image has bitmaps), `qemu-img check -r all` keeps the snapshots of an image without bitmaps, and
 * refcow's `check -r all` keeps snapshots and bitmaps. (QEMU 7.2's `check -r all` drops the snapshot table of
 * any image that has a bitmap, its own included: the test shows refcow's image fares exactly as QEMU's.) The
 * NBD export, a front end the bitmap tests do not drive, records its clients' writes into the bitmaps as
 * qemu-nbd does, trims included when it passes them on.
 */
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuBitmaps, qemuDirtyMap } from "../helpers/bitmaps.js";
import { killLeftoverServers, refcow, startNbd } from "../helpers/nbd.js";
import { qemuCheck, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("autoclear");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
afterEach(() => killLeftoverServers());

const M = 1024 * 1024;

/** The header's autoclear_features (offset 88, big-endian u64), read straight from the file. */
function autoclearBits(file: string): bigint {
  const fd = fs.openSync(file, "r");
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 88);
    return b.readBigUInt64BE(0);
  } finally {
    fs.closeSync(fd);
  }
}

function snapshotNames(file: string): string[] {
  const info = JSON.parse(qemuImg(["info", "--output=json", "-U", file])) as { snapshots?: { name: string }[] };
  return (info.snapshots ?? []).map((s) => s.name).sort();
}

/** A QEMU-made image with data, one snapshot and (unless told) one bitmap that QEMU dirtied after the snapshot. */
function qemuImage(name: string, bitmap = true): string {
  const file = path.join(dir, `${name}.qcow2`);
  qemuImg(["create", "-q", "-f", "qcow2", file, "64M"]);
  qemuIo(file, ["write -P 0x21 0 4M"]);
  qemuImg(["snapshot", "-c", "s1", file]);
  if (bitmap) qemuImg(["bitmap", "--add", file, "b0"]);
  qemuIo(file, ["write -P 0x22 8M 64k"]);
  return file;
}

describe("no autoclear bit QEMU does not know survives a clean close", () => {
  for (const scheme of SCHEME_NAMES) {
    it(`${scheme}: only bit 0 is left; check -r all keeps the snapshot (and the bitmap) as it does on QEMU's own image`, async () => {
      const file = qemuImage(`scheme-${scheme}`);
      const plain = qemuImage(`plain-${scheme}`, false);
      const copy = `${file}.qemu`;
      fs.copyFileSync(file, copy);
      const writes = ["write -P 0x33 1M 4k", "write -P 0x34 20M 64k"];
      for (const f of [file, plain]) {
        const r = await refcow(["io", "--scheme", scheme, ...writes.flatMap((c) => ["-c", c]), f]);
        expect(r.stderr).toBe("");
        expect(r.status).toBe(0);
      }
      qemuIo(copy, writes);
      expect(autoclearBits(file)).toBe(1n);
      expect(autoclearBits(plain)).toBe(0n);
      expect(qemuCheck(file).status).toBe(0);
      // QEMU's bitmap holds both writers' writes: its own at 8M and refcow's at 1M and 20M.
      const dirty = qemuDirtyMap(file, "b0").filter((x) => x.dirty).map((x) => [x.offset, x.length]);
      expect(dirty).toEqual([
        [1 * M, 64 * 1024],
        [8 * M, 64 * 1024],
        [20 * M, 64 * 1024],
      ]);

      // Without bitmaps, QEMU's repair keeps every snapshot of refcow's image.
      expect(qemuCheck(plain, ["-r", "all"]).status).toBe(0);
      expect(snapshotNames(plain)).toEqual(["s1"]);
      // refcow's repair keeps the snapshot and the bitmap.
      const own = await refcow(["check", "-r", "all", file]);
      expect(own.status).toBe(0);
      expect(snapshotNames(file)).toEqual(["s1"]);
      expect(qemuBitmaps(file)).toEqual([{ name: "b0", granularity: 65536, flags: ["auto"] }]);
      // With a bitmap, QEMU 7.2's repair drops the snapshot table even of an image only QEMU wrote (a QEMU
      // behaviour, not a refcow one): refcow's image fares exactly as QEMU's own copy does.
      const theirs = qemuCheck(copy, ["-r", "all"]);
      const ours = qemuCheck(file, ["-r", "all"]);
      expect(ours.status).toBe(theirs.status);
      expect(snapshotNames(file)).toEqual(snapshotNames(copy));
      expect(qemuBitmaps(file)).toEqual(qemuBitmaps(copy));
    }, 60_000);
  }
});

/** Serves `file` with qemu-nbd (writable) until the client's commands ran; the oracle for refcow nbd. */
async function qemuNbdRun(file: string, sock: string, extra: string[], commands: string[]): Promise<void> {
  const pidFile = `${sock}.pid`;
  execFileSync("qemu-nbd", ["--fork", "-t", "-k", sock, "--pid-file", pidFile, ...extra, "-f", "qcow2", file], { stdio: ["ignore", "ignore", "pipe"] });
  const pid = Number(fs.readFileSync(pidFile, "utf8"));
  try {
    execFileSync("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), `nbd+unix:///?socket=${sock}`], { stdio: ["ignore", "pipe", "pipe"] });
  } finally {
    process.kill(pid, "SIGTERM");
    // Its image is closed (bitmaps stored) once the process is gone.
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 400 && alive(); i++) await new Promise((r) => setTimeout(r, 25));
  }
}

describe("the NBD export records its clients' writes in the bitmaps", () => {
  for (const serve of ["inline", "ring"]) {
    for (const discard of ["ignore", "unmap"]) {
      it(`refcow nbd --serve=${serve} --discard=${discard}: an NBD client's writes, write-zeroes and trims dirty what they dirty through qemu-nbd`, async () => {
        const file = path.join(dir, `nbd-${serve}-${discard}.qcow2`);
        qemuImg(["create", "-q", "-f", "qcow2", file, "64M"]);
        qemuImg(["bitmap", "--add", "-g", "4096", file, "b0"]);
        const copy = `${file}.qemu`;
        fs.copyFileSync(file, copy);
        const ops = ["write -P 0x41 3M 12k", "write -z 9M 64k", "discard 40M 128k", "write -P 0x42 63M 4k"];

        const server = await startNbd(path.join(dir, `nbd-${serve}-${discard}.sock`), ["-t", `--serve=${serve}`, `--discard=${discard}`, "--no-warm-up", "-f", "qcow2", file]);
        execFileSync("qemu-io", ["-f", "raw", ...ops.flatMap((c) => ["-c", c]), server.uri], { stdio: ["ignore", "pipe", "pipe"] });
        server.child.kill("SIGTERM");
        const ended = await server.exited;
        expect(ended.stderr).toBe("");
        await qemuNbdRun(copy, path.join(dir, `qemu-${serve}-${discard}.sock`), [`--discard=${discard}`], ops);

        expect(qemuCheck(file).status).toBe(0);
        expect(qemuBitmaps(file)).toEqual(qemuBitmaps(copy));
        const map = qemuDirtyMap(file, "b0");
        expect(map).toEqual(qemuDirtyMap(copy, "b0"));
        expect(map.filter((x) => x.dirty).length).toBe(discard === "unmap" ? 4 : 3);
      }, 60_000);
    }
  }
});
