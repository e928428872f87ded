/**
 * Persistent dirty bitmaps against QEMU (the oracle): the same guest writes, write-zeroes and discards done by
 * refcow (library, `refcow io` with and without its worker, every scheme) and by qemu-io on a copy must leave
 * the same bitmaps, as qemu-img info lists them and as qemu-nbd + nbdinfo read their dirty bits; qemu-img
 * check must find refcow's images clean. Then: a writer killed mid-write, the bitmap command, resize,
 * snapshots, compaction and convert --bitmaps, each side by side with QEMU's tools.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { type DirtyRun, qemuBitmaps, qemuDirtyMap, withOffsets } from "../helpers/bitmaps.js";
import { qemuCheck, qemuCompare, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";
import { REFCOW_BIN } from "../cli/qemu-harness.js";

const dir = tempDir("bitmaps");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const M = 1024 * 1024;
const SIZE = 64 * M;
const BITMAPS = ["b0", "b1", "b2", "b3"];

/** refcow's CLI, as the user runs it; returns status and output. */
function refcow(args: string[]): { status: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(process.execPath, [REFCOW_BIN, ...args], { stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 }).toString();
    return { status: 0, stdout, stderr: "" };
  } catch (e) {
    const err = e as { status: number; stdout: Buffer; stderr: Buffer };
    return { status: err.status, stdout: `${err.stdout}`, stderr: `${err.stderr}` };
  }
}

function qemuImgStatus(args: string[]): { status: number; stderr: string } {
  try {
    execFileSync("qemu-img", args, { stdio: ["ignore", "pipe", "pipe"] });
    return { status: 0, stderr: "" };
  } catch (e) {
    const err = e as { status: number; stderr: Buffer };
    return { status: err.status, stderr: `${err.stderr}` };
  }
}

type Op = { kind: "write" | "zero" | "discard"; offset: number; length: number };

/** Unaligned to the bitmaps' granularities, across cluster boundaries, up to the end of the disk. */
const OPS: Op[] = [
  { kind: "write", offset: 1 * M + 512, length: 3072 },
  { kind: "write", offset: 5 * M - 4096, length: 8192 },
  { kind: "write", offset: 63 * M, length: 1 * M },
  { kind: "zero", offset: 10 * M, length: 128 * 1024 },
  { kind: "zero", offset: 20 * M + 100 * 512, length: 512 },
  { kind: "discard", offset: 30 * M + 4096, length: 4096 },
  { kind: "discard", offset: 31 * M, length: 192 * 1024 },
  { kind: "write", offset: 40 * M + 3 * 65536 + 1024, length: 65536 },
];

const ioCommand = (op: Op) => (op.kind === "write" ? `write -P 0x5a ${op.offset} ${op.length}` : op.kind === "zero" ? `write -z ${op.offset} ${op.length}` : `discard ${op.offset} ${op.length}`);

function libraryOps(img: Qcow2Image, ops: Op[]): void {
  for (const op of ops) {
    if (op.kind === "write") img.write(op.offset, new Uint8Array(op.length).fill(0x5a));
    else if (op.kind === "zero") img.writeZeroes(op.offset, op.length);
    else img.discard(op.offset, op.length);
  }
}

/**
 * The starting image: data, a snapshot (so that later writes copy on write), then bitmaps added by both tools:
 * b0 (64 KiB) and b2 (disabled) by qemu-img, b1 (4 KiB) and b3 (512 B) by refcow.
 */
function baseImage(): string {
  const f = path.join(dir, "base.qcow2");
  if (fs.existsSync(f)) return f;
  qemuImg(["create", "-q", "-f", "qcow2", f, String(SIZE)]);
  qemuIo(f, ["write -P 1 0 16M", "write -P 2 30M 2M", "write -P 3 60M 4M"]);
  qemuImg(["snapshot", "-c", "s0", f]);
  qemuImg(["bitmap", "--add", f, "b0"]);
  expect(refcow(["bitmap", "--add", "-g", "4k", f, "b1"]).status).toBe(0);
  qemuImg(["bitmap", "--add", "--disable", f, "b2"]);
  expect(refcow(["bitmap", "--add", "-g", "512", f, "b3"]).status).toBe(0);
  return f;
}

