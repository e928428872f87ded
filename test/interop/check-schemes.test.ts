/**
 * `refcow check` and `check -r leaks|all` under every refcount scheme, against `qemu-img check` on a copy of
 * the same file. Every scheme × {a clean image, leaked clusters, a corruption QEMU repairs, a crashed image}
 * × {check, -r leaks, -r all}; the image is written by the scheme that then checks it (the crashed one through
 * the fault-injecting file, while the scheme held it open). For each: the exit code is qemu-img's; the image
 * is then in the state QEMU's own repair leaves (`qemu-img check` of both agree; clean after -r all) with no
 * corrupt bit; a report writes nothing; every byte of the active layer and of each snapshot reads as written
 * (through qemu-img convert); and the same check under another scheme and allocation policy gives the same
 * verdict and the same image.
 *
 * A crashed journal image has an incompatible bit QEMU refuses: qemu-img's verdict is taken on a copy
 * recovered as `check` recovers it first (the journal replayed; nothing else changed).
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { main } from "../../src/cli/main.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { FaultFile } from "../../src/io/fault-file.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { NodeFile } from "../../src/io/node-file.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { assertBuilt, REFCOW_BIN } from "../cli/qemu-harness.js";
import { qemuCheck, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("check-schemes");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const CS = 65536;
const SIZE = 8 << 20;
const INCOMPAT_DIRTY = 1n;
const INCOMPAT_CORRUPT = 2n;
const INCOMPAT_JOURNAL = 1n << 32n;

/** The workload every image gets: [guest offset, length, pattern], with the snapshots taken between. */
const WRITES_BEFORE_S1: [number, number, number][] = [[0, 512 << 10, 1]];
const WRITES_BEFORE_S2: [number, number, number][] = [
  [128 << 10, 64 << 10, 2],
  [1 << 20, 64 << 10, 3],
];
const WRITES_AFTER: [number, number, number][] = [[2 << 20, 4096, 4]];

/** What each view reads: the active layer and the two snapshots. */
function expectedViews(): Map<string, Buffer> {
  const disk = Buffer.alloc(SIZE);
  const apply = (ws: [number, number, number][]) => ws.forEach(([o, n, p]) => disk.fill(p, o, o + n));
  apply(WRITES_BEFORE_S1);
  const s1 = Buffer.from(disk);
  apply(WRITES_BEFORE_S2);
  const s2 = Buffer.from(disk);
  apply(WRITES_AFTER);
  return new Map([
    ["", disk],
    ["s1", s1],
    ["s2", s2],
  ]);
}
const VIEWS = expectedViews();

async function refcow(args: string[]): Promise<{ status: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const status = await main(args, { out: (t) => void (out += t), err: (t) => void (err += t) });
  return { status, out, err };
}

const written = new Map<string, Promise<Buffer>>();
/** The image written through the CLI by `scheme`: each step one open and clean close under it. */
async function writtenBy(scheme: string): Promise<Buffer> {
  if (!written.has(scheme)) written.set(scheme, writeWith(scheme));
  return Buffer.from(await written.get(scheme)!);
}
async function writeWith(scheme: string): Promise<Buffer> {
  const f = path.join(dir, `written-${scheme}.qcow2`);
  const run = async (args: string[]) => {
    const r = await refcow(args);
    if (r.status !== 0) throw new Error(`refcow ${args.join(" ")}: ${r.err}`);
  };
  const io = (ws: [number, number, number][]) => run(["io", "--scheme", scheme, ...ws.flatMap(([o, n, p]) => ["-c", `write -P ${p} ${o} ${n}`]), f]);
  await run(["create", "-q", "-f", "qcow2", f, String(SIZE)]);
  await io(WRITES_BEFORE_S1);
  await run(["snapshot", "--scheme", scheme, "-c", "s1", f]);
  await io(WRITES_BEFORE_S2);
  await run(["snapshot", "--scheme", scheme, "-c", "s2", f]);
  await io(WRITES_AFTER);
  return fs.readFileSync(f);
}

/**
 * The same workload under `scheme` on the fault-injecting file, never closed: the state a power loss leaves
 * after the last flush (a write issued since is lost). The scheme's on-disk state while open: lazy, lazy-count
 * and owner leave the dirty bit with counts that are not standard, journal an un-checkpointed journal.
 */
function crashedUnder(scheme: string): Buffer {
  const base = new MemoryFile();
  Qcow2Image.create(base, { size: SIZE, clusterSize: CS });
  const fault = new FaultFile(base.contents(), `crash-${scheme}`);
  const img = Qcow2Image.open(fault, { scheme, cache: "writeback", random: () => 0.25 });
  const write = (ws: [number, number, number][]) => ws.forEach(([o, n, p]) => img.write(o, new Uint8Array(n).fill(p)));
  write(WRITES_BEFORE_S1);
  img.snapshotCreate("s1");
  write(WRITES_BEFORE_S2);
  img.snapshotCreate("s2");
  write(WRITES_AFTER);
  img.flush();
  img.write(3 << 20, new Uint8Array(CS).fill(9)); // never flushed: lost in the crash
  const state = fault.materialize({ at: fault.log.length, applied: [] });
  return Buffer.from(state.contents());
}

