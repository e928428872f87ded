/**
 * The CLI against QEMU 7.2's qemu-img and qemu-io, on images QEMU made: the same command line must give the
 * same stdout, the same exit status, and (where stated) the same stderr with "qemu-img: " read as
 * "refcow: ". Commands that write are run on two copies of the images and the resulting files compared.
 *
 * Known, intended differences: refcow prints every error on one line (QEMU continues some on further
 * lines; refcow's line starts with QEMU's first line and appends the rest), its usage errors end in
 * "(try 'refcow <cmd> --help')" instead of a second line, and its warning for a probed raw image is the
 * first line of QEMU's.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  asRefcowStderr,
  assertBuilt,
  both,
  bothIo,
  copyDir,
  firstErrorLine,
  haveQemu,
  makeImages,
  maskDates,
  maskTimings,
  run,
  tempDir,
  type RunResult,
} from "./qemu-harness.js";

const QEMU = haveQemu();
const T = 120_000;

let images: string; // made by QEMU, never modified: read-only commands run here with both tools
let scratch: string[] = [];

/** Two fresh copies of the image set: one for QEMU, one for refcow. */
function twoCopies(tag: string): { q: string; r: string } {
  const q = tempDir(`${tag}-q`);
  const r = tempDir(`${tag}-r`);
  copyDir(images, q);
  copyDir(images, r);
  scratch.push(q, r);
  return { q, r };
}

/** refcow's one-line error, cut to QEMU's first line when it starts with it (see the top of this file). */
function errorLine(refcowStderr: string, qemuStderr: string): string {
  const r = firstErrorLine(refcowStderr);
  const q = firstErrorLine(qemuStderr);
  return r.startsWith(q) ? q : r;
}

/**
 * Soft check that refcow's stdout (through `mask`), exit status and error line are QEMU's; `label` names the
 * case in the report.
 */
function expectSameOutcome(label: Record<string, unknown>, q: RunResult, r: RunResult, mask: (s: string) => string = (s) => s): void {
  expect.soft({ ...label, out: mask(r.stdout), status: r.status, err: errorLine(r.stderr, q.stderr) }).toEqual({
    ...label,
    out: mask(q.stdout),
    status: q.status,
    err: firstErrorLine(q.stderr),
  });
}

/**
 * Whether two images hold the same thing laid out the same way: raw files byte for byte; qcow2 files byte
 * for byte past the header cluster, with the same header fields. Cluster 0's header extensions may differ:
 * refcow's feature-name table also names refcow's own feature bits, which moves the backing file name.
 */
function sameImage(a: string, b: string): string {
  const x = fs.readFileSync(a);
  const y = fs.readFileSync(b);
  if (x.readUInt32BE(0) !== 0x514649fb) return Buffer.compare(x, y) === 0 ? "same" : "raw files differ";
  const cs = 2 ** x.readUInt32BE(20);
  if (x.length !== y.length) return `sizes differ: ${x.length} / ${y.length}`;
  if (Buffer.compare(x.subarray(cs), y.subarray(cs)) !== 0) return "clusters past the header differ";
  const version = x.readUInt32BE(4);
  const fieldsEnd = version === 2 ? 72 : 104;
  // Every header field but backing_file_offset (8..16).
  if (Buffer.compare(x.subarray(0, 8), y.subarray(0, 8)) !== 0 || Buffer.compare(x.subarray(16, fieldsEnd), y.subarray(16, fieldsEnd)) !== 0) {
    return "header fields differ";
  }
  const backing = (buf: Buffer): string => {
    const off = Number(buf.readBigUInt64BE(8));
    return off ? buf.subarray(off, off + buf.readUInt32BE(16)).toString("latin1") : "";
  };
  return backing(x) === backing(y) ? "same" : "backing file names differ";
}