function copyOf(name: string): string {
  const f = path.join(dir, name);
  fs.copyFileSync(baseImage(), f);
  return f;
}

/** QEMU's result for OPS: the bitmaps qemu-img info lists and each dirty map. */
let expected: { bitmaps: ReturnType<typeof qemuBitmaps>; maps: Map<string, DirtyRun[]>; file: string };

beforeAll(() => {
  const q = copyOf("qemu.qcow2");
  qemuIo(q, OPS.map(ioCommand));
  expected = { bitmaps: qemuBitmaps(q), maps: new Map(BITMAPS.map((b) => [b, qemuDirtyMap(q, b)])), file: q };
  // The oracle itself did something: the enabled bitmaps are dirty somewhere, the disabled one is not.
  expect(expected.maps.get("b0")!.some((r) => r.dirty)).toBe(true);
  expect(expected.maps.get("b2")!.some((r) => r.dirty)).toBe(false);
}, 60_000);

function expectLikeQemu(file: string, what: string): void {
  const check = qemuCheck(file);
  expect(check.status, `qemu-img check of ${what}:\n${check.out}`).toBe(0);
  expect(check.out).not.toMatch(/leak/i);
  expect(qemuBitmaps(file), `qemu-img info's bitmaps of ${what}`).toEqual(expected.bitmaps);
  for (const b of BITMAPS) expect(qemuDirtyMap(file, b), `bitmap ${b} of ${what}`).toEqual(expected.maps.get(b));
  expect(qemuCompare(expected.file, file), `guest data of ${what}`).toBe(true);
}

describe("guest writes are recorded as QEMU records them", () => {
  for (const scheme of SCHEME_NAMES) {
    it(`${scheme}: library`, () => {
      const f = copyOf(`lib-${scheme}.qcow2`);
      const img = openImagePath(f, { scheme }) as Qcow2Image;
      libraryOps(img, OPS);
      // In memory, before the close stores them, bitmapExtents already says what QEMU will read.
      for (const b of BITMAPS) expect(withOffsets(img.bitmapExtents(b, 0, SIZE)), `bitmapExtents ${b}`).toEqual(expected.maps.get(b));
      img.close();
      expectLikeQemu(f, `${scheme} (library)`);
    }, 60_000);

    for (const inProcess of [false, true]) {
      const how = inProcess ? "refcow io --in-process" : "refcow io (worker)";
      it(`${scheme}: ${how}`, () => {
        const f = copyOf(`cli-${scheme}-${inProcess}.qcow2`);
        const args = ["io", "--scheme", scheme, ...(inProcess ? ["--in-process"] : []), ...OPS.flatMap((op) => ["-c", ioCommand(op)]), f];
        const r = refcow(args);
        expect(r.status, r.stderr).toBe(0);
        expectLikeQemu(f, `${scheme} (${how})`);
      }, 60_000);
    }
  }

  it("bitmapExtents of a read-only open: exact runs for any sub-range", () => {
    const img = openImagePath(expected.file, { readOnly: true }) as Qcow2Image;
    try {
      const full = expected.maps.get("b1")!;
      for (const [off, len] of [[0, SIZE], [5 * M - 4097, 10000], [63 * M + 1, M - 1], [12345, 0]] as const) {
        const runs = img.bitmapExtents("b1", off, len);
        expect(runs.reduce((n, r) => n + r.length, 0)).toBe(len);
        for (let i = 1; i < runs.length; i++) expect(runs[i]!.dirty).not.toBe(runs[i - 1]!.dirty);
        // Each run agrees with QEMU's map at its first byte.
        for (const r of withOffsets(runs, off)) {
          const q = full.find((x) => x.offset <= r.offset && r.offset < x.offset + x.length)!;
          expect(r.dirty).toBe(q.dirty);
          expect(r.offset + r.length).toBeLessThanOrEqual(q.offset + q.length);
        }
      }
      expect(() => img.bitmapExtents("nope", 0, 512)).toThrow("Dirty bitmap 'nope' not found");
      expect(() => img.bitmapExtents("b1", SIZE - 512, 1024)).toThrow(/invalid range/);
      expect(img.bitmapList()).toEqual([
        { name: "b0", granularity: 65536, enabled: true, inUse: false },
        { name: "b1", granularity: 4096, enabled: true, inUse: false },
        { name: "b2", granularity: 65536, enabled: false, inUse: false },
        { name: "b3", granularity: 512, enabled: true, inUse: false },
      ]);
      expect(() => img.bitmapAdd("x")).toThrow(/read-only/);
    } finally {
      img.close();
    }
  });
});

