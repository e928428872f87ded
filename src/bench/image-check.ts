/**
 * The check every image a figure is drawn from passes before the figure is used: `qemu-img check
 * --output=json`, whose verdict is "clean" or the corruptions, leaks and check errors it counted. An image
 * that does not pass throws ImageCheckFailed, which the run records as a failed entry (src/report/failures.ts).
 */
import { execFileSync } from "node:child_process";
import { ImageCheckFailed } from "../report/failures.js";

/** qemu-img check's verdict on an image: "clean", or what it found. */
export function qemuCheckVerdict(image: string): string {
  return qemuCheck(image).verdict;
}

/** qemu-img check's findings: the verdict, and whether anything but leaked clusters was found. */
export function qemuCheck(image: string): { verdict: string; leaksOnly: boolean } {
  let out: string;
  try {
    out = execFileSync("qemu-img", ["check", "--output=json", image], { stdio: ["ignore", "pipe", "pipe"] }).toString();
  } catch (e) {
    const err = e as { stdout?: Buffer; stderr?: Buffer };
    out = err.stdout?.toString() ?? "";
    if (!out.trim()) return { verdict: `check failed: ${err.stderr?.toString().trim() ?? "no output"}`, leaksOnly: false };
  }
  try {
    const r = JSON.parse(out) as { corruptions?: number; leaks?: number; "check-errors"?: number };
    const issues = [r.corruptions ? `${r.corruptions} corruptions` : "", r.leaks ? `${r.leaks} leaked clusters` : "", r["check-errors"] ? `${r["check-errors"]} check errors` : ""].filter(Boolean);
    return { verdict: issues.length ? issues.join(", ") : "clean", leaksOnly: !r.corruptions && !r["check-errors"] };
  } catch {
    return { verdict: `unreadable check output: ${out.slice(0, 200)}`, leaksOnly: false };
  }
}

/** Throws ImageCheckFailed unless qemu-img check finds the image clean. */
export function requireCleanImage(image: string, what?: string): void {
  const verdict = qemuCheckVerdict(image);
  if (verdict !== "clean") throw new ImageCheckFailed(verdict, what);
}

/**
 * For an image a crash left and a recovery reopened: throws ImageCheckFailed on anything but leaked clusters
 * (a crash may leak clusters, as it may under QEMU: space lost, no data at risk); returns the verdict.
 */
export function requireNoCorruption(image: string, what?: string): string {
  const c = qemuCheck(image);
  if (!c.leaksOnly) throw new ImageCheckFailed(c.verdict, what);
  return c.verdict;
}
