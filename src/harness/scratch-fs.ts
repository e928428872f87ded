/**
 * A scratch XFS file system with reflink, on a loop device: where the copy-free COW (engine/data/cow-copy.ts) can
 * be tested and measured on any Linux machine. A sparse file (512 MiB, XFS's practical minimum is 300 MiB)
 * gets `mkfs.xfs -m reflink=1` and is mounted with `mount -o loop`: root only (mkfs.xfs from xfsprogs,
 * test/setup/ensure-xfs.sh installs it). `dispose` unmounts it (the loop device goes with it) and removes
 * the file.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export interface ScratchMount {
  /** The mount point: a directory on the scratch file system. */
  readonly dir: string;
  /** The file system's type as the kernel names it ("xfs"). */
  readonly type: string;
  dispose(): void;
}

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();

/** Why an XFS scratch mount cannot be made here (not root, no mkfs.xfs), or undefined when it can be tried. */
export function xfsMountProblem(): string | undefined {
  if (process.platform !== "linux") return "XFS loop mounts need Linux";
  if (process.getuid?.() !== 0) return "XFS loop mounts need root (mount -o loop)";
  try {
    run("mkfs.xfs", ["-V"]);
  } catch {
    return "mkfs.xfs not found (install xfsprogs: bash test/setup/ensure-xfs.sh)";
  }
  return undefined;
}

/** Makes and mounts a scratch XFS file system with reflink; throws with the reason when it cannot. */
export function makeXfsMount(prefix = "xfs", bytes = 512 * 1024 * 1024): ScratchMount {
  const problem = xfsMountProblem();
  if (problem) throw new Error(problem);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), `refcow-${prefix}-`));
  const backing = path.join(base, "fs.img");
  const dir = path.join(base, "mnt");
  fs.mkdirSync(dir);
  let mounted = false;
  const cleanup = () => {
    if (mounted) {
      try {
        run("umount", [dir]);
      } catch {
        // Busy (a file still open): lazily, so that the loop device goes once the last user closes.
        run("umount", ["-l", dir]);
      }
      mounted = false;
    }
    fs.rmSync(base, { recursive: true, force: true });
  };
  try {
    fs.closeSync(fs.openSync(backing, "w"));
    fs.truncateSync(backing, bytes);
    run("mkfs.xfs", ["-q", "-m", "reflink=1", backing]);
    run("mount", ["-o", "loop", backing, dir]);
    mounted = true;
    const type = run("stat", ["-f", "-c", "%T", dir]).trim();
    if (type !== "xfs") throw new Error(`the scratch mount at ${dir} is ${type}, not xfs`);
    return { dir, type, dispose: cleanup };
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    cleanup();
    throw new Error(`cannot make an XFS scratch mount: ${err.stderr?.toString().trim() || err.message}`);
  }
}
