/**
 * QEMU's tools as an oracle for the harnesses: `qemu-img check` (with its exit codes) and `qemu-img compare`
 * on image bytes written to a scratch directory.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** qemu-img check exit codes. */
export const QEMU_CHECK = { clean: 0, failed: 1, corrupt: 2, leaks: 3 } as const;

export interface ToolResult {
  status: number;
  out: string;
}

let available: boolean | undefined;

/** True when qemu-img can be run. */
export function qemuImgAvailable(): boolean {
  if (available === undefined) {
    const r = spawnSync("qemu-img", ["--version"], { stdio: "ignore" });
    available = r.status === 0;
  }
  return available;
}

export function qemuImg(args: string[]): ToolResult {
  const r = spawnSync("qemu-img", args, { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/** A scratch directory for image files, removed by dispose(). */
export class Scratch {
  readonly dir: string;
  private n = 0;

  constructor(prefix: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `refcow-${prefix}-`));
  }

  /** Writes `bytes` to a new file and returns its path. */
  file(bytes: Uint8Array, name = "img"): string {
    const p = path.join(this.dir, `${name}-${this.n++}.qcow2`);
    fs.writeFileSync(p, bytes);
    return p;
  }

  remove(p: string): void {
    fs.rmSync(p, { force: true });
  }

  dispose(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