describe("refcow vs qemu-img / qemu-io 7.2", () => {
  it("has QEMU's tools to compare with (npm test installs qemu-utils)", () => expect(QEMU).toBe(true));
  beforeAll(() => {
    assertBuilt();
    images = tempDir("images");
    makeImages(images);
  }, T);
  afterAll(() => {
    for (const d of [images, ...scratch]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  // ------------------------------------------------------------------------------------------ read-only

  const infoImages = ["base.qcow2", "sub/ov.qcow2", "comp.qcow2", "v2.qcow2", "snap.qcow2", "lazy.qcow2", "small4k.qcow2", "raw.img", "sub/ovraw.qcow2", "leak.qcow2"];

  it("info: human, JSON, backing chains — identical", async () => {
    const cmds: string[][] = [];
    for (const f of infoImages) {
      cmds.push(["info", f], ["info", "--output=json", f], ["info", "--backing-chain", f], ["info", "--output", "json", "--backing-chain", f]);
    }
    cmds.push(["info", "-f", "raw", "base.qcow2"], ["info", "base.qcow2", "--output=json"], ["info", "-U", "--", "v2.qcow2"]);
    for (const args of cmds) {
      const { q, r } = await both(args, images);
      expect.soft({ args, out: r.stdout, status: r.status }).toEqual({ args, out: q.stdout, status: q.status });
      expect(r.stderr).toBe("");
    }
  }, T);

  it("check: human and JSON, exit codes 0 / 2 / 3 / 63 — identical", async () => {
    for (const f of ["base.qcow2", "sub/ov.qcow2", "v2.qcow2", "snap.qcow2", "lazy.qcow2", "small4k.qcow2", "sub/ovraw.qcow2", "leak.qcow2", "corrupt.qcow2"]) {
      for (const args of [["check", f], ["check", "--output=json", f]]) {
        const { q, r } = await both(args, images);
        // stderr carries the per-cluster findings ("Leaked cluster 10 refcount=1 reference=0", "ERROR ...").
        expect.soft({ args, out: r.stdout, status: r.status, err: r.stderr }).toEqual({ args, out: q.stdout, status: q.status, err: q.stderr });
      }
    }
    const leak = await both(["check", "leak.qcow2"], images);
    expect(leak.r.status).toBe(3);
    const raw = await both(["check", "raw.img"], images);
    expect(raw.r.status).toBe(63);
    expect(raw.r.stdout).toBe("");
    expect(raw.r.stderr).toBe(asRefcowStderr(raw.q.stderr));
  }, T);

  it("check of compressed clusters", async () => {
    for (const args of [["check", "comp.qcow2"], ["check", "--output=json", "comp.qcow2"]]) {
      const { q, r } = await both(args, images);
      expect(r.stdout).toBe(q.stdout);
    }
  }, T);

  it("map: human and JSON, through backing chains — identical", async () => {
    for (const f of ["base.qcow2", "sub/ov.qcow2", "v2.qcow2", "snap.qcow2", "lazy.qcow2", "small4k.qcow2"]) {
      for (const args of [["map", f], ["map", "--output=json", f]]) {
        const { q, r } = await both(args, images);
        expect.soft({ args, out: r.stdout, status: r.status }).toEqual({ args, out: q.stdout, status: q.status });
      }
    }
    for (const args of [
      ["map", "--output=json", "--start-offset=4M", "--max-length=128k", "base.qcow2"],
      ["map", "--start-offset=100k", "base.qcow2"],
      ["map", "--output=json", "comp.qcow2"],
    ]) {
      const { q, r } = await both(args, images);
      expect.soft({ args, out: r.stdout, status: r.status }).toEqual({ args, out: q.stdout, status: q.status });
    }
    // Compressed clusters have no host offset: the human map refuses them, after its header line.
    const { q, r } = await both(["map", "comp.qcow2"], images);
    expect(r.status).toBe(q.status);
    expect(r.stdout).toBe(q.stdout);
    expect(r.stderr).toBe(asRefcowStderr(q.stderr));
  }, T);

  it("map of raw images (also as backing files) and of extended-L2 subclusters", async () => {
    // For raw files QEMU asks the host file system where the holes are (SEEK_DATA/SEEK_HOLE), which Node's fs
    // cannot do: refcow reports a raw file as data throughout. The comparison uses a raw file without holes,
    // where both agree; a sparse raw file is the one known difference (README).
    const dir = tempDir("ext");
    scratch.push(dir);
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "ext.qcow2", "16M"], dir);
    await run("qemu-io", ["-c", "write -P 1 0 4k", "-c", "write -P 2 64k 4k", "-c", "write -z 1M 8k", "ext.qcow2"], dir);
    fs.writeFileSync(path.join(dir, "raw.img"), fs.readFileSync(path.join(images, "raw.img")));
    fs.mkdirSync(path.join(dir, "sub"));
    fs.copyFileSync(path.join(images, "sub/ovraw.qcow2"), path.join(dir, "sub/ovraw.qcow2"));
    for (const args of [
      ["map", "--output=json", "ext.qcow2"],
      ["map", "--output=json", "raw.img"],
      ["map", "raw.img"],
      ["map", "sub/ovraw.qcow2"],
      ["map", "--output=json", "sub/ovraw.qcow2"],
    ]) {
      const { q, r } = await both(args, dir);
      expect.soft({ args, out: r.stdout }).toEqual({ args, out: q.stdout });
    }
  }, T);

  it("snapshot -l — identical (same file, same dates)", async () => {
    for (const f of ["snap.qcow2", "v2.qcow2", "base.qcow2", "raw.img"]) {
      const { q, r } = await both(["snapshot", "-l", f], images);
      expect.soft({ f, out: r.stdout, status: r.status }).toEqual({ f, out: q.stdout, status: q.status });
    }
  }, T);

  it("compare: messages and exit codes — identical", async () => {
    const pairs: string[][] = [
      ["base.qcow2", "base.qcow2"],
      ["base.qcow2", "sub/ov.qcow2"],
      ["base.qcow2", "comp.qcow2"],
      ["-s", "base.qcow2", "comp.qcow2"],
      ["base.qcow2", "snap.qcow2"],
      ["raw.img", "sub/ovraw.qcow2"],
      ["-f", "raw", "-F", "qcow2", "raw.img", "sub/ovraw.qcow2"],
      ["v2.qcow2", "lazy.qcow2"],
      ["lazy.qcow2", "v2.qcow2"],
      ["-s", "v2.qcow2", "lazy.qcow2"],
      ["lazy.qcow2", "small4k.qcow2"],
      ["small4k.qcow2", "lazy.qcow2"],
      ["-q", "base.qcow2", "comp.qcow2"],
      ["-s", "base.qcow2", "base.qcow2"],
      ["leak.qcow2", "corrupt.qcow2"],
    ];
    for (const p of pairs) {
      const { q, r } = await both(["compare", ...p], images);
      expect.soft({ p, out: r.stdout, status: r.status }).toEqual({ p, out: q.stdout, status: q.status });
    }
    const missing = await both(["compare", "base.qcow2", "nonexist"], images);
    expect(missing.r.status).toBe(2);
    expect(missing.r.stderr).toBe(asRefcowStderr(missing.q.stderr));
  }, T);

  it("errors: same first line and exit status", async () => {
    const cmds: string[][] = [
      ["info", "nonexist"],
      ["info", "-f", "qcow2", "raw.img"],
      ["info", "-f", "bogus", "base.qcow2"],
      ["info", "--output=xml", "base.qcow2"],
      ["info", "--bogus", "base.qcow2"],
      ["info", "-z", "base.qcow2"],
      ["info"],
      ["info", "a", "b"],
      ["check", "-r", "foo", "base.qcow2"],
      ["check"],
      ["map"],
      ["snapshot", "-l"],
      ["snapshot", "-c"],
      ["snapshot", "-l", "-c", "x", "base.qcow2"],
      ["snapshot", "-l", "nonexist"],
      ["compare", "a"],
      ["convert", "a"],
      ["foo"],
      [],
    ];
    for (const args of cmds) {
      const { q, r } = await both(args, images);
      expect.soft({ args, status: r.status, err: errorLine(r.stderr, q.stderr) }).toEqual({
        args,
        status: q.status,
        err: firstErrorLine(q.stderr),
      });
      expect(r.stdout).toBe(q.stdout);
    }
  }, T);

  // ------------------------------------------------------------------------------------------- writing

  it("create: Formatting line, errors, and identical images", async () => {
    const { q: dq, r: dr } = twoCopies("create");
    const cases: string[][] = [
      ["-f", "qcow2", "a.qcow2", "64M"],
      ["-f", "qcow2", "-o", "compat=0.10", "v2new.qcow2", "1G"],
      ["-f", "qcow2", "-o", "cluster_size=4096,lazy_refcounts=on,refcount_bits=8,extended_l2=on,compression_type=zstd", "x.qcow2", "512"],
      ["-f", "qcow2", "-o", "cluster_size=16k,extended_l2=on,compression_type=zstd", "x2.qcow2", "1.5G"],
      ["-f", "qcow2", "-o", "refcount_bits=1,lazy_refcounts=yes", "x3.qcow2", "1000"],
      ["-f", "qcow2", "-o", "refcount_bits=64,cluster_size=2M", "x4.qcow2", "1T"],
      ["-f", "raw", "r.raw", "10M"],
      ["a2.img", "1G"],
      ["-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "ov.qcow2"],
      ["-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "ov2.qcow2", "128M"],
      ["-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "sub/ov3.qcow2"],
      ["-f", "qcow2", "-b", "raw.img", "-F", "raw", "ovr.qcow2"],
      ["-f", "qcow2", "-b", "nonexist", "-F", "qcow2", "-u", "ov4.qcow2", "1G"],
      ["-f", "qcow2", "-o", "backing_file=a,,b.qcow2", "-u", "-F", "qcow2", "ov5.qcow2", "1M"],
      ["-f", "qcow2", "-o", "size=5M", "-o", "cluster_size=4k", "s.qcow2"],
      ["-q", "-f", "qcow2", "quiet.qcow2", "1M"],
      ["-f", "qcow2", "-o", "lazy_refcounts", "l1.qcow2", "1M"],
      ["-f", "qcow2", "-o", "nolazy_refcounts", "l2.qcow2", "1M"],
      // errors after the Formatting line
      ["-f", "qcow2", "-o", "compat=v2,lazy_refcounts=on", "e1.qcow2", "1T"],
      ["-f", "qcow2", "-o", "refcount_bits=3", "e2.qcow2", "1M"],
      ["-f", "qcow2", "-o", "cluster_size=1000", "e3.qcow2", "1M"],
      ["-f", "qcow2", "-o", "compat=2", "e4.qcow2", "1M"],
      ["-f", "qcow2", "-o", "compression_type=ZLIB", "e5.qcow2", "1M"],
      ["-f", "qcow2", "-o", "cluster_size=4k,extended_l2=on", "e6.qcow2", "1M"],
      ["-f", "qcow2", "-o", "compat=0.10,refcount_bits=8", "e7.qcow2", "1M"],
      ["-f", "qcow2", "-o", "compat=0.10,compression_type=zstd", "e8.qcow2", "1M"],
      ["-f", "qcow2", "e9.qcow2", "1E"],
      ["-f", "qcow2", "-F", "qcow2", "e10.qcow2", "1M"],
      // errors before it
      ["-f", "qcow2", "-o", "foo=bar", "e11.qcow2", "1G"],
      ["-f", "qcow2", "-o", "lazy_refcounts=1", "e12.qcow2", "1M"],
      ["-f", "qcow2", "-o", "", "e13.qcow2", "1M"],
      ["-f", "qcow2", "-o", "lazy_refcounts=on,", "e14.qcow2", "1M"],
      ["-f", "qcow2", "e15.qcow2"],
      ["-f", "qcow2", "-o", "size=1M", "e16.qcow2", "2M"],
      ["-f", "raw", "-b", "raw.img", "-F", "raw", "e17.raw"],
      ["-f", "raw", "-o", "cluster_size=4k", "e18.raw", "1M"],
      ["-f", "qcow2", "-b", "base.qcow2", "e19.qcow2"],
      ["-f", "qcow2", "-u", "-b", "base.qcow2", "e20.qcow2", "1M"],
      ["-f", "vmdkx", "e21.qcow2", "1M"],
      ["-f", "qcow2", "e22.qcow2", "1M", "extra"],
    ];
    for (const c of cases) {
      const { q, r } = await both(["create", ...c], dq, dr);
      expectSameOutcome({ c }, q, r);
    }
    for (const name of fs.readdirSync(dq)) {
      const a = path.join(dq, name);
      if (fs.statSync(a).isFile()) expect({ name, same: sameImage(a, path.join(dr, name)) }).toEqual({ name, same: "same" });
    }
    // Multi-line QEMU errors are one line in refcow.
    const size = await both(["create", "-f", "qcow2", "e.qcow2", "1x"], dq, dr);
    expect(size.r.stderr).toBe(
      "refcow: Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n",
    );
    const backing = await both(["create", "-f", "qcow2", "-b", "nonexist", "-F", "qcow2", "e.qcow2", "1G"], dq, dr);
    expect(backing.r.status).toBe(1);
    expect(backing.r.stderr).toBe("refcow: e.qcow2: Could not open 'nonexist': No such file or directory; Could not open backing image.\n");
  }, T);

  it("snapshot -c / -a / -d: same output, same listing, same contents", async () => {
    const { q: dq, r: dr } = twoCopies("snap");
    const steps: string[][] = [
      ["-c", "s1", "base.qcow2"],
      ["-l", "base.qcow2"],
      ["-a", "nope", "base.qcow2"],
      ["-d", "nope", "base.qcow2"],
      ["-a", "1", "base.qcow2"],
      ["-a", "s1", "base.qcow2"],
      ["-d", "1", "base.qcow2"],
      ["-c", "s2", "base.qcow2"],
      ["-d", "s1", "base.qcow2"],
      ["-l", "base.qcow2"],
      ["base.qcow2"],
      ["-a", "one", "snap.qcow2"],
      ["-d", "one", "snap.qcow2"],
      ["-l", "snap.qcow2"],
      ["-c", "x", "sub/ov.qcow2"],
      ["-l", "sub/ov.qcow2"],
      ["-c", "y", "v2.qcow2"],
      ["-l", "v2.qcow2"],
      ["-a", "first", "v2.qcow2"],
      ["-l", "raw.img"],
    ];
    for (const s of steps) {
      const { q, r } = await both(["snapshot", ...s], dq, dr);
      expectSameOutcome({ s }, q, r, maskDates);
    }
    for (const f of ["base.qcow2", "snap.qcow2", "sub/ov.qcow2", "v2.qcow2"]) {
      const cmp = await run("qemu-img", ["compare", path.join(dq, f), path.join(dr, f)], dq);
      expect.soft({ f, status: cmp.status }).toEqual({ f, status: 0 });
      const check = await run("qemu-img", ["check", f], dr);
      expect.soft({ f, status: check.status }).toEqual({ f, status: 0 });
      const info = await both(["info", "--output=json", f], dq, dr);
      expect(maskDates(info.r.stdout)).toBe(maskDates(info.q.stdout));
    }
    const raw = await both(["snapshot", "-c", "x", "raw.img"], dq, dr);
    expect(raw.r.status).toBe(1);
    expect(raw.r.stderr).toContain("refcow: Could not create snapshot 'x': -95 (Operation not supported)\n");
  }, T);

  it("snapshot -c accepts a name that already exists, as qemu-img 7.2 does", async () => {
    const { q: dq, r: dr } = twoCopies("dup");
    for (const s of [["-c", "s1", "base.qcow2"], ["-c", "s1", "base.qcow2"], ["-l", "base.qcow2"]]) {
      const { q, r } = await both(["snapshot", ...s], dq, dr);
      expect.soft({ s, out: maskDates(r.stdout), status: r.status }).toEqual({ s, out: maskDates(q.stdout), status: q.status });
    }
  }, T);

  it("check -r leaks / -r all: repair output and exit codes", async () => {
    const { q: dq, r: dr } = twoCopies("repair");
    for (const args of [
      ["check", "-r", "leaks", "leak.qcow2"],
      ["check", "leak.qcow2"],
      ["check", "-r", "all", "--output=json", "corrupt.qcow2"],
      ["check", "corrupt.qcow2"],
    ]) {
      const { q, r } = await both(args, dq, dr);
      expect.soft({ args, out: r.stdout, status: r.status, err: r.stderr }).toEqual({ args, out: q.stdout, status: q.status, err: q.stderr });
    }
  }, T);

  it("convert: same output files, same errors", async () => {
    const { q: dq, r: dr } = twoCopies("convert");
    const cases: string[][] = [
      ["-O", "qcow2", "base.qcow2", "o1.qcow2"],
      ["-O", "raw", "base.qcow2", "o1.raw"],
      ["-O", "raw", "-l", "snapshot.name=one", "snap.qcow2", "o2.raw"],
      ["-O", "qcow2", "-l", "one", "snap.qcow2", "o3.qcow2"],
      ["-O", "raw", "-l", "snapshot.id=1", "snap.qcow2", "o4.raw"],
      ["-O", "qcow2", "-l", "first", "v2.qcow2", "o5.qcow2"],
      ["-O", "qcow2", "-o", "cluster_size=4k,compat=0.10", "sub/ov.qcow2", "o6.qcow2"],
      ["sub/ov.qcow2", "o7"],
      ["-O", "qcow2", "comp.qcow2", "o8.qcow2"],
      ["-O", "qcow2", "sub/ovraw.qcow2", "o9.qcow2"],
      ["-O", "raw", "-S", "0", "v2.qcow2", "o10.raw"],
      ["-O", "qcow2", "-o", "lazy_refcounts=on,cluster_size=16k,refcount_bits=1", "v2.qcow2", "o11.qcow2"],
      ["-O", "raw", "base.qcow2", "base.qcow2", "o12"],
      ["-O", "qcow2", "-f", "raw", "raw.img", "o13.qcow2"],
      ["-O", "raw", "-l", "nope", "snap.qcow2", "e1.raw"],
      ["-O", "vmdkx", "snap.qcow2", "e2"],
      ["-O", "qcow2", "base.qcow2"],
      ["-O", "qcow2", "-o", "foo=1", "base.qcow2", "e3"],
      ["-O", "qcow2", "nonexist", "e4"],
      ["-O", "qcow2", "-o", "cluster_size=1000", "base.qcow2", "e5"],
      ["-O", "qcow2", "-o", "backing_file=x", "base.qcow2", "e6"],
      ["-O", "raw", "-S", "100", "base.qcow2", "e7"],
      ["-n", "-O", "raw", "base.qcow2", "e8"],
      ["-O", "raw", "-l", "s1", "base.qcow2", "base.qcow2", "e9"],
      ["-c", "-O", "raw", "base.qcow2", "e10"],
    ];
    for (const c of cases) {
      const { q, r } = await both(["convert", ...c], dq, dr);
      expectSameOutcome({ c }, q, r);
    }
    for (const name of fs.readdirSync(dq).filter((n) => /^o\d/.test(n))) {
      expect.soft({ name, same: sameImage(path.join(dq, name), path.join(dr, name)) }).toEqual({ name, same: "same" });
    }
    // -n: into an existing (larger) image.
    const n = await run("refcow", ["convert", "-n", "-O", "qcow2", "v2.qcow2", "o1.qcow2"], dr);
    expect(n.status).toBe(0);
    const cmp = await run("qemu-img", ["compare", "v2.qcow2", "o1.qcow2"], dr);
    expect(cmp.stdout).toBe("Warning: Image size mismatch!\nImages are identical.\n");
  }, T);

  it("io: qemu-io sessions give the same output and status, and leave identical images", async () => {
    const { q: dq, r: dr } = twoCopies("io");
    const sessions: [string, string[]][] = [
      ["base.qcow2", ["read -P 0x11 0 1M", "read -P 0x22 4M 64k", "read -P 0 8M 64k", "read -v 0 40", "read -C 0 4k", "read -q 0 4k"]],
      ["base.qcow2", ["read -P 0x12 0 4k", "read 0 512"]],
      [
        "base.qcow2",
        ["write -P 0xaa 100 5000", "read -P 0xaa 100 5000", "write -z 1M 64k", "read -P 0 1M 64k", "discard 0 64k", "read -P 0 0 64k", "flush", "length", "info"],
      ],
      ["base.qcow2", ["write 0 1.5k", "write 0x1000 0x1000", "write 010 1", "write 64M 0", "read 64M 1", "write 0 1G", "write -z -u 2M 128k"]],
      ["v2.qcow2", ["info", "read -P 5 0 128k", "write -P 6 64k 4k"]],
      ["comp.qcow2", ["read -P 0x11 0 1M", "write -P 1 4k 4k", "read -P 0x11 0 4k", "read -P 1 4k 4k"]],
      ["sub/ov.qcow2", ["read -P 0 0 64k", "read -P 0x33 64k 64k", "read -P 0x11 128k 64k", "write -P 5 1M 1M", "read -P 0 4M 64k"]],
      ["sub/ovraw.qcow2", ["read -P 7 0 64k", "read -P 9 64k 64k", "read -P 8 1M 64k"]],
      ["small4k.qcow2", ["read -P 1 0 12k", "write -P 3 6k 4k", "read -P 3 6k 4k", "read -P 1 0 6k"]],
      ["lazy.qcow2", ["write -P 4 0 64k", "read -P 4 0 64k"]],
      ["base.qcow2", ["foo", "read", "read x 1", "read 0 -1", "write -u 0 4k", "read -P 1 -s 8k 0 4k", "help nosuch", "flush x", "r 0 1", "quit", "read 0 1"]],
    ];
    for (const [file, cmds] of sessions) {
      const args = [...cmds.flatMap((c) => ["-c", c]), file];
      const { q, r } = await bothIo(args, dq, dr);
      expect.soft({ file, cmds, out: maskTimings(r.stdout), status: r.status, err: asRefcowStderr(r.stderr) }).toEqual({
        file,
        cmds,
        out: maskTimings(q.stdout),
        status: q.status,
        err: asRefcowStderr(q.stderr),
      });
    }
    for (const f of ["base.qcow2", "v2.qcow2", "comp.qcow2", "sub/ov.qcow2", "small4k.qcow2", "lazy.qcow2"]) {
      expect.soft({ f, same: sameImage(path.join(dq, f), path.join(dr, f)) }).toEqual({ f, same: "same" });
    }
  }, T);

  it("io: exit status 1 on a pattern mismatch (qemu-io 7.2 does the same)", async () => {
    const r = await run("refcow", ["io", "-c", "read -P 0x12 0 4k", "base.qcow2"], images);
    expect(r.status).toBe(1);
    expect(r.stdout.startsWith("Pattern verification failed at offset 0, 4096 bytes\n")).toBe(true);
    const q = await run("qemu-io", ["-c", "read -P 0x12 0 4k", "base.qcow2"], images);
    expect(q.status).toBe(1);
  }, T);

  it("io: commands from stdin with qemu-io's prompt", async () => {
    const { q: dq, r: dr } = twoCopies("stdin");
    const input = "read -P 0x11 0 512\nwrite -P 3 0 512\nbogus\nread -P 3 0 512\n";
    const q = await run("qemu-io", ["base.qcow2"], dq, input);
    const r = await run("refcow", ["io", "base.qcow2"], dr, input);
    expect({ out: maskTimings(r.stdout), status: r.status, err: asRefcowStderr(r.stderr) }).toEqual({
      out: maskTimings(q.stdout),
      status: q.status,
      err: asRefcowStderr(q.stderr),
    });
  }, T);

  it("io: -r refuses writes, -s keeps the image unchanged, open errors", async () => {
    const { r: dr } = twoCopies("io-modes");
    const before = fs.readFileSync(path.join(dr, "base.qcow2"));
    const ro = await run("refcow", ["io", "-r", "-c", "write 0 1", "-c", "read -P 0x11 0 1", "base.qcow2"], dr);
    expect(ro).toMatchObject({ status: 1, stderr: "refcow: Block node is read-only\n" });
    const snap = await run("refcow", ["io", "-s", "-c", "write -P 0x77 0 4k", "-c", "read -P 0x77 0 4k", "base.qcow2"], dr);
    expect(snap.status).toBe(0);
    expect(Buffer.compare(fs.readFileSync(path.join(dr, "base.qcow2")), before)).toBe(0);
    const missing = await run("refcow", ["io", "-c", "read 0 1", "nonexist"], dr);
    const qmissing = await run("qemu-io", ["-c", "read 0 1", "nonexist"], dr);
    expect({ status: missing.status, err: missing.stderr }).toEqual({ status: qmissing.status, err: asRefcowStderr(qmissing.stderr) });
    const badCache = await run("refcow", ["io", "-t", "bogus", "-c", "read 0 1", "base.qcow2"], dr);
    expect(badCache).toMatchObject({ status: 1, stderr: "refcow: Invalid cache option: bogus\n" });
    const stats = await run("refcow", ["io", "--stats", "--in-process", "-t", "writeback", "--scheme", "eager", "-c", "write -P 1 0 4k", "base.qcow2"], dr);
    expect(stats.status).toBe(0);
    expect(stats.stdout).toMatch(/\nI\/O cost by purpose:\npurpose +reads +read bytes +writes +write bytes +flushes +time ms\n/);
    expect(stats.stdout).toMatch(/\nguest-data +\d+ +\d+ +1 +4096 /);
    const scheme = await run("refcow", ["io", "--scheme", "no-such-scheme", "-c", "read 0 1", "base.qcow2"], dr);
    expect(scheme.status).toBe(1);
    expect(scheme.stderr).toMatch(/^refcow: can't open device base\.qcow2: .*no-such-scheme.*\n$/);
  }, T);

  it("help and usage", async () => {
    const top = await run("refcow", ["--help"], images);
    expect(top.status).toBe(0);
    for (const c of ["create", "info", "check", "snapshot", "convert", "compare", "map", "io"]) {
      expect(top.stdout).toMatch(new RegExp(`\\n  ${c} +\\S`));
      const h = await run("refcow", [c, "--help"], images);
      expect.soft({ c, status: h.status, usage: h.stdout.startsWith(`usage: refcow ${c} `) }).toEqual({ c, status: 0, usage: true });
    }
    const unknown = await run("refcow", ["frobnicate"], images);
    expect(unknown).toMatchObject({ status: 1, stdout: "", stderr: "refcow: Command not found: frobnicate (try 'refcow --help')\n" });
    const badopt = await run("refcow", ["info", "-z", "x"], images);
    expect(badopt).toMatchObject({ status: 1, stderr: "refcow: unrecognized option '-z' (try 'refcow info --help')\n" });
  }, T);
});
