/**
 * The `log` scheme's options (`pending`, `log-size`) reach the scheme, from the library's open options and
 * from the command line through the worker: the memory bound is enforced (seen in the scheme's report and
 * in the fill I/O an early apply does), and the log area has the size asked for (the RCDL extension read
 * with the format codec; the file's length and `qemu-img check`'s leak count as an independent view).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { parseHeader } from "../../src/format/header.js";
import { INCOMPAT_REFCOW_DATA_LOG, findLog } from "../../src/schemes/log-format.js";
import { createScheme, SCHEME_CATALOG, validateSchemeOptions } from "../../src/schemes/index.js";
import type { CostBreakdown } from "../../src/engine/types.js";
import { assertBuilt, run, tempDir } from "../cli/qemu-harness.js";

const CS = 65536;
const T = 60_000;
let dir: string;
beforeAll(() => {
  assertBuilt();
  dir = tempDir("log-options");
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

type Counts = Record<string, { writes: number } | undefined>;
const cowWrites = (s: CostBreakdown) => (s as unknown as Counts)["cow-write"]?.writes ?? 0;

/** A 64 MiB image, its first 8 clusters written, snapshot "s" (made by refcow, eager). */
function prepared(name: string): string {
  const file = path.join(dir, `${name}.qcow2`);
  createImagePath(file, { size: 64 << 20 });
  const w = openImagePath(file, { scheme: "eager" }) as Qcow2Image;
  for (let c = 0; c < 8; c++) w.write(c * CS, new Uint8Array(CS).fill(c + 1));
  w.snapshotCreate("s");
  w.close();
  return file;
}

/** The same image made by QEMU (qemu-img create, qemu-io write, qemu-img snapshot). */
async function preparedByQemu(name: string): Promise<string> {
  const file = path.join(dir, `${name}.qcow2`);
  expect((await run("qemu-img", ["create", "-q", "-f", "qcow2", file, "64M"], dir)).status).toBe(0);
  expect((await run("qemu-io", ["-c", "write -P 1 0 512k", file], dir)).status).toBe(0);
  expect((await run("qemu-img", ["snapshot", "-c", "s", file], dir)).status).toBe(0);
  return file;
}

describe("option validation (the registry)", () => {
  it("accepts numbers and sizes with suffixes", () => {
    expect(validateSchemeOptions("log", { pending: "256", "log-size": "1M" })).toEqual({ pending: 256, "log-size": 1 << 20 });
    expect(validateSchemeOptions("log", { pending: 8, "log-size": 65536 })).toEqual({ pending: 8, "log-size": 65536 });
    expect(validateSchemeOptions("log", { "log-size": "128k" })).toEqual({ "log-size": 128 << 10 });
    expect(validateSchemeOptions("eager", {})).toEqual({});
  });

  it("refuses unknown keys, bad numbers, sizes out of range, options for a scheme without any", () => {
    expect(() => createScheme("log", "refcow", { depth: "3" })).toThrow("scheme 'log' has no option 'depth' (its options: pending, log-size)");
    expect(() => createScheme("log", "refcow", { pending: "12x" })).toThrow("scheme 'log' option pending=12x: expecting a whole number");
    expect(() => createScheme("log", "refcow", { pending: 0 })).toThrow("scheme 'log' option pending=0: below the minimum, 1");
    expect(() => createScheme("log", "refcow", { pending: 2.5 })).toThrow("expecting a whole number");
    expect(() => createScheme("log", "refcow", { "log-size": "32k" })).toThrow("scheme 'log' option log-size=32k: below the minimum, 64 KiB");
    expect(() => createScheme("log", "refcow", { "log-size": "1G" })).toThrow("scheme 'log' option log-size=1G: above the maximum, 256 MiB");
    expect(() => createScheme("log", "refcow", { "log-size": "1.5M" })).toThrow("expecting a size in bytes");
    expect(() => createScheme("eager", "refcow", { pending: "4" })).toThrow("scheme 'eager' takes no options (given: pending)");
    expect(() => createScheme(undefined, undefined, { pending: "4" })).toThrow("scheme 'eager' takes no options");
  });

  it("an open with bad options is refused before anything is written", () => {
    const file = prepared("refused");
    const before = fs.readFileSync(file);
    expect(() => openImagePath(file, { scheme: "log", schemeOptions: { pending: "many" } })).toThrow("pending=many");
    expect(Buffer.compare(fs.readFileSync(file), before)).toBe(0);
  });
});

