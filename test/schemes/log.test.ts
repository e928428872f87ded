/**
 * Scheme `log`: what a post-snapshot write costs (I/O pinned), reads merge pending state, the fill never
 * writes over the guest's bytes, flushes and crashes (the data log replayed at the next open, under any
 * scheme), and the plain qcow2 a clean close leaves, checked with QEMU.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import type { CostBreakdown } from "../../src/engine/types.js";
import { EXT_REFCOW_DATA_LOG } from "../../src/schemes/log-format.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-log-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const CS = 65536;
const N = 24;

type Counts = Record<string, { writes: number; reads: number; flushes: number } | undefined>;
const writes = (s: CostBreakdown, p: string) => (s as unknown as Counts)[p]?.writes ?? 0;
const reads = (s: CostBreakdown, p: string) => (s as unknown as Counts)[p]?.reads ?? 0;
const flushes = (s: CostBreakdown) => Object.values(s as unknown as Counts).reduce((a, c) => a + (c?.flushes ?? 0), 0);
const allWrites = (s: CostBreakdown) => Object.values(s as unknown as Counts).reduce((a, c) => a + (c?.writes ?? 0), 0);

function qemu(args: string[]): string {
  return execFileSync(args[0]!, args.slice(1), { stdio: "pipe" }).toString();
}

function qemuCheckStatus(file: string): number {
  try {
    execFileSync("qemu-img", ["check", file], { stdio: "pipe" });
    return 0;
  } catch (e) {
    return (e as { status: number }).status;
  }
}

/** N clusters written with pattern i+1, a snapshot "s", open with `log`. */
function prepared(name: string, cache: "writeback" | "writethrough") {
  const file = path.join(dir, `${name}.qcow2`);
  createImagePath(file, { size: 64 * CS });
  const w = openImagePath(file, { scheme: "eager" }) as Qcow2Image;
  for (let i = 0; i < N; i++) w.write(i * CS, new Uint8Array(CS).fill(i + 1));
  w.snapshotCreate("s");
  w.close();
  const img = openImagePath(file, { scheme: "log", cache }) as Qcow2Image;
  return { file, img };
}

/** What the disk should read: the prepared pattern with the test's writes applied. */
function model(): Uint8Array {
  const m = new Uint8Array(64 * CS);
  for (let i = 0; i < N; i++) m.fill(i + 1, i * CS, (i + 1) * CS);
  return m;
}

function expectSame(a: Uint8Array, b: Uint8Array): void {
  expect(Buffer.compare(Buffer.from(a), Buffer.from(b))).toBe(0);
}

