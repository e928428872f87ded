/**
 * Runs QEMU's qemu-img / qemu-io (the oracle) and the built refcow CLI side by side.
 * refcow is run as the user runs it: `node dist/cli/bin.js ...` (dist/ is built by `npm run build`, which
 * `npm test` runs first).
 */
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const REFCOW_BIN = path.join(ROOT, "dist", "cli", "bin.js");
const BUILT_MAIN = path.join(ROOT, "dist", "cli", "main.js");

export function haveQemu(): boolean {
  try {
    execFileSync("qemu-img", ["--version"], { stdio: "ignore" });
    execFileSync("qemu-io", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export function assertBuilt(): void {
  if (!fs.existsSync(BUILT_MAIN)) throw new Error(`${BUILT_MAIN} is missing: run 'npm run build' (npm test does it)`);
}

export interface RunResult {
  stdout: string;
  stderr: string;
  status: number;
}

export type Tool = "qemu-img" | "qemu-io" | "refcow";

/** Runs a tool in `cwd`; `args` are passed verbatim (no shell). */
export function run(tool: Tool, args: string[], cwd: string, input?: string): Promise<RunResult> {
  const [file, argv] = tool === "refcow" ? [process.execPath, [REFCOW_BIN, ...args]] : [tool, args];
  return new Promise((resolve) => {
    const child = execFile(file, argv, { cwd, encoding: "utf8", maxBuffer: 64 << 20, env: { ...process.env, LC_ALL: "C" } }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0;
      resolve({ stdout, stderr, status });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** The same command through qemu-img and `refcow`. */
export async function both(args: string[], cwdQemu: string, cwdRefcow = cwdQemu): Promise<{ q: RunResult; r: RunResult }> {
  const [q, r] = await Promise.all([run("qemu-img", args, cwdQemu), run("refcow", args, cwdRefcow)]);
  return { q, r };
}

/** The same qemu-io session through qemu-io and `refcow io`. */
export async function bothIo(args: string[], cwdQemu: string, cwdRefcow: string): Promise<{ q: RunResult; r: RunResult }> {
  const q = await run("qemu-io", args, cwdQemu);
  const r = await run("refcow", ["io", ...args], cwdRefcow);
  return { q, r };
}

/** qemu-img's "qemu-img: " / qemu-io's "qemu-io: " prefix, as refcow prints it. */
export function asRefcowStderr(stderr: string): string {
  return stderr.replace(/^qemu-(img|io): /gm, "refcow: ");
}

/** First line of stderr, prefix normalised (QEMU sometimes continues an error on a second line). */
export function firstErrorLine(stderr: string): string {
  return asRefcowStderr(stderr).split("\n")[0]!;
}

/** qemu-io timing figures vary between runs. */
export function maskTimings(out: string): string {
  return out.replace(/^(.*ops; ).*$/gm, "$1TIME").replace(/^(\d+,\d+,)[0-9:.]+,.*$/gm, "$1TIME");
}

/** Snapshot dates vary between two runs that each create a snapshot. */
export function maskDates(out: string): string {
  return out
    .replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, "DATE")
    .replace(/"date-(n?sec)": \d+/g, '"date-$1": N')
    .replace(/"actual-size": \d+/g, '"actual-size": N')
    .replace(/^disk size: .*$/gm, "disk size: N");
}

export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `refcow-cli-${tag}-`));
}

export function copyDir(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true });
}

function sh(tool: "qemu-img" | "qemu-io", args: string[], cwd: string): void {
  execFileSync(tool, args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Writes a big-endian value into a file (to plant refcount leaks and corruptions). */
export function poke(file: string, offset: number, value: number, width: number): void {
  const buf = Buffer.alloc(width);
  buf.writeUIntBE(value, 0, width);
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, buf, 0, width, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A set of images made by QEMU:
 *   base.qcow2       64 MiB; 1 MiB of 0x11 at 0, 64 KiB of 0x22 at 4 MiB, a zero cluster at 8 MiB
 *   sub/ov.qcow2     overlay of ../base.qcow2 (relative name), 64 KiB written, a zero cluster, a discard
 *   comp.qcow2       base.qcow2 converted with compression
 *   v2.qcow2         compat=0.10, 128 KiB written, snapshot "first"
 *   snap.qcow2       base.qcow2 + snapshot "one", a write, snapshot "näme with spaces and a very long tag"
 *   lazy.qcow2       lazy_refcounts=on, empty
 *   small4k.qcow2    cluster_size=4k, refcount_bits=8, a few writes
 *   raw.img          4 MiB raw, 64 KiB of 7 at 0 and of 8 at 1 MiB
 *   sub/ovraw.qcow2  overlay of ../raw.img (raw backing), 64 KiB written
 *   leak.qcow2       base-like image with two leaked clusters (refcount 1, no reference)
 *   corrupt.qcow2    a data cluster with refcount 0
 */
export function makeImages(dir: string): void {
  fs.mkdirSync(path.join(dir, "sub"), { recursive: true });
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "base.qcow2", "64M"], dir);
  sh("qemu-io", ["-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 4M 64k", "-c", "write -z 8M 64k", "base.qcow2"], dir);
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "../base.qcow2", "-F", "qcow2", "sub/ov.qcow2"], dir);
  sh("qemu-io", ["-c", "write -P 0x33 64k 64k", "-c", "write -z 4M 64k", "-c", "discard 0 64k", "sub/ov.qcow2"], dir);
  sh("qemu-img", ["convert", "-c", "-O", "qcow2", "base.qcow2", "comp.qcow2"], dir);
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "16M"], dir);
  sh("qemu-io", ["-c", "write -P 5 0 128k", "v2.qcow2"], dir);
  sh("qemu-img", ["snapshot", "-c", "first", "v2.qcow2"], dir);
  fs.copyFileSync(path.join(dir, "base.qcow2"), path.join(dir, "snap.qcow2"));
  sh("qemu-img", ["snapshot", "-c", "one", "snap.qcow2"], dir);
  sh("qemu-io", ["-c", "write -P 0x44 0 64k", "snap.qcow2"], dir);
  sh("qemu-img", ["snapshot", "-c", "näme with spaces and a very long tag", "snap.qcow2"], dir);
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "lazy.qcow2", "16M"], dir);
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k,refcount_bits=8", "small4k.qcow2", "8M"], dir);
  sh("qemu-io", ["-c", "write -P 1 0 12k", "-c", "write -P 2 1M 4k", "small4k.qcow2"], dir);
  sh("qemu-img", ["create", "-q", "-f", "raw", "raw.img", "4M"], dir);
  sh("qemu-io", ["-f", "raw", "-c", "write -P 7 0 64k", "-c", "write -P 8 1M 64k", "raw.img"], dir);
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "../raw.img", "-F", "raw", "sub/ovraw.qcow2"], dir);
  sh("qemu-io", ["-c", "write -P 9 64k 64k", "sub/ovraw.qcow2"], dir);
  // Refcount damage, on images laid out as: header, reftable, refblock (0x20000), L1, L2, data.
  sh("qemu-img", ["create", "-q", "-f", "qcow2", "leak.qcow2", "64M"], dir);
  sh("qemu-io", ["-c", "write -P 0xaa 0 64k", "-c", "write -P 0xbb 1M 64k", "leak.qcow2"], dir);
  fs.copyFileSync(path.join(dir, "leak.qcow2"), path.join(dir, "corrupt.qcow2"));
  fs.truncateSync(path.join(dir, "leak.qcow2"), 1 << 20);
  poke(path.join(dir, "leak.qcow2"), 0x20000 + 2 * 10, 1, 2);
  poke(path.join(dir, "leak.qcow2"), 0x20000 + 2 * 11, 1, 2);
  poke(path.join(dir, "corrupt.qcow2"), 0x20000 + 2 * 5, 0, 2);
}
