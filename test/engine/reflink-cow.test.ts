/**
 * Copy-free COW on XFS with reflink (engine/data/cow-copy.ts), checked by oracles that did not produce it:
 *   - the kernel: `strace` of a `refcow io` run counts the bytes pwrite64 wrote to the image and the
 *     FICLONERANGE calls that shared the rest, with and without --no-reflink;
 *   - QEMU: the same writes by qemu-io on a copy of the same image, then `qemu-img compare` (active layer and
 *     the snapshot) and `qemu-img check`, for every scheme.
 * The mount is made by test/helpers/xfs.ts (skipped where it cannot be made, failed under CI).
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { openImagePath } from "../../src/open/open-path.js";
import type { Qcow2Image } from "../../src/open/qcow2.js";
import { NodeFile } from "../../src/io/node-file.js";
import { type FileSyscalls, straceAvailable, traceFileSyscalls } from "../../src/bench/pwrite-trace.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { assertBuilt, REFCOW_BIN, tempDir } from "../cli/qemu-harness.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw } from "../helpers/qemu.js";
import { xfsMountForTests } from "../helpers/xfs.js";

const CLUSTER = 65536;
/** 32 post-snapshot writes of 4 KiB, one per cluster, at every 4 KiB position of a cluster in turn. */
const ALIGNED = Array.from({ length: 32 }, (_, c) => `write -P 0x22 ${c * CLUSTER + (c % 16) * 4096} 4096`);
/** Writes whose edges are not block-aligned, one crossing two clusters, one covering a cluster whole. */
const UNALIGNED = [
  `write -P 0x33 ${40 * CLUSTER + 1000} 3000`,
  `write -P 0x44 ${42 * CLUSTER - 2048} 4096`,
  `write -P 0x55 ${50 * CLUSTER + 512} 512`,
  `write -P 0x66 ${60 * CLUSTER} ${CLUSTER}`,
  `write -P 0x77 ${70 * CLUSTER + 4096} 20000`,
  `write -P 0x88 ${80 * CLUSTER + 61440} 4096`,
];

const xfs = xfsMountForTests("reflink-cow");
const hasStrace = straceAvailable();

/** An image with 8 MiB of data and snapshot s1, made by QEMU in `dir`. */
function prepare(dir: string): string {
  const f = path.join(dir, "prepared.qcow2");
  if (fs.existsSync(f)) return f;
  qemuImg(["create", "-q", "-f", "qcow2", f, "64M"]);
  qemuIo(f, ["write -P 0x11 0 8M"]);
  qemuImg(["snapshot", "-c", "s1", f]);
  return f;
}

function copy(from: string, dir: string, name: string): string {
  const to = path.join(dir, name);
  // A plain copy (no shared extents), as the image would arrive.
  fs.writeFileSync(to, fs.readFileSync(from));
  return to;
}

/** `refcow io -t writeback` of `cmds` on `image` under strace: what the kernel saw done to the image file. */
function tracedIo(image: string, cmds: string[], extra: string[] = []): FileSyscalls {
  const args = [REFCOW_BIN, "io", "-t", "writeback", ...extra];
  for (const c of cmds) args.push("-c", c);
  return traceFileSyscalls(process.execPath, [...args, image], image);
}

