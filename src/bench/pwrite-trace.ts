/**
 * The kernel's count of what a command did to one file: `strace -f -y -s 0 -e trace=pwrite64,ioctl,
 * copy_file_range`, the bytes pwrite64 was asked to write to the file, and the FICLONERANGE and
 * copy_file_range calls on it. The oracle of the copy-free COW's byte counts (the engine's own accounting
 * produced the other figure).
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";

export interface FileSyscalls {
  pwrites: number;
  pwriteBytes: number;
  /** FICLONERANGE calls that succeeded (the probe at open, refused by design, is not one). */
  clones: number;
  /** FICLONERANGE calls refused (the probe at open among them). */
  refusedClones: number;
  copyFileRanges: number;
}

/** Whether strace can trace here (installed, and ptrace allowed). */
export function straceAvailable(): boolean {
  try {
    execFileSync("strace", ["-f", "-qq", "-o", "/dev/null", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `cmd args` under strace (with `env` added to the environment) and counts its calls on `file` (which
 * must exist when the command opens it).
 */
export function traceFileSyscalls(cmd: string, args: string[], file: string, log = `${file}.strace`, env?: Record<string, string>): FileSyscalls {
  try {
    execFileSync("strace", ["-f", "-y", "-s", "0", "-o", log, "-e", "trace=pwrite64,ioctl,copy_file_range", cmd, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      maxBuffer: 1 << 26,
      env: env ? { ...process.env, ...env } : process.env,
    });
    return countFileSyscalls(fs.readFileSync(log, "utf8"), fs.realpathSync(file));
  } finally {
    fs.rmSync(log, { force: true });
  }
}

/**
 * Counts an strace -y log's calls on the file at `real`. A call another thread interrupted is split over two
 * lines ("<unfinished ...>", then "<... ioctl resumed>"): its result is read from the second.
 */
export function countFileSyscalls(text: string, real: string): FileSyscalls {
  const t: FileSyscalls = { pwrites: 0, pwriteBytes: 0, clones: 0, refusedClones: 0, copyFileRanges: 0 };
  const pendingClone = new Set<string>();
  const cloneResult = (ok: boolean) => (ok ? t.clones++ : t.refusedClones++);
  for (const line of text.split("\n")) {
    const pid = /^(\d+)\s/.exec(line)?.[1] ?? "";
    const resumed = /<\.\.\. ioctl resumed>.*\) = (-?\d+)/.exec(line);
    if (resumed && pendingClone.delete(pid)) {
      cloneResult(resumed[1] === "0");
      continue;
    }
    if (!line.includes(`<${real}>`)) continue;
    const w = /pwrite64\(\d+<[^>]+>, "[^"]*"(?:\.\.\.)?, (\d+), \d+/.exec(line);
    if (w) {
      t.pwrites++;
      t.pwriteBytes += Number(w[1]);
    } else if (/ioctl\(.*FICLONERANGE/.test(line)) {
      if (line.includes("<unfinished ...>")) pendingClone.add(pid);
      else cloneResult(/\) = 0\s*$/.test(line));
    } else if (line.includes("copy_file_range(")) t.copyFileRanges++;
  }
  return t;
}
