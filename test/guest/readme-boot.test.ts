/**
 * README's program for v86 embedders ("Booting an installed OS from its qcow2 disk"), taken from README.md as
 * it is, run with Node on the demo OS (guest-images/build-os.sh, written as qcow2 by QEMU): SeaBIOS boots
 * the disk from virtio-blk, then (the writes of the first boot in the image) from IDE; the shell prompt comes on the serial port, a command typed on stdin runs, and
 * SIGINT leaves the image `qemu-img check` clean.
 *
 * The program imports "refcow": it is written into a folder of this checkout, where Node resolves the
 * package's own name to its exports (dist/, so `npm run build` first). Two cold boots (tens of seconds each).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureGuestImage, repoRoot } from "../../src/guest/guest-image.js";
import { ensureOsImage } from "../../src/guest/os-image.js";

const PROMPT = /refcow:[^\n]*# $/;
const root = repoRoot();
/** Made in beforeAll (not at import: listing the tests leaves nothing behind). */
let dir = "";
let skipReason: string | undefined;

/** The README's fenced block that starts with `// boot.mjs`. */
export function readmeBootProgram(): string {
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  const m = /```js\n(\/\/ boot\.mjs[^\n]*\n[\s\S]*?)```/.exec(readme);
  if (!m) throw new Error("README.md has no ```js block starting with '// boot.mjs'");
  return m[1]!;
}

beforeAll(async () => {
  if (!existsSync(path.join(root, "dist", "index.js"))) throw new Error("dist/ is missing: run 'npm run build' first");
  dir = mkdtempSync(path.join(root, ".readme-boot-"));
  let os;
  try {
    os = await ensureOsImage({ onProgress: (m) => process.stderr.write(m + "\n") });
  } catch (e) {
    if (process.env.CI === "true") throw e;
    skipReason = `the demo OS disk could not be built: ${(e as Error).message.split("\n")[0]}`;
    return;
  }
  execFileSync("qemu-img", ["convert", "-O", "qcow2", os.image, path.join(dir, "os.qcow2")]);
  // Debian's seabios files under their Debian names (the test guest's build keeps them as bios.bin, vgabios.bin).
  const guest = await ensureGuestImage();
  mkdirSync(path.join(dir, "seabios"));
  copyFileSync(guest.bios, path.join(dir, "seabios", "bios.bin"));
  copyFileSync(guest.vgaBios, path.join(dir, "seabios", "vgabios-stdvga.bin"));
  writeFileSync(path.join(dir, "boot.mjs"), readmeBootProgram());
}, 20 * 60_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("README: booting an installed OS from its qcow2 disk through the public API", () => {
  for (const type of ["virtio", "ide"] as const) it(`boots the demo OS from ${type} to a shell on the serial port; SIGINT closes the image cleanly`, async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const image = path.join(dir, "os.qcow2");
    const child = spawn(process.execPath, [path.join(dir, "boot.mjs"), image, type], {
      cwd: dir,
      env: { ...process.env, SEABIOS_DIR: path.join(dir, "seabios") },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString("latin1")));
    child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const waitFor = async (re: RegExp, from: number, ms: number) => {
      const t0 = performance.now();
      // ash asks the terminal for its cursor position (ESC [6n) after the prompt: escape sequences are dropped.
      while (!re.test(out.slice(from).replace(/\r/g, "").replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ""))) {
        if (child.exitCode !== null) throw new Error(`the program exited (${child.exitCode}):\n${err}\n${out.slice(-2000)}`);
        if (performance.now() - t0 > ms) throw new Error(`no ${re} on the serial port after ${ms} ms:\n${out.slice(-2000)}\n${err}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    try {
      const t0 = performance.now();
      await waitFor(PROMPT, 0, 300_000);
      process.stderr.write(`[readme-boot] ${type}: cold boot to the shell prompt in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
      const at = out.length;
      child.stdin.write("grep ' / ' /proc/mounts; echo answer-$((6 * 7))\n");
      await waitFor(/answer-42\n[\s\S]*# $/, at, 60_000);
      expect(out.slice(at)).toMatch(type === "virtio" ? /\/dev\/vda2 \/ ext4 rw/ : /\/dev\/sda2 \/ ext4 rw/);
      child.kill("SIGINT");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
    const check = spawnSync("qemu-img", ["check", image], { encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toContain("No errors were found on the image.");
  }, 10 * 60_000);
});