describe("pending: the memory bound", () => {
  /** Five 4 KiB writes after the snapshot, each to a cluster of its own; the scheme's report after each. */
  function fiveWrites(schemeOptions?: Record<string, string>) {
    const img = openImagePath(prepared(`bound-${schemeOptions ? "4" : "default"}`), { scheme: "log", cache: "writeback", schemeOptions }) as Qcow2Image;
    const seen: Record<string, number>[] = [];
    for (let c = 0; c < 5; c++) {
      img.write(c * CS + 4096, new Uint8Array(4096).fill(0xa0 + c));
      seen.push(img.core.scheme.report!());
    }
    return { img, seen };
  }

  it("pending=4: at most 4 pending copies, the fifth write applies early (the fill's I/O shows it)", () => {
    const { img, seen } = fiveWrites({ pending: "4" });
    expect(seen.map((r) => r["pending"])).toEqual([1, 2, 3, 4, 0]);
    for (const r of seen) expect(r["pending"]).toBeLessThanOrEqual(4);
    const last = seen[4]!;
    expect(last).toMatchObject({ earlyApplies: 1, applies: 1, applied: 5 });
    // The apply filled the five new clusters (reads of the snapshot's data, writes into the copies).
    expect(cowWrites(img.stats())).toBeGreaterThan(0);
    for (let c = 0; c < 5; c++) {
      const back = img.read(c * CS, CS);
      expect(back[0]).toBe(c + 1);
      expect(back[4096]).toBe(0xa0 + c);
      expect(back[8192]).toBe(c + 1);
    }
    img.close();
  });

  it("default (1024): the five copies stay pending, nothing applied, no fill", () => {
    const { img, seen } = fiveWrites();
    expect(seen.map((r) => r["pending"])).toEqual([1, 2, 3, 4, 5]);
    expect(seen[4]).toMatchObject({ earlyApplies: 0, applies: 0 });
    expect(cowWrites(img.stats())).toBe(0);
    img.close();
  });

  it(
    "from the command line: pending=4 fills before close, the default does not (in process, and through the worker)",
    async () => {
      const writes = [0, 1, 2, 3, 4, 5].flatMap((c) => ["-c", `write -P ${0xa0 + c} ${c * CS + 4096} 4k`]);
      /**
       * cow-write writes and bytes from --stats after six post-snapshot writes: in process, the close's
       * apply included; through the worker, as of just before close.
       */
      const fill = async (name: string, opts: string[]) => {
        const file = await preparedByQemu(name);
        const r = await run("refcow", ["io", "--scheme", "log", ...opts, "-t", "writeback", "--stats", ...writes, file], dir);
        expect(r).toMatchObject({ status: 0, stderr: "" });
        expect((await run("qemu-img", ["check", file], dir)).status).toBe(0);
        // Columns: purpose, reads, read bytes, writes, write bytes, flushes, time.
        const m = /^cow-write\s+\d+\s+\d+\s+(\d+)\s+(\d+)/m.exec(r.stdout);
        return m ? { writes: Number(m[1]), bytes: Number(m[2]) } : { writes: 0, bytes: 0 };
      };
      // In process there is no idle work. pending=4: the fifth write applies the five copies (one coalesced
      // write), the close the sixth; the default: the close applies all six, in one write.
      expect(await fill("cli-bound-4", ["--in-process", "--scheme-opt", "pending=4"])).toEqual({ writes: 2, bytes: 6 * CS });
      expect(await fill("cli-bound-default", ["--in-process"])).toEqual({ writes: 1, bytes: 6 * CS });
      // Through the worker (io's default). Its serve loop also applies after 100 ms without requests, so
      // only the presence of the fill is asserted here (the log-size test below pins the worker path).
      expect((await fill("cli-bound-worker", ["--scheme-opt", "pending=4"])).bytes).toBeGreaterThanOrEqual(5 * CS);
    },
    T,
  );
});

