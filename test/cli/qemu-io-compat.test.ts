/**
 * Every qemu-io command refcow implements, side by side with QEMU 7.2's qemu-io on the images QEMU made (the
 * image set of the other qemu-io tests): each script runs unchanged through qemu-io, through `refcow io`
 * (the image served by a worker through the request ring) and through `refcow io --in-process`, and must
 * give the same stdout, stderr (with "qemu-io: " read as "refcow: ") and exit status, and leave images that
 * `qemu-img compare` finds identical to QEMU's and `qemu-img check` finds clean.
 *
 * Normalised, as they vary between two qemu-io runs: the timing figures, and the order in which the aio
 * requests of one batch complete (each script brackets such a batch with `alloc 0 0`, whose line is the
 * marker; inside it the completion reports are compared as a sorted list).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asRefcowStderr, assertBuilt, copyDir, haveQemu, makeImages, maskTimings, run, tempDir } from "./qemu-harness.js";

const QEMU = haveQemu();
const T = 180_000;
const MARK = "0/0 bytes allocated at offset 0 bytes";
/** Brackets a batch of aio requests whose completion order is free (it must end with aio_flush). */
const batch = (...cmds: string[]): string[] => ["alloc 0 0", ...cmds, "alloc 0 0"];
/** A last batch, left in flight: the requests complete as the session ends. */
const lastBatch = (...cmds: string[]): string[] => ["alloc 0 0", ...cmds];

/** Lines that go on into the next one in one request's output: hex dump, pattern failure, report head. */
const REPORT_GOES_ON = /^[0-9a-f]{8}: {2}|^Pattern verification failed at offset|^(read|wrote) \d+\/\d+ bytes at offset \d+$/;

/**
 * maskTimings, then each aio batch's outputs sorted (one request's output: its hex dump and pattern lines,
 * its report; any other line stands alone). A batch may also run to the end of the output.
 */
export function normaliseIo(out: string): string {
  const lines = maskTimings(out).split("\n");
  const result: string[] = [];
  let inBatch = false;
  let reports: string[] = [];
  let current: string[] = [];
  const closeBatch = () => {
    if (current.length) reports.push(current.join("\n"));
    result.push(...reports.sort());
    reports = [];
    current = [];
  };
  for (const line of lines) {
    if (line === MARK) {
      if (inBatch) closeBatch();
      inBatch = !inBatch;
      result.push(line);
      continue;
    }
    if (!inBatch) {
      result.push(line);
      continue;
    }
    current.push(line);
    if (!REPORT_GOES_ON.test(line)) {
      reports.push(current.join("\n"));
      current = [];
    }
  }
  if (inBatch) closeBatch();
  return result.join("\n");
}

interface Script {
  file: string;
  /** qemu-io / refcow io options before the commands (-f raw). */
  opts?: string[];
  cmds: string[];
}