// ------------------------------------------------------------------------------------------- a killed writer

const child = path.join(import.meta.dirname, "../schemes/writer-child.mjs");

function runAndKill(file: string, scheme: string, acks: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, file, scheme, "writeback", "17"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d;
      if (out.split("\n").filter((l) => l.startsWith("ACK")).length >= acks) p.kill("SIGKILL");
    });
    p.stderr.on("data", (d: Buffer) => (err += d));
    p.on("exit", (code, signal) => (signal === "SIGKILL" ? resolve() : reject(new Error(`writer exited with ${code}: ${err}`))));
  });
}

describe("a writer killed mid-write", () => {
  // The schemes whose killed image QEMU opens (no refcow log bit): QEMU's repair is the oracle.
  for (const scheme of ["eager", "lazy", "owner"]) {
    it(`${scheme}: bitmaps stay in-use; check -r all ends as qemu-img's`, async () => {
      const f = path.join(dir, `killed-${scheme}.qcow2`);
      qemuImg(["create", "-q", "-f", "qcow2", f, "2M"]);
      qemuImg(["bitmap", "--add", f, "k0"]);
      qemuImg(["bitmap", "--add", "--disable", f, "k1"]);
      await runAndKill(f, scheme, 24);
      const killed = qemuBitmaps(f);
      expect(killed.map((b) => b.flags)).toEqual([["in-use", "auto"], ["in-use"]]);
      for (const mode of [[], ["-r", "leaks"], ["-r", "all"]]) {
        const q = `${f}.q${mode.length}`;
        const r = `${f}.r${mode.length}`;
        fs.copyFileSync(f, q);
        fs.copyFileSync(f, r);
        const qs = qemuCheck(q, mode);
        const rs = refcow(["check", ...mode, r]);
        // The library names them (the CLI prints what qemu-img prints: nothing).
        const lib = openImagePath(`${f}`, { readOnly: true, forCheck: true }) as Qcow2Image;
        expect(lib.check().inUseBitmaps).toEqual(["k0", "k1"]);
        lib.close();
        expect(rs.status, `refcow check ${mode.join(" ")}:\n${rs.stdout}${rs.stderr}\nqemu-img:\n${qs.out}`).toBe(qs.status);
        expect(qemuBitmaps(r)).toEqual(qemuBitmaps(q));
        // And what is left is what QEMU's repair leaves (a leak repair cannot fix a dirty image's counts).
        expect(qemuCheck(r).status, `qemu-img check after refcow check ${mode.join(" ")}`).toBe(qemuCheck(q).status);
      }
      // A later clean open and close (recovery included) keeps them as they are: in-use, only removable.
      const img = openImagePath(f, { scheme }) as Qcow2Image;
      expect(img.bitmapList().map((b) => b.inUse)).toEqual([true, true]);
      expect(() => img.bitmapClear("k0")).toThrow("Bitmap 'k0' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk");
      expect(() => img.resize(4 * M)).toThrow(/Bitmap 'k0' is inconsistent/);
      img.write(0, new Uint8Array(4096).fill(9));
      img.close();
      expect(qemuBitmaps(f)).toEqual(killed);
      // A cluster the killed writer had allocated and not yet linked may remain as a leak (0 or 3), never more.
      expect([0, 3]).toContain(qemuCheck(f).status);
      expect(refcow(["bitmap", "--remove", f, "k0"]).status).toBe(0);
      expect(qemuBitmaps(f).map((b) => b.name)).toEqual(["k1"]);
      expect(refcow(["check", "-r", "leaks", f]).status).toBe(0);
      expect(qemuCheck(f).status).toBe(0);
    }, 60_000);
  }
});

