/**
 * Where the guest image lives and how it gets built.
 *
 * `guest-images/build.sh` fetches Debian's i386 kernel, busybox-static and seabios and writes bzImage,
 * initramfs.cpio, bios.bin, vgabios.bin and manifest.json into `.cache/guest/` of the checkout (or
 * `$REFCOW_GUEST_DIR`). `ensureGuestImage` runs it when an output is missing; the script itself returns at
 * once when the image is up to date.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface GuestImagePaths {
  dir: string;
  bzImage: string;
  initrd: string;
  bios: string;
  vgaBios: string;
  manifest: string;
}

export interface GuestManifest {
  recipe: string;
  built: string;
  kernelRelease: string;
  packages: Array<{ package: string; version: string; architecture: string; deb: string; sha256: string }>;
  files: Record<string, { size: number; sha256: string }>;
  /** Modules /init loads at boot, in order. */
  modules: string[];
  /** Modules loaded on demand (ext4 and its helpers; /etc/modules-fs.order), in order. Absent in older images. */
  fsModules?: string[];
  /** /bin/refcow-io was built (refcow-io.c; needs a C compiler on the host). Absent in older images. */
  refcowIo?: boolean;
  busyboxDdUsage: string;
}

/** The checkout's root: the nearest folder above this module holding refcow's package.json. */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "refcow") return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

export function guestImagePaths(dir = process.env.REFCOW_GUEST_DIR || path.join(repoRoot(), ".cache", "guest")): GuestImagePaths {
  return {
    dir,
    bzImage: path.join(dir, "bzImage"),
    initrd: path.join(dir, "initramfs.cpio"),
    bios: path.join(dir, "bios.bin"),
    vgaBios: path.join(dir, "vgabios.bin"),
    manifest: path.join(dir, "manifest.json"),
  };
}

export function guestImageExists(p = guestImagePaths()): boolean {
  return [p.bzImage, p.initrd, p.bios, p.vgaBios, p.manifest].every((f) => existsSync(f));
}

export function readGuestManifest(p = guestImagePaths()): GuestManifest {
  return JSON.parse(readFileSync(p.manifest, "utf8")) as GuestManifest;
}

/** Absolute path of v86's release wasm (the .mjs build cannot find it by itself in Node). */
export function v86WasmPath(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve("v86")), "v86.wasm");
}

/**
 * Makes sure the guest image is built and current: runs guest-images/build.sh, which returns at once when
 * the image matches its recipe (and rebuilds, from cached packages, when the script or /init changed).
 * Without the script (an installed package), the image must already exist. `refetch` downloads the
 * current packages again. Progress lines of the script go to `onProgress`.
 */
export async function ensureGuestImage(
  options: { onProgress?: (line: string) => void; dir?: string; refetch?: boolean } = {},
): Promise<GuestImagePaths> {
  const paths = guestImagePaths(options.dir);
  const script = path.join(repoRoot(), "guest-images", "build.sh");
  if (!existsSync(script)) {
    if (guestImageExists(paths)) return paths;
    throw new Error(`guest image missing in ${paths.dir} and no build script at ${script}`);
  }
  await runBuildScript(script, options.refetch ? ["--force"] : [], { REFCOW_GUEST_DIR: paths.dir }, options.onProgress);
  if (!guestImageExists(paths)) throw new Error(`guest-images/build.sh succeeded but ${paths.dir} is incomplete`);
  return paths;
}

/**
 * Runs one of guest-images/'s build scripts (bash), each output line to `onProgress`; rejects with the last
 * 4000 characters of its output when it fails.
 */
export function runBuildScript(script: string, args: string[], env: Record<string, string>, onProgress?: (line: string) => void): Promise<void> {
  const name = `guest-images/${path.basename(script)}`;
  return new Promise<void>((resolve, reject) => {
    const child = spawn("bash", [script, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    const onData = (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      tail = (tail + text).slice(-4000);
      for (const line of text.split("\n")) if (line.trim()) onProgress?.(line);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${name} failed (exit ${code}):\n${tail}`));
    });
  });
}