describe("log-size: the data log area", () => {
  /**
   * Two post-snapshot writes in writethrough, then `abort` (a crash: the log and its records stay in the
   * file). Returns the log's location from the RCDL extension, the file's length, and qemu-img check's view of
   * a copy whose incompatible bit 33 is cleared (QEMU refuses the image otherwise): the log area is counted
   * like metadata and referenced by nothing QEMU knows, so its clusters, and only they, are leaked.
   */
  async function crashedWithLog(name: string, opts: string[]) {
    const file = await preparedByQemu(name);
    const r = await run("refcow", ["io", "--scheme", "log", ...opts, "-t", "writethrough", "-c", "write -P 2 4k 4k", "-c", "write -P 3 68k 4k", "-c", "abort", file], dir);
    expect(r.status).not.toBe(0);
    const bytes = new Uint8Array(fs.readFileSync(file));
    const header = parseHeader(bytes.subarray(0, CS), bytes.length, SCHEME_CATALOG.knownIncompatible);
    expect(header.incompatibleFeatures & INCOMPAT_REFCOW_DATA_LOG).toBe(INCOMPAT_REFCOW_DATA_LOG);
    const loc = findLog(header)!;
    expect(loc).toBeDefined();
    const copy = path.join(dir, `${name}-copy.qcow2`);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    view.setBigUint64(72, view.getBigUint64(72) & ~INCOMPAT_REFCOW_DATA_LOG);
    fs.writeFileSync(copy, bytes);
    const check = await run("qemu-img", ["check", "--output=json", copy], dir);
    expect(check.status).toBe(3); // leaked clusters only
    const leaked = [...check.stderr.matchAll(/Leaked cluster (\d+) refcount=1 reference=0/g)].map((m) => Number(m[1]));
    return { loc, fileSize: bytes.length, leaks: (JSON.parse(check.stdout) as { leaks: number }).leaks, leaked };
  }

  it(
    "log-size=256k, 1M and the default (a 16th of 64 MiB: 4 MiB): the extension, the file and qemu-img check agree",
    async () => {
      const cases: [string, string[], number][] = [
        ["ls-256k", ["--scheme-opt", "log-size=256k"], 4],
        ["ls-1m", ["--scheme-opt", "pending=64", "--scheme-opt", "log-size=1M"], 16],
        ["ls-default", [], 64],
      ];
      const sizes: number[] = [];
      for (const [name, opts, clusters] of cases) {
        const { loc, fileSize, leaks, leaked } = await crashedWithLog(name, opts);
        expect(loc.clusters).toBe(clusters);
        expect(leaks).toBe(clusters);
        const first = loc.offset / CS;
        expect(leaked).toEqual(Array.from({ length: clusters }, (_, i) => first + i));
        // The log is made by the open (the image has a snapshot) at the end of the file; after it only the
        // L2 table the first write copied.
        expect(fileSize).toBe(loc.offset + clusters * CS + CS);
        sizes.push(fileSize);
      }
      // Everything else in the three files is the same: their lengths differ by the logs' sizes alone.
      expect(sizes[1]! - sizes[0]!).toBe((16 - 4) * CS);
      expect(sizes[2]! - sizes[1]!).toBe((64 - 16) * CS);
    },
    T,
  );

  it("a clean close under log-size=1M leaves plain qcow2 (qemu-img check: no leak)", async () => {
    const file = await preparedByQemu("ls-clean");
    const r = await run("refcow", ["io", "--scheme", "log", "--scheme-opt", "log-size=1M", "-c", "write -P 2 4k 4k", file], dir);
    expect(r).toMatchObject({ status: 0, stderr: "" });
    expect((await run("qemu-img", ["check", file], dir)).status).toBe(0);
    expect((await run("qemu-io", ["-r", "-c", "read -P 2 4k 4k", "-c", "read -P 1 8k 4k", file], dir)).stdout).not.toContain("Pattern verification failed");
  });
});
