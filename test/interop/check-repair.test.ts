/**
 * `refcow check -r leaks|all` against `qemu-img check -r` on deliberately damaged images: leaked clusters,
 * refcounts too high, too low and zero, a missing refcount block, a refcount block past the end of the file,
 * an L2 entry past the end of the file, unaligned L1 and L2 entries, data mapped over metadata, a cluster
 * mapped twice. refcow repairs what QEMU repairs (the repaired image is then clean under qemu-img check and
 * reads as QEMU's repaired copy), and refuses what it cannot repair with a clear message, an exit code like
 * qemu-img's, and the image untouched.
 */
import { afterAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as path from "node:path";
import { main } from "../../src/cli/main.js";
import { qemuCheck, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("repair");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const CS = 4096;

/** A valid image: data, a snapshot sharing it, a cluster rewritten since. */
function valid(): Buffer {
  const f = path.join(dir, "valid.qcow2");
  if (!fs.existsSync(f)) {
    qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", f, "1M"]);
    qemuIo(f, ["write -P 1 0 16k", "write -P 2 512k 8k"]);
    qemuImg(["snapshot", "-c", "s", f]);
    qemuIo(f, ["write -P 3 0 4k"]);
  }
  return fs.readFileSync(f);
}

const u64 = (b: Buffer, o: number) => Number(b.readBigUInt64BE(o));
const set64 = (b: Buffer, o: number, v: number | bigint) => b.writeBigUInt64BE(BigInt(v), o);
const COPIED = 1n << 63n;

function layout(b: Buffer) {
  const l1 = u64(b, 40);
  const l2 = Number(b.readBigUInt64BE(l1) & 0xffffffffffffn);
  const rt = u64(b, 48);
  const entry = (i: number) => Number(b.readBigUInt64BE(l2 + 8 * i) & 0xffffffffffffn);
  return { l1, l2, rt, entry };
}

/** Sets the 16-bit refcount of a cluster (the image has one refcount block for its first 2048 clusters). */
function setRefcount(b: Buffer, cluster: number, v: number): void {
  const block = u64(b, u64(b, 48));
  b.writeUInt16BE(v, block + 2 * cluster);
}

const DAMAGE: Record<string, (b: Buffer) => Buffer> = {
  "a leaked cluster": (b) => {
    const x = Buffer.concat([b, Buffer.alloc(CS)]);
    setRefcount(x, b.length / CS, 1);
    return x;
  },
  "a refcount too high": (b) => (setRefcount(b, layout(b).entry(0) / CS, 3), b),
  "a refcount too low": (b) => (setRefcount(b, layout(b).entry(1) / CS, 1), b),
  "a refcount of zero on a referenced cluster": (b) => (setRefcount(b, layout(b).entry(1) / CS, 0), b),
  "a missing refcount block": (b) => (set64(b, layout(b).rt, 0), b),
  "a refcount block past the end of the file": (b) => (set64(b, layout(b).rt + 8, b.length + 4 * CS), b),
  "a refcount table that runs over the next cluster": (b) => (b.writeUInt32BE(2, 56), b),
  "an L2 entry past the end of the file": (b) => (set64(b, layout(b).l2 + 16, COPIED | BigInt(b.length + 8 * CS)), b),
  "an unaligned L2 entry": (b) => (set64(b, layout(b).l2, COPIED | BigInt(layout(b).entry(0) + 512)), b),
  "an unaligned L1 entry": (b) => (set64(b, layout(b).l1, COPIED | BigInt(layout(b).l2 + 512)), b),
  "data mapped over the L1 table": (b) => (set64(b, layout(b).l2 + 24, COPIED | BigInt(layout(b).l1)), b),
  "a cluster mapped twice": (b) => (set64(b, layout(b).l2 + 24, COPIED | BigInt(layout(b).entry(0))), b),
};

/** qemu-img check's exit code where refcow's differs and why; the rest must match exactly. */
const KNOWN: Record<string, { mode: string; qemu: number; refcow: number; why: string }> = {
  "an unaligned L2 entry": {
    mode: "leaks",
    qemu: 1,
    refcow: 2,
    why: "QEMU counts the unaligned entry as references to the two clusters it straddles, finds one at 0 and fails on the rebuild it needs; refcow does not count a corrupt entry and refuses the repair",
  },
};

async function refcow(args: string[]): Promise<{ status: number; err: string }> {
  let err = "";
  const status = await main(args, { out: () => {}, err: (t) => void (err += t) });
  return { status, err };
}

let n = 0;
describe("check -r, refcow against qemu-img", () => {
  for (const [name, damage] of Object.entries(DAMAGE)) {
    it(name, async () => {
      const bytes = damage(Buffer.from(valid()));
      for (const mode of ["none", "leaks", "all"]) {
        const q = path.join(dir, `q${n}.qcow2`);
        const r = path.join(dir, `r${n++}.qcow2`);
        fs.writeFileSync(q, bytes);
        fs.writeFileSync(r, bytes);
        const opt = mode === "none" ? [] : ["-r", mode];
        const qs = qemuCheck(q, opt).status;
        const rs = await refcow(["check", ...opt, r]);
        const known = KNOWN[name]?.mode === mode ? KNOWN[name] : undefined;
        if (known) {
          expect([qs, rs.status], known.why).toEqual([known.qemu, known.refcow]);
        } else {
          expect(rs.status, `refcow check ${opt.join(" ")} exit code (qemu-img: ${qs}); stderr:\n${rs.err}`).toBe(qs);
        }
        const after = qemuCheck(r).status;
        if (rs.status === 0) {
          // Repaired: clean for QEMU, and the data reads as QEMU's repaired copy.
          expect(after, `qemu-img check of refcow's repair (${mode})`).toBe(0);
          expect(qemuCheck(q).status).toBe(0);
          expect(qemuImg(["compare", "-f", "qcow2", "-F", "qcow2", q, r])).toMatch(/identical/);
          expect(qemuImg(["snapshot", "-l", r]).replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, "")).toBe(qemuImg(["snapshot", "-l", q]).replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, ""));
        } else if (mode !== "none" && (qs !== 0 || known)) {
          // Not repaired by either: refcow says why and leaves the image as it was.
          expect(rs.err, "a clear message").toMatch(/cannot repair|Check failed|errors were found|ERROR/);
          if (/cannot repair|Check failed/.test(rs.err)) expect(fs.readFileSync(r).equals(bytes), "the image is untouched").toBe(true);
          expect(after).not.toBe(0);
        }
      }
    }, 60_000);
  }

  it("a refused repair names the entry no repair can fix", async () => {
    const r = path.join(dir, "refused.qcow2");
    const bytes = DAMAGE["an L2 entry past the end of the file"](Buffer.from(valid()));
    fs.writeFileSync(r, bytes);
    const res = await refcow(["check", "-r", "all", r]);
    expect(res.status).toBe(2);
    expect(res.err).toMatch(/refcow: cannot repair: 1 corrupt table entry no repair can fix \(counting reference for region exceeding the end of the file/);
    expect(fs.readFileSync(r).equals(bytes)).toBe(true);
  });

  it("a leak repair that needs a rebuild fails as qemu-img's does", async () => {
    const r = path.join(dir, "rebuild.qcow2");
    fs.writeFileSync(r, DAMAGE["a refcount of zero on a referenced cluster"](Buffer.from(valid())));
    const res = await refcow(["check", "-r", "leaks", r]);
    expect(res.status).toBe(1);
    expect(res.err).toMatch(/ERROR need to rebuild refcount structures\nrefcow: Check failed: need to rebuild refcount structures: repair with -r all/);
  });
});