// --------------------------------------------------------------------------------------------- raw edits

const u64 = (b: Buffer, o: number) => Number(b.readBigUInt64BE(o));
const OFFSET_MASK = 0x00fffffffffffe00n;

/** Byte offset of cluster `c`'s 16-bit refcount (the images here need one refcount block). */
function refcountAt(b: Buffer, c: number): number {
  expect(b.readUInt32BE(96), "16-bit refcounts").toBe(4);
  const block = u64(b, u64(b, 48));
  expect(c).toBeLessThan(CS / 2);
  return block + 2 * c;
}
/** Host cluster of guest cluster 0 in the active layer: written before both snapshots, so shared by all three views. */
function sharedCluster(b: Buffer): number {
  const l2 = Number(b.readBigUInt64BE(u64(b, 40)) & OFFSET_MASK);
  return Number(b.readBigUInt64BE(l2) & OFFSET_MASK) / CS;
}

const CASES: Record<string, (scheme: string) => Promise<Buffer>> = {
  clean: writtenBy,
  /** One count one too high, and a cluster past the end of the data counted though nothing uses it. */
  "leaked clusters": async (scheme) => {
    const written = await writtenBy(scheme);
    const b = Buffer.concat([written, Buffer.alloc(Math.ceil(written.length / CS) * CS - written.length + CS)]);
    const shared = refcountAt(b, sharedCluster(b));
    b.writeUInt16BE(b.readUInt16BE(shared) + 1, shared);
    b.writeUInt16BE(1, refcountAt(b, b.length / CS - 1));
    return b;
  },
  /** A cluster three views share counted once (and so its COPIED flag wrong too): QEMU repairs it with -r all. */
  "a corruption QEMU repairs": async (scheme) => {
    const b = await writtenBy(scheme);
    const shared = refcountAt(b, sharedCluster(b));
    expect(b.readUInt16BE(shared), "a cluster the active layer and both snapshots share").toBe(3);
    b.writeUInt16BE(1, shared);
    return b;
  },
  crashed: async (scheme) => crashedUnder(scheme),
};

const MODES = ["check", "-r leaks", "-r all"] as const;
const modeArgs = (m: (typeof MODES)[number]) => (m === "check" ? [] : m.split(" "));
const incompat = (b: Buffer) => b.readBigUInt64BE(72);

/**
 * A copy QEMU can open of an image with the journal bit: the journal replayed (what check does first), in
 * place, with nothing else repaired.
 */
function recoveredForQemu(file: string): void {
  Qcow2Image.open(NodeFile.open(file), { forCheck: true, noRepairOnOpen: true, noBacking: true }).close();
}

/**
 * No scheme leaves an autoclear bit, clean or crashed: `qemu-img check -r` drops every internal snapshot of
 * an image with one QEMU does not know (an open for check does not read the snapshot table, and clearing the
 * bit rewrites the header with none), so the oracle and refcow must get the same bytes.
 */
const autoclear = (b: Buffer) => b.readBigUInt64BE(88);

/** The exit codes and states of every cell, printed at the end (the table of the issue's closing note). */
const table: string[][] = [];
afterAll(() => {
  const head = ["scheme", "case", "command", "refcow exit", "qemu-img exit", "qemu-img check after", "corrupt bit after"];
  const rows = [head, ...table];
  const w = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log(rows.map((r) => `| ${r.map((c, i) => c.padEnd(w[i])).join(" | ")} |`).join("\n"));
});

/** Each view as QEMU reads it (qemu-img convert -O raw [-l snapshot.name=X]). */
function guestViews(file: string): Map<string, Buffer> {
  return new Map([...VIEWS.keys()].map((name) => [name, qemuRaw(file, name || undefined)]));
}

/** Each view as refcow reads it (for the extra copies; the main result is read by QEMU). */
function refcowViews(file: string): Map<string, Buffer> {
  const img = Qcow2Image.open(NodeFile.open(file, { readOnly: true }), { readOnly: true, noBacking: true });
  try {
    return new Map(
      [...VIEWS.keys()].map((name) => {
        const buf = new Uint8Array(SIZE);
        if (name) img.readSnapshot(name, buf, 0);
        else img.readInto(buf, 0);
        return [name, Buffer.from(buf)];
      }),
    );
  } finally {
    img.close();
  }
}

function expectViews(views: Map<string, Buffer>, what: string): void {
  for (const [name, data] of views) expect.soft(data.equals(VIEWS.get(name)!), `${what}: ${name ? `snapshot ${name}` : "the active layer"} reads as written`).toBe(true);
}

