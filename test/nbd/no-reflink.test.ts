/**
 * `--no-reflink` on the commands that serve an image for a long run (nbd, run, boot): offered and documented
 * by each, and on `refcow nbd`, checked by the kernel: `strace` of the server while qemu-io writes over NBD
 * into clusters shared with a snapshot counts FICLONERANGE calls on the image (some by default on XFS with
 * reflink, none with the flag), and the image equals the one QEMU makes from the same writes.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { countFileSyscalls, straceAvailable } from "../../src/bench/pwrite-trace.js";
import { main } from "../../src/cli/main.js";
import { assertBuilt } from "../cli/qemu-harness.js";
import { accepts, killLeftoverServers, nbdUri, REFCOW_BIN } from "../helpers/nbd.js";
import { qemuCheck, qemuImg, qemuIo } from "../helpers/qemu.js";
import { xfsMountForTests } from "../helpers/xfs.js";

const CLUSTER = 65536;
const WRITES = Array.from({ length: 16 }, (_, c) => `write -P 0x3c ${c * CLUSTER + 8192} 4096`);

const xfs = xfsMountForTests("no-reflink");

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** Serves `image` with `refcow nbd ...extra` under strace, writes WRITES over NBD, stops the server: its calls on the image. */
async function servedWrites(image: string, extra: string[]) {
  const dir = path.dirname(image);
  const socket = path.join(dir, "s.sock");
  const pidFile = path.join(dir, "nbd.pid");
  const log = path.join(dir, "nbd.strace");
  fs.rmSync(socket, { force: true });
  const tracer = spawn("strace", ["-f", "-y", "-s", "0", "-o", log, "-e", "trace=pwrite64,ioctl,copy_file_range", process.execPath, REFCOW_BIN, "nbd", "-k", socket, "--pid-file", pidFile, ...extra, image], {
    stdio: "ignore",
  });
  const ended = new Promise<number | null>((resolve) => tracer.on("exit", (code) => resolve(code)));
  try {
    for (let i = 0; i < 800 && !(await accepts(socket)); i++) await new Promise((r) => setTimeout(r, 25));
    execFileSync("qemu-io", ["-f", "raw", ...WRITES.flatMap((c) => ["-c", c]), nbdUri(socket)], { stdio: "pipe" });
    // SIGTERM to the server itself (not to strace, which would detach): it closes the image and exits.
    process.kill(Number(fs.readFileSync(pidFile, "utf8")), "SIGTERM");
    expect(await ended).toBe(0);
    return countFileSyscalls(fs.readFileSync(log, "utf8"), fs.realpathSync(image));
  } finally {
    if (tracer.exitCode === null) tracer.kill("SIGKILL");
    fs.rmSync(log, { force: true });
  }
}

describe("--no-reflink on nbd, run and boot", () => {
  beforeAll(() => assertBuilt());
  afterAll(() => killLeftoverServers());

  for (const command of ["nbd", "run", "boot"]) {
    it(`${command}: in the synopsis and the help`, async () => {
      const r = await cli([command, "--help"]);
      expect(r.code).toBe(0);
      expect(r.out.split("\n")[0]).toContain("[--no-reflink]");
      expect(r.out).toMatch(/\n {2}--no-reflink +copy the part of a copied-on-write cluster/);
    });
  }

  it("run: refused with a QEMU backend (QEMU's own qcow2 driver never clones)", async () => {
    const r = await cli(["run", "--emulator", "qemu", "--backend", "qemu", "--no-reflink", "x.qcow2"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/--no-reflink is refcow's/);
  });

  it("nbd: clones on XFS by default, none with --no-reflink (strace); the image equals QEMU's", async (ctx) => {
    const m = xfs.need(ctx);
    expect(straceAvailable(), "strace, the oracle of this test").toBe(true);
    const base = path.join(m.dir, "base.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", base, "16M"]);
    qemuIo(base, ["write -P 0x11 0 2M"]);
    qemuImg(["snapshot", "-c", "s1", base]);
    const expected = path.join(m.dir, "qemu.qcow2");
    fs.writeFileSync(expected, fs.readFileSync(base));
    qemuIo(expected, WRITES);
    for (const extra of [[], ["--no-reflink"]]) {
      const image = path.join(m.dir, `served${extra.length}.qcow2`);
      fs.writeFileSync(image, fs.readFileSync(base));
      const t = await servedWrites(image, extra);
      if (extra.length) expect(t.clones, "--no-reflink").toBe(0);
      else expect(t.clones, "default").toBeGreaterThan(0);
      const cmp = spawnSync("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", expected, image]);
      expect(cmp.status, `${extra.join(" ")}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`).toBe(0);
      const check = qemuCheck(image);
      expect(check.status, check.out).toBe(0);
    }
  });
});
