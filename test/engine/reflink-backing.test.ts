/**
 * Copy-free COW beyond the whole cluster (engine/data/cow-fill.ts) on XFS with reflink: the subcluster copy of
 * an extended-L2 image, and the copy of a backing file's cluster (raw: the guest offset; qcow2: its data
 * cluster), cloned between the two files. Oracles that did not produce the figures:
 *   - the kernel: `strace` of a `refcow io` run counts the bytes pwrite64 wrote to the image and the
 *     FICLONERANGE calls on it, with and without --no-reflink (and REFCOW_REFLINK=0);
 *   - QEMU: the same writes by qemu-io on a copy, then `qemu-img compare` and `qemu-img check`.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type FileSyscalls, straceAvailable, traceFileSyscalls } from "../../src/bench/pwrite-trace.js";
import { assertBuilt, REFCOW_BIN, tempDir } from "../cli/qemu-harness.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw } from "../helpers/qemu.js";
import { xfsMountForTests } from "../helpers/xfs.js";

const CLUSTER = 65536;
/** 32 writes of 4 KiB, one per cluster, at every 4 KiB position of a cluster in turn. */
const WRITES = Array.from({ length: 32 }, (_, c) => `write -P 0x22 ${c * CLUSTER + (c % 16) * 4096} 4096`);
/** Writes not aligned to the file system's blocks, one crossing two clusters. */
const UNALIGNED = [`write -P 0x33 ${40 * CLUSTER + 1000} 3000`, `write -P 0x44 ${42 * CLUSTER - 2048} 4096`, `write -P 0x55 ${50 * CLUSTER + 512} 512`];

const xfs = xfsMountForTests("reflink-backing");
const hasStrace = straceAvailable();

interface Case {
  name: string;
  /** Makes the image (and its backing file) in `dir`, as QEMU would; returns the image's path. */
  make(dir: string, name: string): string;
}

/** A backing file of `format` with 8 MiB of data in `dir` (made once). */
function makeBase(dir: string, format: "raw" | "qcow2"): string {
  const base = path.join(dir, `base.${format}`);
  if (!fs.existsSync(base)) {
    qemuImg(["create", "-q", "-f", format, base, "64M"]);
    qemuIo(base, ["write -P 0x11 0 8M"]);
  }
  return base;
}

/** An empty qcow2 image over a backing file of `format`. */
function overBacking(format: "raw" | "qcow2"): Case["make"] {
  return (dir, name) => {
    const image = path.join(dir, name);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", makeBase(dir, format), "-F", format, image, "64M"]);
    return image;
  };
}

const CASES: Case[] = [
  {
    name: "extended L2, after a snapshot",
    make(dir, name) {
      const image = path.join(dir, name);
      qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", image, "64M"]);
      qemuIo(image, ["write -P 0x11 0 8M"]);
      qemuImg(["snapshot", "-c", "s1", image]);
      return image;
    },
  },
  { name: "raw backing file", make: overBacking("raw") },
  { name: "qcow2 backing file", make: overBacking("qcow2") },
];

/** `refcow io -t writeback` of `cmds` on `image` under strace. */
function tracedIo(image: string, cmds: string[], extra: string[] = [], env?: Record<string, string>): FileSyscalls {
  const args = [REFCOW_BIN, "io", "-t", "writeback", ...extra];
  for (const c of cmds) args.push("-c", c);
  return traceFileSyscalls(process.execPath, [...args, image], image, undefined, env);
}

function expectSameAsQemu(qemuImage: string, image: string, what: string): void {
  const cmp = spawnSync("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", qemuImage, image]);
  expect(cmp.status, `${what}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`).toBe(0);
  const check = qemuCheck(image);
  expect(check.status, `${what}: ${check.out}`).toBe(0);
}

describe("copy-free subcluster and backing-file COW on XFS with reflink", () => {
  beforeAll(() => assertBuilt());

  for (const c of CASES) {
    it(`${c.name}: first 4 KiB writes into a cluster write at most 16 KiB each through pwrite64 (strace) and clone the rest; the image equals QEMU's, with or without clones`, (ctx) => {
      const m = xfs.need(ctx);
      expect(hasStrace, "strace, the oracle of this test: npm test installs it (test/setup/ensure-bench-tools.sh)").toBe(true);
      const dir = fs.mkdtempSync(path.join(m.dir, "case-"));
      const prepared = c.make(dir, "prepared.qcow2");
      // Plain copies of one image (a snapshot's date would make two made apart differ).
      const fresh = (name: string) => {
        const to = path.join(dir, name);
        fs.writeFileSync(to, fs.readFileSync(prepared));
        return to;
      };
      const qemuImage = fresh("qemu.qcow2");
      qemuIo(qemuImage, [...WRITES, ...UNALIGNED], { cache: "writeback" });

      const shared = fresh("shared.qcow2");
      const t = tracedIo(shared, WRITES);
      // Amortized over the 32 writes and the close: the guest's 4 KiB, the L2 slices and the refcount block at
      // the flush. Without clones each write wrote its whole 64 KiB cluster.
      expect(t.pwriteBytes / WRITES.length, JSON.stringify(t)).toBeLessThanOrEqual(16 * 1024);
      expect(t.clones, JSON.stringify(t)).toBeGreaterThanOrEqual(WRITES.length);
      expect(t.copyFileRanges).toBe(0);
      const rest = tracedIo(shared, UNALIGNED);
      expect(rest.clones).toBeGreaterThan(0);
      expectSameAsQemu(qemuImage, shared, `${c.name}, with clones`);

      for (const [extra, env] of [[["--no-reflink"], undefined], [[], { REFCOW_REFLINK: "0" }]] as const) {
        const copied = fresh("copied.qcow2");
        const u = tracedIo(copied, WRITES, [...extra], env);
        expect(u.clones, `${extra.join(" ")} ${JSON.stringify(env ?? {})}`).toBe(0);
        expect(u.pwriteBytes / WRITES.length).toBeGreaterThanOrEqual(CLUSTER);
        tracedIo(copied, UNALIGNED, [...extra], env);
        expectSameAsQemu(qemuImage, copied, `${c.name} ${extra.join(" ")} ${JSON.stringify(env ?? {})}`);
        // The same clusters in the same places: the files are equal byte for byte, clones or not.
        expect(fs.readFileSync(copied).equals(fs.readFileSync(shared)), `${c.name}: the file bytes with and without clones`).toBe(true);
        fs.rmSync(copied);
      }
      if (c.name.startsWith("extended")) expect(qemuRaw(shared, "s1").equals(qemuRaw(qemuImage, "s1"))).toBe(true);
      fs.rmSync(dir, { recursive: true, force: true });
    }, 300_000);
  }

  it("a backing file on another file system: the clone between the files is refused once (EXDEV), then copied from silently", (ctx) => {
    const m = xfs.need(ctx);
    const elsewhere = tempDir("reflink-exdev");
    try {
      // The backing file on the temporary directory's file system (ext4 here), the image on XFS.
      const base = makeBase(elsewhere, "raw");
      const image = path.join(m.dir, "exdev.qcow2");
      const qemuImage = path.join(m.dir, "exdev-qemu.qcow2");
      for (const f of [image, qemuImage]) qemuImg(["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", f, "64M"]);
      qemuIo(qemuImage, WRITES, { cache: "writeback" });
      const t = tracedIo(image, WRITES);
      expect(t.clones).toBe(0);
      // The probe at open, and the one clone from the backing file that found out.
      expect(t.refusedClones, JSON.stringify(t)).toBe(2);
      expectSameAsQemu(qemuImage, image, "backing file on another file system");
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  }, 120_000);
});