let n = 0;
describe("check under every refcount scheme, against qemu-img check", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const [caseName, make] of Object.entries(CASES)) {
      it(`${scheme}: ${caseName}`, async () => {
        const bytes = await make(scheme);
        const journal = (incompat(bytes) & INCOMPAT_JOURNAL) !== 0n;
        // Another scheme and the other allocation policy must give the same verdict and image.
        const other = SCHEME_NAMES[(SCHEME_NAMES.indexOf(scheme) + 1) % SCHEME_NAMES.length];
        if (!journal) {
          const input = path.join(dir, "input.qcow2");
          fs.writeFileSync(input, bytes);
          expectViews(guestViews(input), "QEMU on the image before the check");
        }
        for (const mode of MODES) {
          const id = n++;
          const r = path.join(dir, `r${id}.qcow2`);
          const q = path.join(dir, `q${id}.qcow2`);
          const r2 = path.join(dir, `r${id}-${other}.qcow2`);
          const r3 = path.join(dir, `r${id}-append.qcow2`);
          for (const f of [r, q, r2, r3]) fs.writeFileSync(f, bytes);
          if (journal) recoveredForQemu(q);
          const opt = modeArgs(mode);
          expect(autoclear(bytes), "autoclear features of the input").toBe(0n);
          const qs = qemuCheck(q, opt).status;
          const rs = await refcow(["check", ...opt, "--scheme", scheme, r]);
          const rb = fs.readFileSync(r);
          const qb = fs.readFileSync(q);
          const readable = !(incompat(rb) & INCOMPAT_JOURNAL);
          const after = readable ? qemuCheck(r).status : undefined;
          table.push([scheme, caseName, `check ${opt.join(" ")}`.trim(), String(rs.status), String(qs), after === undefined ? "(journal bit: QEMU refuses)" : String(after), String((incompat(rb) & INCOMPAT_CORRUPT) !== 0n)]);

          expect.soft(rs.status, `refcow check ${opt.join(" ")} --scheme ${scheme} (qemu-img: ${qs}); stderr:\n${rs.err}`).toBe(qs);
          expect.soft(incompat(rb) & INCOMPAT_CORRUPT, "corrupt bit").toBe(0n);
          if (mode === "check") {
            expect.soft(rb.equals(bytes), "a report writes nothing").toBe(true);
          } else {
            // The state QEMU's own repair of the same file leaves; but a failed repair of a dirty image keeps
            // its dirty bit (QEMU's close clears it, leaving counts too low that the next open would not rebuild).
            if (rs.status === 1 && incompat(bytes) & INCOMPAT_DIRTY) expect.soft(incompat(rb), "a failed repair keeps the dirty bit").toBe(incompat(bytes));
            else expect.soft(incompat(rb), "feature bits as QEMU's repair leaves them").toBe(incompat(qb));
            expect.soft(after, "qemu-img check after refcow's repair and after QEMU's").toBe(qemuCheck(q).status);
            if (mode === "-r all") expect.soft(after, "qemu-img check after -r all").toBe(0);
          }
          // Unchanged bytes were read above (or are a journal QEMU refuses, read below once recovered).
          if (!rb.equals(bytes)) expectViews(guestViews(r), `QEMU after check ${opt.join(" ")}`);

          const r2s = await refcow(["check", ...opt, "--scheme", other, r2]);
          expect.soft(r2s.status, `the same check under --scheme ${other}`).toBe(rs.status);
          expect.soft(fs.readFileSync(r2).equals(rb), `the image left by the check under --scheme ${other}`).toBe(true);
          const r3s = await refcow(["check", ...opt, "--scheme", other, "--alloc", "append", r3]);
          expect.soft(r3s.status, `the same check under --scheme ${other} --alloc append`).toBe(rs.status);
          if (readable) {
            expect.soft(qemuCheck(r3).status, "qemu-img check after the check under --alloc append").toBe(after);
            expectViews(refcowViews(r3), "after the check under --alloc append");
          }
          for (const f of [r, q, r2, r3]) fs.rmSync(f);
        }
      }, 60_000);
    }
  }

  it("the issue's two cases through the built command: exit 0, clean and uncorrupted under qemu-img", () => {
    assertBuilt();
    for (const scheme of ["lazy-count", "journal"]) {
      const f = path.join(dir, `issue-${scheme}.qcow2`);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", f, "8M"]);
      execFileSync("qemu-io", ["-c", "write -P 7 0 512k", f]);
      execFileSync("qemu-img", ["snapshot", "-c", "snap", f]);
      const before = qemuRaw(f);
      const out = execFileSync(process.execPath, [REFCOW_BIN, "check", "-r", "all", "--scheme", scheme, f], { stdio: ["ignore", "pipe", "pipe"] }).toString();
      expect(out).toMatch(/^No errors were found on the image\./);
      const q = qemuCheck(f);
      expect(q.status, q.out).toBe(0);
      expect(q.out).not.toMatch(/Leaked|ERROR/);
      expect(incompat(fs.readFileSync(f)) & (INCOMPAT_CORRUPT | INCOMPAT_DIRTY)).toBe(0n);
      expect(qemuRaw(f).equals(before)).toBe(true);
      expect(qemuRaw(f, "snap").equals(before)).toBe(true);
    }
  });
});