const SCRIPTS: Script[] = [
  {
    file: "base.qcow2",
    cmds: [
      "readv -P 0x11 0 4k 8k 512",
      "readv -v 4M 16 16",
      "readv -C 0 4k",
      "readv -q 0 4k",
      "readv -P 0x12 0 4k",
      "readv 0 3G",
      "readv 64M 512",
      "writev -P 0x44 1M 4k 60k",
      "writev -P 0x45 2M 512 1k 2560",
      "writev -f -q 3M 512",
      "writev -C 5M 4k",
      "writev 64M 512",
      ...batch(
        "aio_write -P 0x55 6M 4k 4k",
        "aio_write -P 0x66 7M 64k",
        "aio_read -P 0x11 0 4k",
        "aio_read -v 4M 32",
        "aio_read -C 1M 4k",
        "aio_write -z 9M 64k",
        "aio_write -z -u 10M 128k",
        "aio_write -f 11M 512",
        "aio_read 64M 512",
        "aio_write 64M 512",
        "aio_read -P 0x12 0 512",
        "aio_read -q 0 512",
        "aio_read -i 0 4k",
        "aio_write -i 0 4k",
        "aio_write -z 0 4k 4k",
        "aio_flush",
      ),
      "write -b -P 0x21 0 64k",
      "write -b -P 0x22 1M 512",
      "write -b -c 2M 512",
      "write -b 1000G 512",
      "read -b -P 0x21 0 64k",
      "read -b -P 0 64k 512",
      "read -b -v 1M 32",
      "read -b 1000G 512",
      "read -b 0 1",
      "write -b -z 0 512",
      "write -f -b 0 512",
      "read -P 0x55 6M 8k",
      "read -P 0x66 7M 64k",
      "read -P 0 9M 64k",
      "map",
      "alloc 0",
      "alloc 0 2M",
      "alloc 1",
      "alloc 4M 128k",
      "alloc 63M 2M",
      "alloc 100M",
      "a 8M 64k",
      "length",
      "info",
      "sleep 20",
      "sleep x",
      "truncate 128M",
      "length",
      "info",
      "map",
      "truncate 600M",
      "info",
      "write -P 0x77 100M 64k",
      "truncate 5M",
      "length",
      "map",
      "alloc 0 64M",
      "truncate 64M",
      "read -P 0 5M 1M",
      "t 1000",
      "truncate -m bogus 1M",
      "truncate -x 1M",
      "truncate 64M 1",
      "truncate 4P",
      ...lastBatch("aio_write -P 0x88 12M 64k", "aio_write -P 0x99 13M 64k", "aio_read -P 0x11 0 64k"),
    ],
  },
  {
    file: "v2.qcow2",
    cmds: ["info", "map", "alloc 0 1M", "truncate 20M", "map", "info", "truncate 64k", "map", "read -P 5 0 64k", "truncate 16M", "read -P 0 64k 64k"],
  },
  {
    file: "sub/ov.qcow2",
    cmds: ["map", "alloc 0 1M", "alloc 4M 64k", "readv -P 0x11 128k 4k 4k", "truncate 512k", "truncate 64M", "read -P 0 512k 512k", "read -P 0x11 256k 64k", "map", "alloc 0 2M"],
  },
  {
    file: "small4k.qcow2",
    cmds: [
      "info",
      "map",
      "alloc 0 16k",
      "writev -P 3 6k 1k 1k",
      ...batch("aio_write -P 4 1M 4k 4k", "aio_read -P 2 1M 4k", "aio_write -P 5 2M 512", "aio_flush"),
      "map",
      "truncate 6k",
      "truncate 8M",
      "read -P 1 0 6k",
      "read -v 6k 32",
      "map",
    ],
  },
  {
    file: "comp.qcow2",
    cmds: [
      "info",
      "map",
      "alloc 0 2M",
      ...batch("aio_read -P 0x11 0 64k", "aio_read -P 0x11 512k 64k", "aio_read -P 0x22 4M 64k", "aio_flush"),
      "writev -P 1 4k 2k 2k",
      "map",
      "truncate 1M",
      "map",
    ],
  },
  { file: "snap.qcow2", cmds: ["truncate 128M", "info", "truncate 32M", "map", "read -P 0x44 0 64k", "alloc 0 32M"] },
  { file: "lazy.qcow2", cmds: ["info", ...batch("aio_write -P 1 0 64k", "aio_write -P 2 64k 64k", "aio_write -P 3 1M 4k", "aio_flush"), "readv -P 2 64k 32k 32k", "map", "flush"] },
  {
    file: "ext.qcow2",
    cmds: [
      "map",
      "alloc 0 64k",
      "alloc 1M 64k",
      "alloc 1k 1k",
      "info",
      "truncate 3146240",
      "map",
      "truncate 8M",
      "map",
      "read -P 3 3M 512",
      "read -v 3146240 16",
      ...batch("aio_write -P 9 5M 2k", "aio_write -z 6M 4k", "aio_read -P 0 7M 2k", "aio_flush"),
      "map",
    ],
  },
  {
    file: "lazy.qcow2",
    cmds: [
      "aio_write -P 3 0 4k",
      "close",
      "read 0 512",
      "close",
      "sleep 1",
      "open -r lazy.qcow2",
      "read -P 3 0 512",
      "write 0 512",
      "open lazy.qcow2",
      "c",
      "open -o driver=qcow2 lazy.qcow2",
      "write -P 4 4k 4k",
      "close",
      "open nonexist",
      "open -t bogus lazy.qcow2",
      "open -x lazy.qcow2",
      "open a b",
      "open -r",
      "o -n -k -U -d ignore lazy.qcow2",
      "o -r -U lazy.qcow2",
      "read -P 4 4k 4k",
      "info",
      "close",
      "open -n -o driver=raw raw.img",
      "map",
      "close",
      "open -t writeback lazy.qcow2",
      "reopen -r",
      "write 0 512",
      "reopen -w",
      "write -P 7 0 512",
      "reopen -c writethrough",
      "reopen -c bogus",
      "reopen -r -w",
      "reopen x",
      "reopen -x",
      "aio_write -P 8 4k 4k",
      "reopen",
      "read -P 7 0 512",
      "read -P 8 4k 4k",
      "close",
      "reopen",
    ],
  },
  {
    file: "raw.img",
    opts: ["-f", "raw"],
    cmds: ["map", "alloc 0 8M", "readv -P 7 0 32k 32k", "writev -P 1 2M 4k", ...batch("aio_write -P 2 3M 4k", "aio_read -P 8 1M 4k", "aio_flush"), "truncate 8M", "length", "map", "truncate 2M", "info", "read -b 0 512", "write -b 0 512"],
  },
  {
    // getopt as qemu-io's commands call it: clustered flags, a value attached, separate or looking like an
    // option, options after the operands, "--", a missing value, unknown letters; options act in the order
    // given (a bad value stops the command before a later unknown option); the combinations qemu-io refuses.
    file: "base.qcow2",
    cmds: [
      "read -qP 0x11 0 512",
      "read -vCP0x11 0 16",
      "read -P 0x11 0 512 -q",
      "read -- 0 512",
      "read 0 -- 512",
      "read 0 512 -- -q",
      "read -P -q 0 512",
      "read -qP",
      "read 0 512 -P",
      "read -x 0 512",
      "read -qx 0 512",
      "read --quiet 0 512",
      "read -P x -z 0 512",
      "read -z -P x 0 512",
      "read -P 0x11 -P 300 0 512",
      "read -l 1k 0 512",
      "read -l x 0 512",
      "read -l 1k 0 x",
      "read -P 0x11 -s 256 -l 512 0 512",
      "read - 512",
      "write -zP 1 0 512",
      "write -bz 0 512",
      "write -fc 0 512",
      "write -n 0 512",
      "write -u -P 1 0 512",
      "write -zs nonexist 0 512",
      "write -s nonexist 0 512",
      "write -bz 0 x",
      "write -z 0 x",
      "writev -P 300 -x 0 512",
      "writev -x -P 300 0 512",
      "readv 0 512 -P",
      "readv -P 0x11 0",
      "aio_write -z -f 0 512 512",
      "aio_write -u 0 512",
      "aio_write -i -x 0 512",
      "aio_write -x -i 0 512",
      "aio_read -P 300 -i 0 512",
      "aio_read -iP 300 0 512",
      "discard -qC 0 512 512",
      "truncate -m bogus -x 1M",
      "truncate -m bogus 1M",
      "truncate -mfull 1k",
      "reopen -c bogus -x",
      "reopen -x -c bogus",
      "reopen -rw",
      "reopen -r -c none -w",
      "open -x",
      "open -t",
      "open a b",
      "open -t bogus base.qcow2",
      "close",
      "open -d bogus base.qcow2",
      "open -i bogus base.qcow2",
      "open -t bogus -x",
      "open -C",
      "open -rU",
      "open -n -t writeback -d unmap -i threads base.qcow2",
      "read -P 0x11 0 512",
    ],
  },
];