describe("scheme log", () => {
  it("is registered", () => {
    expect(SCHEME_NAMES).toContain("log");
  });

  for (const cache of ["writeback", "writethrough"] as const) {
    it(`${cache}: a post-snapshot write costs what an in-place write does (no COW read, one flush in writethrough)`, () => {
      const { file, img } = prepared(`cost-${cache}`, cache);
      img.write(0, new Uint8Array(4096).fill(0xee)); // first write copies the shared L2 table
      img.flush();
      img.resetStats();
      img.write(3 * CS + 8192, new Uint8Array(4096).fill(0xab));
      const st = img.stats();
      expect(reads(st, "cow-read")).toBe(0);
      expect(writes(st, "cow-write")).toBe(0);
      expect(allWrites(st)).toBe(cache === "writethrough" ? 1 : 1);
      expect(flushes(st)).toBe(cache === "writethrough" ? 1 : 0);
      img.close();
      expect(qemu(["qemu-img", "check", file])).toMatch(/No errors/);
    });

    it(`${cache}: reads merge pending writes over the snapshot's data, everywhere, and a clean close leaves plain qcow2 QEMU reads the same`, () => {
      const { file, img } = prepared(`merge-${cache}`, cache);
      const m = model();
      const put = (off: number, len: number, v: number) => {
        img.write(off, new Uint8Array(len).fill(v));
        m.fill(v, off, off + len);
      };
      put(2 * CS + 512, 4096, 0xa1);
      put(2 * CS + 1024, 512, 0xa2); // overlaps the first
      put(5 * CS, CS, 0xa3); // whole cluster
      put(7 * CS + CS - 4096, 8192, 0xa4); // spans two clusters
      put(40 * CS, 4096, 0xa5); // unallocated: the engine's own path
      expectSame(img.read(0, 64 * CS), m);
      img.flush();
      put(2 * CS + 60000, 100, 0xa6);
      expectSame(img.read(0, 64 * CS), m);
      // Snapshot reads see the snapshot, not the pending writes.
      const snap = new Uint8Array(CS);
      img.readSnapshot("s", snap, 2 * CS);
      expect(snap.every((b) => b === 3)).toBe(true);
      img.close();
      expect(qemu(["qemu-img", "check", file])).toMatch(/No errors/);
      const raw = path.join(dir, `merge-${cache}.raw`);
      qemu(["qemu-img", "convert", "-O", "raw", file, raw]);
      expectSame(new Uint8Array(fs.readFileSync(raw)), m);
      const info = JSON.parse(qemu(["qemu-img", "info", "--output=json", file]));
      expect(info["format-specific"].data["incompatible-features"] ?? []).toEqual([]);
      const ro = openImagePath(file, { readOnly: true }) as Qcow2Image;
      expect(ro.core.header.extensions.length).toBe(0);
      ro.close();
    });

    it(`${cache}: a crash after a flush loses nothing flushed; QEMU refuses the image while records are unapplied, and every scheme replays them`, () => {
      for (const reopen of SCHEME_NAMES) {
        const { file, img } = prepared(`crash-${cache}-${reopen}`, cache);
        const m = model();
        for (let i = 0; i < 8; i++) {
          img.write(i * CS + 4096 * i, new Uint8Array(4096).fill(0xc0 + i));
          m.fill(0xc0 + i, i * CS + 4096 * i, i * CS + 4096 * i + 4096);
        }
        img.flush();
        const copy = `${file}.crash`;
        fs.copyFileSync(file, copy); // the process dies here: the file as it is
        img.close();
        let err = "";
        try {
          qemu(["qemu-img", "info", copy]);
        } catch (e) {
          err = String((e as { stderr: Buffer }).stderr);
        }
        expect(err).toMatch(/refcow data log/);
        const re = openImagePath(copy, { scheme: reopen }) as Qcow2Image;
        expectSame(re.read(0, 64 * CS), m);
        re.close();
        // The clusters a crashed log scheme had allocated and not linked are leaks at worst, never corruption.
        expect([0, 3]).toContain(qemuCheckStatus(copy));
      }
    });
  }

  it("the log is made off the write path: at snapshot create and at a writable open that finds snapshots; none without snapshots, none read-only", () => {
    const hasLog = (img: Qcow2Image) => img.core.header.extensions.some((e) => e.type === EXT_REFCOW_DATA_LOG);
    const file = path.join(dir, "made.qcow2");
    createImagePath(file, { size: 64 * CS });
    let img = openImagePath(file, { scheme: "log", cache: "writethrough" }) as Qcow2Image;
    expect(hasLog(img)).toBe(false); // no snapshot: no shared cluster to write
    for (let i = 0; i < N; i++) img.write(i * CS, new Uint8Array(CS).fill(i + 1));
    expect(hasLog(img)).toBe(false);
    img.snapshotCreate("s");
    expect(hasLog(img)).toBe(true);
    img.close();
    expect(qemuCheckStatus(file)).toBe(0);
    // An open and a close without writes: the file is as long as before and plain qcow2 again.
    const before = fs.readFileSync(file);
    img = openImagePath(file, { scheme: "log", cache: "writethrough" }) as Qcow2Image;
    expect(hasLog(img)).toBe(true);
    expect(fs.statSync(file).size).toBeGreaterThan(before.length);
    img.close();
    const after = fs.readFileSync(file);
    expect(after.length).toBe(before.length);
    expect(qemuCheckStatus(file)).toBe(0);
    expect(JSON.parse(qemu(["qemu-img", "info", "--output=json", file]))["format-specific"].data["incompatible-features"] ?? []).toEqual([]);
    // Read-only: nothing is made, nothing written.
    const ro = openImagePath(file, { scheme: "log", readOnly: true }) as Qcow2Image;
    expect(hasLog(ro)).toBe(false);
    ro.close();
    expectSame(new Uint8Array(fs.readFileSync(file)), new Uint8Array(after));
    // The first post-snapshot write of this open is a record (and the copy of the shared L2 table), no log made.
    img = openImagePath(file, { scheme: "log", cache: "writethrough" }) as Qcow2Image;
    img.resetStats();
    img.write(CS + 4096, new Uint8Array(4096).fill(0xee));
    const st = img.stats();
    expect(writes(st, "data-log")).toBe(1);
    expect(reads(st, "cow-read")).toBe(0);
    img.close();
    const m = model();
    m.fill(0xee, CS + 4096, CS + 8192);
    const raw = path.join(dir, "made.raw");
    qemu(["qemu-img", "convert", "-O", "raw", file, raw]);
    expectSame(new Uint8Array(fs.readFileSync(raw)), m);
    expect(qemuCheckStatus(file)).toBe(0);
  });

  it("check: a read-only check replays the data log into a view (the file unchanged); refcow check passes, read-only opens are refused", () => {
    const { file, img } = prepared("check-view", "writethrough");
    img.write(3 * CS + 512, new Uint8Array(4096).fill(0x3c));
    const copy = `${file}.crash`;
    fs.copyFileSync(file, copy);
    img.close();
    const before = fs.readFileSync(copy);
    const ck = openImagePath(copy, { forCheck: true, readOnly: true }) as Qcow2Image;
    const r = ck.check();
    expect(r.corruptions).toBe(0);
    expect(ck.read(3 * CS + 512, 1)[0]).toBe(0x3c);
    ck.close();
    expect(Buffer.compare(fs.readFileSync(copy), before)).toBe(0);
    expect(() => openImagePath(copy, { readOnly: true })).toThrow(/data log to replay/);
    // As after eager's crashes: at worst leaked clusters (a decrement not yet written), never a corruption.
    let status = 0;
    try {
      execFileSync("node", [path.resolve("dist/cli/bin.js"), "check", copy], { stdio: "pipe" });
    } catch (e) {
      status = (e as { status: number }).status;
    }
    expect([0, 3]).toContain(status);
  });

  it("writeback: each post-snapshot write appends one record; the guest flush is one flush, no fill", () => {
    const { img } = prepared("flush-wb", "writeback");
    img.write(0, new Uint8Array(4096).fill(1));
    img.flush();
    img.resetStats();
    for (let i = 1; i < 9; i++) img.write(i * CS, new Uint8Array(4096).fill(9));
    img.flush();
    const st = img.stats();
    expect(writes(st, "cow-write")).toBe(0);
    expect(writes(st, "data-log")).toBe(8);
    expect(flushes(st)).toBe(1);
    img.close();
  });

  it("applies in batches: the fill of neighbouring clusters is coalesced and never covers the guest's bytes", () => {
    const { file, img } = prepared("apply", "writeback");
    const m = model();
    for (let i = 0; i < 16; i++) {
      img.write(i * CS + 4096, new Uint8Array(4096).fill(0xd0));
      m.fill(0xd0, i * CS + 4096, i * CS + 8192);
    }
    img.resetStats();
    expect(img.hasIdleWork).toBe(true);
    img.idle();
    expect(img.hasIdleWork).toBe(false);
    const st = img.stats();
    expect(writes(st, "cow-write")).toBeLessThanOrEqual(17);
    expect(reads(st, "cow-read")).toBeLessThanOrEqual(2);
    expectSame(img.read(0, 64 * CS), m);
    img.close();
    expect(qemu(["qemu-img", "check", file])).toMatch(/No errors/);
  });

  it("snapshot create, apply and delete with pending state apply it first", () => {
    const { file, img } = prepared("snaps", "writeback");
    img.write(CS, new Uint8Array(4096).fill(0x77));
    img.snapshotCreate("t");
    img.write(CS, new Uint8Array(4096).fill(0x78));
    img.snapshotApply("t");
    expect(img.read(CS, 1)[0]).toBe(0x77);
    img.write(2 * CS, new Uint8Array(4096).fill(0x79));
    img.snapshotDelete("s");
    expect(img.read(2 * CS, 1)[0]).toBe(0x79);
    img.writeZeroes(3 * CS, CS);
    expect(img.read(3 * CS, 1)[0]).toBe(0);
    img.close();
    expect(qemu(["qemu-img", "check", file])).toMatch(/No errors/);
    expect(qemu(["qemu-io", "-c", "read -P 0x79 131072 4096", file])).toMatch(/read 4096/);
  });

  it("a full log is applied and the write that did not fit planned again; the bound on pending copies applies early", () => {
    const file = path.join(dir, "full.qcow2");
    const n = 1100; // more records than the 4 MiB log holds, more copies than the 1024 pending
    createImagePath(file, { size: n * CS });
    const w = openImagePath(file, { scheme: "eager" }) as Qcow2Image;
    for (let i = 0; i < n; i++) w.write(i * CS, new Uint8Array(512).fill(1));
    w.snapshotCreate("s");
    w.close();
    for (const cache of ["writeback", "writethrough"] as const) {
      const img = openImagePath(file, { scheme: "log", cache }) as Qcow2Image;
      for (let i = 0; i < n; i++) img.write(i * CS + 4096, new Uint8Array(4096).fill(cache === "writeback" ? 2 : 3));
      const rep = img.core.scheme.report?.() ?? {};
      expect(rep.applies).toBeGreaterThan(0);
      for (let i = 0; i < n; i += 97) {
        const b = img.read(i * CS, 8192);
        expect(b[0]).toBe(1);
        expect(b[4096]).toBe(cache === "writeback" ? 2 : 3);
      }
      img.close();
      expect(qemu(["qemu-img", "check", file])).toMatch(/No errors/);
      const again = openImagePath(file, { scheme: "eager" }) as Qcow2Image;
      again.snapshotDelete("s");
      again.snapshotCreate("s");
      again.close();
    }
  });

  it("bounds its pending state: beyond maxPending it applies early", () => {
    const { img } = prepared("bound", "writeback");
    for (let i = 0; i < N; i++) img.write(i * CS, new Uint8Array(512).fill(5));
    const rep = img.core.scheme.report?.() ?? {};
    expect(rep.pending).toBe(N); // under the default bound
    img.close();
  });
});
