/**
 * The CLI side of allocation policies and compaction, run as the user runs it (`node dist/cli/bin.js`):
 * --alloc on io (served by a worker and in-process), snapshot, check -r and convert; `refcow compact` on an
 * image QEMU wrote, its report, -q, and its refusals.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { assertBuilt, run } from "./qemu-harness.js";
import { qemuCheck, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("cli-compact");
beforeAll(() => assertBuilt());
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const size = (f: string) => fs.statSync(path.join(dir, f)).size;

function fragmented(name: string): string {
  const file = path.join(dir, name);
  qemuImg(["create", "-q", "-f", "qcow2", file, "16M"]);
  qemuIo(file, ["write -P 1 0 8M"]);
  qemuImg(["snapshot", "-c", "keep", file]);
  qemuIo(file, ["write -P 2 0 4M"]);
  qemuImg(["snapshot", "-c", "gone", file]);
  qemuIo(file, ["write -P 3 2M 4M"]);
  qemuImg(["snapshot", "-d", "gone", file]);
  return file;
}

describe("--alloc", () => {
  for (const mode of ["served", "in-process"] as const) {
    it(`io (${mode}): append grows the file where first-fit reuses freed clusters`, async () => {
      const sizes: Record<string, number> = {};
      for (const alloc of ["first-fit", "append"]) {
        const name = `io-${mode}-${alloc}.qcow2`;
        qemuImg(["create", "-q", "-f", "qcow2", path.join(dir, name), "16M"]);
        const extra = mode === "in-process" ? ["--in-process"] : [];
        const r = await run("refcow", ["io", ...extra, "--alloc", alloc, "-c", "write -P 1 0 2M", "-c", "discard 0 2M", "-c", "write -P 2 4M 2M", name], dir);
        expect(r.status, r.stderr).toBe(0);
        sizes[alloc] = size(name);
        expect(qemuCheck(path.join(dir, name)).status).toBe(0);
        expect(qemuIo(path.join(dir, name), ["read -P 2 4M 2M", "read -P 0 0 2M"])).not.toMatch(/failed/i);
      }
      expect(sizes.append).toBeGreaterThanOrEqual(sizes["first-fit"] + (2 << 20));
    });
  }

  it("an unknown policy is a clear error", async () => {
    qemuImg(["create", "-q", "-f", "qcow2", path.join(dir, "bad.qcow2"), "1M"]);
    const r = await run("refcow", ["io", "--alloc", "best-fit", "-c", "read 0 512", "bad.qcow2"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Invalid --alloc option: best-fit (expecting first-fit or append)");
  });

  it("snapshot, check -r and convert take it", async () => {
    const file = fragmented("cmds.qcow2");
    const before = size("cmds.qcow2");
    let r = await run("refcow", ["snapshot", "--alloc", "append", "-c", "new", "cmds.qcow2"], dir);
    expect(r.status, r.stderr).toBe(0);
    r = await run("refcow", ["check", "--alloc", "append", "-r", "all", "cmds.qcow2"], dir);
    expect(r.status, r.stderr).toBe(0);
    r = await run("refcow", ["io", "--alloc", "append", "-c", "write -P 9 12M 1M", "cmds.qcow2"], dir);
    expect(r.status, r.stderr).toBe(0);
    // The free clusters the deleted snapshot left inside the file stay free: the file grew by what was written.
    expect(size("cmds.qcow2")).toBeGreaterThanOrEqual(before + (1 << 20));
    expect(qemuCheck(file).status).toBe(0);
    r = await run("refcow", ["convert", "--alloc", "append", "-O", "qcow2", "cmds.qcow2", "copy.qcow2"], dir);
    expect(r.status, r.stderr).toBe(0);
    expect(qemuCheck(path.join(dir, "copy.qcow2")).status).toBe(0);
    expect(qemuRaw(path.join(dir, "copy.qcow2")).equals(qemuRaw(file))).toBe(true);
  });
});

describe("refcow compact", () => {
  it("compacts an image QEMU wrote and says what it did", async () => {
    const file = fragmented("c.qcow2");
    const keep = qemuRaw(file, "keep");
    const active = qemuRaw(file);
    const before = size("c.qcow2");
    const r = await run("refcow", ["compact", "c.qcow2"], dir);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Moved \d+ clusters \(\d+ data, \d+ L2, \d+ L1, \d+ refcount, \d+ snapshot table\) in \d+ pass/);
    expect(r.stdout).toContain(`Image size: ${before} -> ${size("c.qcow2")} bytes`);
    expect(r.stdout).toMatch(/In use: \d+ clusters of 64 KiB\nTime: [\d.]+ ms\n$/);
    expect(size("c.qcow2")).toBeLessThan(before);
    expect(qemuCheck(file).status).toBe(0);
    expect(qemuRaw(file, "keep").equals(keep)).toBe(true);
    expect(qemuRaw(file).equals(active)).toBe(true);
    const again = await run("refcow", ["compact", "-q", "--scheme", "lazy", "c.qcow2"], dir);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toBe("");
  });

  it("refuses what it cannot compact, with a clear message", async () => {
    fs.writeFileSync(path.join(dir, "disk.raw"), Buffer.alloc(1 << 20));
    let r = await run("refcow", ["compact", "disk.raw"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("'disk.raw' is not a qcow2 image: only qcow2 images can be compacted");
    r = await run("refcow", ["compact", "missing.qcow2"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Could not open 'missing.qcow2'");
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", path.join(dir, "v2.qcow2"), "1M"]);
    r = await run("refcow", ["compact", "v2.qcow2"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Could not compact 'v2.qcow2': compaction needs a version 3/);
    r = await run("refcow", ["compact", "--scheme", "nope", "c.qcow2"], dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("unknown refcount scheme 'nope'");
  });

  it("--help", async () => {
    const r = await run("refcow", ["compact", "--help"], dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("usage: refcow compact [-q] [-f fmt] [--scheme S] [--scheme-opt K=V,...] filename");
  });
});
