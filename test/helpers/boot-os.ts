/**
 * The demo OS disk for the boot tests (boot-pty.ts drives `refcow boot` on it), and reading its disk back with tools that
 * are not refcow's (qemu-img, e2fsck, debugfs).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { expect } from "vitest";
import type { OsImagePaths, OsManifest } from "../../src/guest/os-image.js";
import { demoOsOrSkip } from "./demo-os.js";

export const BOOT_MS = 240_000;

/**
 * The demo OS disk (built when missing) converted by QEMU into a compressed qcow2 at `image`. When it cannot
 * be built: under CI=true that is an error, elsewhere the reason to skip the file's tests.
 */
export async function compressedOsImage(tag: string, image: string): Promise<{ os?: OsImagePaths; skipReason?: string }> {
  const { os, skipReason } = await demoOsOrSkip((m) => process.stderr.write(m + "\n"));
  if (!os) {
    process.stderr.write(`[${tag}] skipped: ${skipReason}\n`);
    return { skipReason };
  }
  execFileSync("qemu-img", ["convert", "-c", "-O", "qcow2", os.image, image]);
  return { os };
}

export function qemuCheckClean(file: string): void {
  const r = spawnSync("qemu-img", ["check", file], { encoding: "utf8" });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toContain("No errors were found on the image.");
}

/**
 * Files of the image's root file system, as QEMU reads the image: the partition copied out (e2fsck reopens
 * a file system it repaired without the ?offset= of its name), e2fsck -fy (replays the journal; at most
 * "errors corrected"), then debugfs's `cat` of each; a missing file reads as undefined.
 */
export function rootFiles(image: string, manifest: OsManifest, workDir: string, files: string[]): Record<string, string | undefined> {
  const raw = path.join(workDir, "root-files.raw");
  const part = path.join(workDir, "root-files.root");
  try {
    execFileSync("qemu-img", ["convert", "-O", "raw", image, raw]);
    const root = manifest.partitions.find((p) => p.number === 2)!;
    execFileSync("dd", [`if=${raw}`, `of=${part}`, "bs=1M", `skip=${root.start / 2 ** 20}`, `count=${root.size / 2 ** 20}`, "conv=sparse", "status=none"]);
    rmSync(raw);
    const fsck = spawnSync("e2fsck", ["-fy", part], { encoding: "utf8" });
    expect(fsck.status, fsck.stdout + fsck.stderr).toBeLessThanOrEqual(1);
    const out: Record<string, string | undefined> = {};
    for (const f of files) {
      const r = spawnSync("debugfs", ["-R", `cat ${f}`, part], { encoding: "utf8" });
      out[f] = /File not found/.test(r.stderr) ? undefined : r.stdout;
    }
    return out;
  } finally {
    rmSync(raw, { force: true });
    rmSync(part, { force: true });
  }
}