describe("qemu-io's commands: refcow io vs qemu-io 7.2", () => {
  let images: string;
  const dirs: string[] = [];
  beforeAll(() => {
    assertBuilt();
    images = tempDir("io-images");
    makeImages(images);
    // Extended L2 entries (2 KiB subclusters) and zstd: allocation at subcluster granularity.
    const sh = (tool: string, args: string[]) => execFileSync(tool, args, { cwd: images, stdio: "ignore" });
    sh("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd", "ext.qcow2", "4M"]);
    sh("qemu-io", ["-c", "write -P 1 0 4k", "-c", "write -P 2 64k 4k", "-c", "write -z 1M 8k", "-c", "write -z 2M 64k", "-c", "write -P 3 3M 2k", "ext.qcow2"]);
  }, T);
  afterAll(() => {
    for (const d of [images, ...dirs]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it("has QEMU's tools to compare with (npm test installs qemu-utils)", () => expect(QEMU).toBe(true));

  it("the same scripts give the same output, status and images, through the ring and in-process", async () => {
    const copy = (tag: string): string => {
      const d = tempDir(tag);
      copyDir(images, d);
      dirs.push(d);
      return d;
    };
    const dq = copy("io-q");
    const ways: [string, string[]][] = [
      ["ring", []],
      ["in-process", ["--in-process"]],
    ];
    const dr = ways.map(([name]) => copy(`io-${name}`));
    for (const s of SCRIPTS) {
      const args = [...(s.opts ?? []), ...s.cmds.flatMap((c) => ["-c", c]), s.file];
      const q = await run("qemu-io", args, dq);
      const want = { out: normaliseIo(q.stdout), err: asRefcowStderr(q.stderr), status: q.status };
      for (const [i, [way, extra]] of ways.entries()) {
        const r = await run("refcow", ["io", ...extra, ...args], dr[i]!);
        expect.soft({ file: s.file, way, out: normaliseIo(r.stdout), err: r.stderr, status: r.status }).toEqual({ file: s.file, way, ...want });
      }
    }
    // The same images: the same guest bytes (snapshots included), and clean.
    for (const s of SCRIPTS) {
      const fmt = s.opts?.[1] ?? "qcow2";
      for (const [i, [way]] of ways.entries()) {
        const a = path.join(dq, s.file);
        const b = path.join(dr[i]!, s.file);
        const cmp = await run("qemu-img", ["compare", "-f", fmt, "-F", fmt, a, b], dq);
        expect.soft({ file: s.file, way, compare: cmp.stdout, status: cmp.status }).toEqual({ file: s.file, way, compare: "Images are identical.\n", status: 0 });
        if (fmt !== "qcow2") continue;
        const check = await run("qemu-img", ["check", b], dq);
        expect.soft({ file: s.file, way, check: check.status, out: check.stdout.split("\n")[0] }).toEqual({ file: s.file, way, check: 0, out: "No errors were found on the image." });
      }
    }
    // snap.qcow2's snapshots keep their bytes and their table after the resizes.
    for (const [i, [way]] of ways.entries()) {
      for (const name of ["one", "näme with spaces and a very long tag"]) {
        const outs: Buffer[] = [];
        for (const d of [dq, dr[i]!]) {
          const out = path.join(d, `snap-${name.length}.raw`);
          const c = await run("qemu-img", ["convert", "-l", `snapshot.name=${name}`, "-O", "raw", "snap.qcow2", out], d);
          expect(c.status).toBe(0);
          outs.push(fs.readFileSync(out));
        }
        expect.soft({ way, name, same: Buffer.compare(outs[0]!, outs[1]!) === 0 }).toEqual({ way, name, same: true });
      }
      const lq = await run("qemu-img", ["snapshot", "-l", "snap.qcow2"], dq);
      const lr = await run("qemu-img", ["snapshot", "-l", "snap.qcow2"], dr[i]!);
      expect.soft({ way, list: lr.stdout }).toEqual({ way, list: lq.stdout });
    }
  }, T);
});
