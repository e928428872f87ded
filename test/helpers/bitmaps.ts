/** QEMU's view of persistent bitmaps (the oracle): qemu-img info's list, and qemu-nbd + nbdinfo's dirty map. */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { qemuImg } from "./qemu.js";

export interface QemuBitmap {
  name: string;
  granularity: number;
  flags: string[];
}

/** `qemu-img info --output=json`'s format-specific.data.bitmaps ([] when absent). */
export function qemuBitmaps(file: string): QemuBitmap[] {
  const info = JSON.parse(qemuImg(["info", "--output=json", "-U", file])) as { "format-specific"?: { data?: { bitmaps?: QemuBitmap[] } } };
  return info["format-specific"]?.data?.bitmaps ?? [];
}

export interface DirtyRun {
  offset: number;
  length: number;
  dirty: boolean;
}

let serial = 0;

/**
 * The dirty runs of bitmap `name` as QEMU reads it: qemu-nbd exports the image read-only with the bitmap
 * (-B), nbdinfo prints the qemu:dirty-bitmap:NAME context. Adjacent equal runs merged.
 */
export function qemuDirtyMap(file: string, name: string): DirtyRun[] {
  const dir = path.dirname(file);
  const sock = path.join(dir, `nbd-${process.pid}-${serial++}.sock`);
  const pidFile = `${sock}.pid`;
  execFileSync("qemu-nbd", ["--fork", "-r", "-B", name, "-k", sock, "--pid-file", pidFile, "-f", "qcow2", file], { stdio: ["ignore", "ignore", "pipe"] });
  try {
    const out = execFileSync("nbdinfo", ["--json", `--map=qemu:dirty-bitmap:${name}`, `nbd+unix:///?socket=${sock}`], { stdio: ["ignore", "pipe", "pipe"] }).toString();
    const runs: DirtyRun[] = [];
    for (const e of JSON.parse(out) as { offset: number; length: number; type: number }[]) {
      const dirty = (e.type & 1) !== 0;
      const last = runs[runs.length - 1];
      if (last && last.dirty === dirty && last.offset + last.length === e.offset) last.length += e.length;
      else runs.push({ offset: e.offset, length: e.length, dirty });
    }
    return runs;
  } finally {
    // The server ends with its one client; make sure of it (by the pid it wrote, nothing broader).
    try {
      const pid = Number(fs.readFileSync(pidFile, "utf8"));
      if (pid > 0) process.kill(pid, "SIGTERM");
    } catch {
      // already gone
    }
    fs.rmSync(pidFile, { force: true });
    fs.rmSync(sock, { force: true });
  }
}

/** Runs as offset/length/dirty from bitmapExtents' lengths, starting at `offset`. */
export function withOffsets(runs: { length: number; dirty: boolean }[], offset = 0): DirtyRun[] {
  let pos = offset;
  return runs.map((r) => {
    const out = { offset: pos, length: r.length, dirty: r.dirty };
    pos += r.length;
    return out;
  });
}