describe("copy-free COW on XFS with reflink", () => {
  beforeAll(() => assertBuilt());

  it("the open detects the clone support: XFS with reflink yes, the ext4 of the temporary directory no", (ctx) => {
    const m = xfs.need(ctx);
    const onXfs = path.join(m.dir, "probe");
    fs.writeFileSync(onXfs, new Uint8Array(65536));
    const a = NodeFile.open(onXfs);
    expect(a.cloneBlockSize).toBe(4096);
    a.close();
    expect(NodeFile.open(onXfs, { readOnly: true }).cloneBlockSize).toBe(0);
    const dir = tempDir("reflink-ext4");
    try {
      const elsewhere = path.join(dir, "probe");
      fs.writeFileSync(elsewhere, new Uint8Array(65536));
      const fsType = execFileSync("stat", ["-f", "-c", "%T", dir]).toString().trim();
      const b = NodeFile.open(elsewhere);
      // Only a file system that cannot clone is expected to say so (the temporary directory is ext4 here).
      if (fsType === "ext2/ext3") expect(b.cloneBlockSize).toBe(0);
      b.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("eager: post-snapshot 4 KiB writes write at most 16 KiB each through pwrite64 (strace), the rest cloned", (ctx) => {
    const m = xfs.need(ctx);
    expect(hasStrace, "strace, the oracle of this test: npm test installs it (test/setup/ensure-bench-tools.sh)").toBe(true);
    const prepared = prepare(m.dir);
    const shared = tracedIo(copy(prepared, m.dir, "eager-shared.qcow2"), ALIGNED);
    const copied = tracedIo(copy(prepared, m.dir, "eager-copied.qcow2"), ALIGNED, ["--no-reflink"]);
    const perWrite = (t: FileSyscalls) => t.pwriteBytes / ALIGNED.length;
    // Amortized over the 32 writes and the close: the guest's 4 KiB, the L2 table copied once, the refcount
    // block and L2 slices written back at the flush.
    expect(perWrite(shared), JSON.stringify(shared)).toBeLessThanOrEqual(16 * 1024);
    // The head and the tail of each cluster: up to two clones per write (one when the write is at an edge).
    expect(shared.clones).toBeGreaterThanOrEqual(ALIGNED.length);
    expect(shared.clones).toBeLessThanOrEqual(2 * ALIGNED.length);
    expect(shared.copyFileRanges).toBe(0);
    // The comparison the option exists for: the whole cluster written, nothing cloned.
    expect(copied.clones).toBe(0);
    expect(perWrite(copied), JSON.stringify(copied)).toBeGreaterThanOrEqual(CLUSTER);
  });

  it("eager writethrough: each post-snapshot write writes at most 16 KiB through pwrite64 (strace): the refcount block by its changed page", (ctx) => {
    const m = xfs.need(ctx);
    expect(hasStrace, "strace, the oracle of this test").toBe(true);
    const prepared = prepare(m.dir);
    const t = tracedIo(copy(prepared, m.dir, "eager-wt.qcow2"), ALIGNED, ["-t", "writethrough"]);
    // Per write: the guest's 4 KiB, one 4 KiB page of the refcount block (the increment; the decrement's page
    // at the next write), the 4 KiB L2 slice; the L2 table copied once (64 KiB over 32 writes). Written whole,
    // the 64 KiB refcount block made it more than 72 KiB.
    expect(t.pwriteBytes / ALIGNED.length, JSON.stringify(t)).toBeLessThanOrEqual(16 * 1024);
    expect(t.clones).toBeGreaterThanOrEqual(ALIGNED.length);
  });

  it("every scheme: the image equals QEMU's after the same writes, snapshot intact, qemu-img check clean", (ctx) => {
    const m = xfs.need(ctx);
    const prepared = prepare(m.dir);
    const cmds = [...ALIGNED, ...UNALIGNED];
    const qemuImage = copy(prepared, m.dir, "qemu.qcow2");
    qemuIo(qemuImage, cmds, { cache: "writeback" });
    const snapshot = qemuRaw(qemuImage, "s1");
    for (const scheme of SCHEME_NAMES) {
      const image = copy(prepared, m.dir, `${scheme}.qcow2`);
      // In this process, to read the engine's count of clones; closed as `refcow io` closes.
      const img = openImagePath(image, { scheme, cache: "writeback" }) as Qcow2Image;
      for (const c of cmds) {
        const [, , pattern, offset, length] = c.split(" ");
        img.write(Number(offset), new Uint8Array(Number(length)).fill(Number(pattern)));
      }
      // log defers its copies to an apply: its checkpoint applies them (as its close would).
      if (img.core.scheme.checkpoint) img.core.scheme.checkpoint();
      else img.flush();
      const clones = Object.values(img.stats()).reduce((n, p) => n + (p?.clones ?? 0), 0);
      img.close();
      expect(clones, `${scheme}: clones`).toBeGreaterThan(0);
      const cmp = spawnSync("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", qemuImage, image]);
      expect(cmp.status, `${scheme}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`).toBe(0);
      const check = qemuCheck(image);
      expect(check.status, `${scheme}: ${check.out}`).toBe(0);
      expect(qemuRaw(image, "s1").equals(snapshot), `${scheme}: snapshot s1`).toBe(true);
      fs.rmSync(image);
    }
  });

  it("refcow io through the worker, every scheme: the same image as QEMU's, with --no-reflink, and without the native addon", (ctx) => {
    const m = xfs.need(ctx);
    const prepared = prepare(m.dir);
    const cmds = [...UNALIGNED, ...ALIGNED.slice(0, 8)];
    const qemuImage = copy(prepared, m.dir, "qemu-io.qcow2");
    qemuIo(qemuImage, cmds);
    for (const scheme of SCHEME_NAMES) {
      // REFCOW_NATIVE=0: as where the addon was not built (no clone: the copy is read and written).
      const variants: { extra: string[]; env?: Record<string, string> }[] = [{ extra: [] }, { extra: ["--no-reflink"] }, { extra: [], env: { REFCOW_NATIVE: "0" } }];
      for (const { extra, env } of variants) {
        const image = copy(prepared, m.dir, `io-${scheme}.qcow2`);
        const args = [REFCOW_BIN, "io", "--scheme", scheme, ...extra];
        for (const c of cmds) args.push("-c", c);
        const t = traceFileSyscalls(process.execPath, [...args, image], image, undefined, env);
        const what = `${scheme} ${extra.join(" ")}${env ? " REFCOW_NATIVE=0" : ""}`;
        if (extra.length || env) expect(t.clones, what).toBe(0);
        else expect(t.clones, what).toBeGreaterThan(0);
        const cmp = spawnSync("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", qemuImage, image]);
        expect(cmp.status, `${what}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`).toBe(0);
        const check = qemuCheck(image);
        expect(check.status, `${what}: ${check.out}`).toBe(0);
        fs.rmSync(image);
      }
    }
  }, 600_000);
});
