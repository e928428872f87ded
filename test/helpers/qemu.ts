/** Running QEMU's tools (the oracle) from tests, on images in a temporary directory. */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `refcow-${prefix}-`));
}

export function qemuImg(args: string[], cwd?: string): string {
  return execFileSync("qemu-img", args, { cwd, stdio: ["ignore", "pipe", "pipe"] }).toString();
}

/** Runs qemu-io with one -c per command (writes, snapshots do not go through qemu-io). */
export function qemuIo(file: string, commands: string[], opts: { cache?: string; cwd?: string } = {}): string {
  const args: string[] = [];
  if (opts.cache) args.push("-t", opts.cache);
  for (const c of commands) args.push("-c", c);
  args.push(file);
  return execFileSync("qemu-io", args, { cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 26 }).toString();
}

/** qemu-img check's exit code (0 clean, 2 corruptions, 3 leaks) and output. */
export function qemuCheck(file: string, extra: string[] = []): { status: number; out: string } {
  try {
    return { status: 0, out: qemuImg(["check", ...extra, file]) };
  } catch (e) {
    const err = e as { status: number; stdout: Buffer; stderr: Buffer };
    return { status: err.status, out: `${err.stdout}${err.stderr}` };
  }
}

/** The guest-visible bytes of an image (or of one of its snapshots) as QEMU reads them. */
export function qemuRaw(file: string, snapshot?: string): Buffer {
  const out = path.join(path.dirname(file), `.raw-${path.basename(file)}-${snapshot ?? "active"}`);
  const args = ["convert", "-O", "raw"];
  if (snapshot) args.push("-l", `snapshot.name=${snapshot}`);
  qemuImg([...args, file, out]);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

/** True when qemu-img compare finds the two images' guest contents equal. */
export function qemuCompare(a: string, b: string): boolean {
  try {
    qemuImg(["compare", a, b]);
    return true;
  } catch {
    return false;
  }
}