// ------------------------------------------------------------------------------------------------ refcow info

describe("refcow info lists bitmaps as qemu-img info does", () => {
  it("human and JSON output, byte for byte (flags in-use and auto, a disabled bitmap's empty list)", async () => {
    const f = path.join(dir, "info.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", f, "64M"]);
    qemuImg(["bitmap", "--add", f, "b0"]);
    qemuImg(["bitmap", "--add", "--disable", "-g", "4k", f, "b é"]);
    await runAndKill(f, "eager", 3);
    qemuImg(["bitmap", "--add", f, "after"]);
    for (const output of ["human", "json"]) {
      const q = execFileSync("qemu-img", ["info", `--output=${output}`, f]).toString();
      const r = refcow(["info", `--output=${output}`, f]);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(q);
    }
    expect(qemuBitmaps(f).map((b) => b.flags)).toEqual([["in-use", "auto"], ["in-use"], ["auto"]]);
  }, 30_000);
});

// ----------------------------------------------------------------------------------------- the bitmap command

describe("refcow bitmap as qemu-img bitmap", () => {
  it("the same operations leave the same bitmaps, with the same errors", () => {
    const q = copyOf("cmd-q.qcow2");
    const r = copyOf("cmd-r.qcow2");
    const other = path.join(dir, "other.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", other, String(SIZE)]);
    qemuImg(["bitmap", "--add", "-g", "8k", other, "ob"]);
    qemuIo(other, ["write 7M 12k", "write 50M 1M"]);
    const steps: string[][] = [
      ["--add", "-g", "16k", "%", "n0"],
      ["--merge", "b1", "%", "n0"],
      ["--merge", "ob", "-b", other, "-F", "qcow2", "%", "b2"],
      ["--clear", "%", "b1"],
      ["--disable", "%", "b0"],
      ["--remove", "%", "b3"],
      ["--add", "--disable", "%", "n1"],
      ["--enable", "--merge", "b2", "%", "n1"],
      // Errors: each as qemu-img words it.
      ["--add", "%", "n0"],
      ["--clear", "%", "nope"],
      ["--merge", "nope", "%", "b0"],
      ["--remove", "-g", "4k", "%", "b0"],
      ["--add", "-g", "1000", "%", "x"],
      ["--add", "-g", "4G", "%", "x"],
      ["--clear", "-b", other, "%", "b0"],
      ["%", "b0"],
      // The first add is kept although the second fails.
      ["--add", "%", "n2", "--add"],
    ];
    for (const step of steps) {
      const qs = qemuImgStatus(["bitmap", ...step.map((a) => (a === "%" ? q : a))]);
      const rs = refcow(["bitmap", ...step.map((a) => (a === "%" ? r : a))]);
      expect(rs.status, `${step.join(" ")}: ${rs.stderr}`).toBe(qs.status);
      if (qs.status !== 0) {
        // refcow prints qemu-img's message on one line, after "refcow: ".
        const qmsg = qs.stderr.split("\n").filter(Boolean).map((l) => l.replace(/^qemu-img: /, "")).join(" ").replaceAll(q, "IMG");
        const rmsg = rs.stderr.replace(/^refcow: /, "").replace(/ \(try 'refcow bitmap --help'\)/, "").replaceAll("\n", " ").trim().replaceAll(r, "IMG");
        expect(rmsg, step.join(" ")).toBe(qmsg);
      }
      expect(qemuBitmaps(r), step.join(" ")).toEqual(qemuBitmaps(q));
    }
    // Writes with b0 disabled leave it as it was; n1 (enabled) records them.
    qemuIo(q, ["write 33M 4k"]);
    expect(refcow(["io", "-c", "write 33M 4k", r]).status).toBe(0);
    for (const b of qemuBitmaps(q)) expect(qemuDirtyMap(r, b.name), b.name).toEqual(qemuDirtyMap(q, b.name));
    expect(qemuCheck(r).status).toBe(0);
  }, 120_000);

  it("default granularity follows the cluster size as QEMU's (4 KiB..64 KiB); v2 images cannot store bitmaps", () => {
    for (const cs of ["512", "4k", "64k", "2M"]) {
      const q = path.join(dir, `g-${cs}-q.qcow2`);
      const r = path.join(dir, `g-${cs}-r.qcow2`);
      qemuImg(["create", "-q", "-f", "qcow2", "-o", `cluster_size=${cs}`, q, "64M"]);
      fs.copyFileSync(q, r);
      qemuImg(["bitmap", "--add", q, "d"]);
      expect(refcow(["bitmap", "--add", r, "d"]).status).toBe(0);
      expect(qemuBitmaps(r)).toEqual(qemuBitmaps(q));
    }
    const v2 = path.join(dir, "v2.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "64M"]);
    const rs = refcow(["bitmap", "--add", v2, "d"]);
    expect(rs.status).toBe(1);
    expect(rs.stderr).toMatch(/Operation add on bitmap d failed: Can't make bitmap 'd' persistent: Cannot store dirty bitmaps in qcow2 v2 files/);
  });
});

// -------------------------------------------------------------------------------- resize, snapshots, unaware writers

describe("structural operations", () => {
  it("resize (qemu-io truncate): bitmaps follow the size, as QEMU's", () => {
    for (const [grow, shrink] of [["128M", "61M"]]) {
      const q = copyOf("resize-q.qcow2");
      const r = copyOf("resize-r.qcow2");
      for (const size of [grow, shrink]) {
        qemuIo(q, [`truncate ${size}`]);
        const rs = refcow(["io", "-c", `truncate ${size}`, r]);
        expect(rs.status, rs.stderr).toBe(0);
        expect(qemuBitmaps(r)).toEqual(qemuBitmaps(q));
        for (const b of BITMAPS) expect(qemuDirtyMap(r, b), `${b} at ${size}`).toEqual(qemuDirtyMap(q, b));
        expect(qemuCheck(r).status).toBe(0);
      }
    }
  }, 60_000);

  it("snapshots: create and delete keep the bitmaps; apply is refused as QEMU refuses it", () => {
    const q = copyOf("snap-q.qcow2");
    const r = copyOf("snap-r.qcow2");
    for (const args of [["-c", "s1"], ["-a", "s0"], ["-d", "s1"]]) {
      const qs = qemuImgStatus(["snapshot", ...args, q]);
      const rs = refcow(["snapshot", ...args, r]);
      expect(rs.status, args.join(" ")).toBe(qs.status);
      if (qs.status) expect(rs.stderr.replace(/^refcow: /, "")).toBe(qs.stderr.replace(/^qemu-img: /, ""));
    }
    expect(qemuBitmaps(r)).toEqual(qemuBitmaps(q));
    for (const b of BITMAPS) expect(qemuDirtyMap(r, b)).toEqual(qemuDirtyMap(q, b));
    expect(qemuCheck(r).status).toBe(0);
  }, 60_000);

  it("an image a bitmap-unaware program wrote (autoclear bit 0 clear): the extension is dropped and its clusters leak, as in QEMU", () => {
    const q = copyOf("unaware-q.qcow2");
    const b = fs.readFileSync(q);
    b[95] &= ~1;
    fs.writeFileSync(q, b);
    const r = path.join(dir, "unaware-r.qcow2");
    fs.copyFileSync(q, r);
    execFileSync("qemu-io", ["-c", "write 0 4k", q], { stdio: "ignore" });
    expect(refcow(["io", "-c", "write 0 4k", r]).status).toBe(0);
    expect(qemuBitmaps(r)).toEqual([]);
    const qs = qemuCheck(q);
    const rs = qemuCheck(r);
    expect(rs.status).toBe(qs.status);
    expect(rs.status).toBe(3);
    // refcow's own check says the same, and its repair frees exactly those leaks.
    expect(refcow(["check", r]).status).toBe(3);
    expect(refcow(["check", "-r", "leaks", r]).status).toBe(0);
    expect(qemuCheck(r).status).toBe(0);
  });
});

// -------------------------------------------------------------------------------------- compact and convert

describe("compaction and convert", () => {
  it("compact moves the bitmaps' clusters and keeps every bit", () => {
    const f = path.join(dir, "compact.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", f, "512M"]);
    qemuIo(f, ["write -P 1 0 8M"]);
    expect(refcow(["bitmap", "--add", "-g", "512", f, "c0"]).status).toBe(0);
    expect(refcow(["io", "-c", "write 100M 1M", "-c", "write 300M 64k", f]).status).toBe(0);
    // Disabled: their clusters stay where they were stored, high in the file, once the data below is gone.
    expect(refcow(["bitmap", "--add", "--disable", f, "c1"]).status).toBe(0);
    expect(refcow(["bitmap", "--disable", f, "c0"]).status).toBe(0);
    expect(refcow(["io", "-c", "discard 0 8M", f]).status).toBe(0);
    const before = qemuBitmaps(f);
    const maps = new Map(before.map((b) => [b.name, qemuDirtyMap(f, b.name)]));
    const c = refcow(["compact", f]);
    expect(c.status, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/\d+ bitmap\)/);
    expect(qemuCheck(f).status).toBe(0);
    expect(qemuBitmaps(f)).toEqual(before);
    for (const [name, map] of maps) expect(qemuDirtyMap(f, name), name).toEqual(map);
    expect(fs.statSync(f).size).toBeLessThan(2 * M);
  }, 60_000);

  it("convert --bitmaps copies them as qemu-img convert --bitmaps does; without it none are copied", () => {
    const src = expected.file;
    for (const extra of [[], ["-l", "s0"]]) {
      const q = path.join(dir, `conv-q${extra.length}.qcow2`);
      const r = path.join(dir, `conv-r${extra.length}.qcow2`);
      qemuImg(["convert", "--bitmaps", ...extra, "-O", "qcow2", src, q]);
      const rs = refcow(["convert", "--bitmaps", ...extra, "-O", "qcow2", src, r]);
      expect(rs.status, rs.stderr).toBe(0);
      expect(qemuBitmaps(r)).toEqual(qemuBitmaps(q));
      for (const b of BITMAPS) expect(qemuDirtyMap(r, b), b).toEqual(qemuDirtyMap(q, b));
      expect(qemuCheck(r).status).toBe(0);
      expect(qemuCompare(q, r)).toBe(true);
    }
    const plain = path.join(dir, "conv-plain.qcow2");
    expect(refcow(["convert", "-O", "qcow2", src, plain]).status).toBe(0);
    expect(qemuBitmaps(plain)).toEqual([]);
    // Refusals, as qemu-img words them.
    for (const args of [
      ["--bitmaps", "-O", "raw", src, path.join(dir, "x.raw")],
      ["--bitmaps", "-O", "qcow2", src, src, path.join(dir, "x2.qcow2")],
      ["--skip-broken-bitmaps", "-O", "qcow2", src, path.join(dir, "x3.qcow2")],
    ]) {
      const qs = qemuImgStatus(["convert", ...args]);
      const rs = refcow(["convert", ...args]);
      expect(rs.status).toBe(qs.status);
      expect(rs.stderr.replace(/^refcow: /, "")).toBe(qs.stderr.replace(/^qemu-img: /, ""));
    }
  }, 60_000);
});
