/**
 * What a run could not measure, kept in the results beside what it could: a source that threw, or whose image
 * `qemu-img check` did not pass, becomes a failed entry with its reason, and the report shows it where its
 * row would be. Nothing a run tried is dropped without a trace.
 *
 * An image's verdict comes from `qemu-img check --output=json`: "clean", or the corruptions, leaks and check
 * errors it counted. Every image a figure is drawn from is checked before the figure is used.
 */
import { execFileSync } from "node:child_process";
import type { AllocPolicyName, FlushOrder } from "../engine/types.js";
import type { Transport } from "./sources.js";

/** The part of a run a failure happened in. */
export type FailurePart = "write matrix" | "trace replay" | "fio" | "snapshot-ops" | "guest" | "host matrix";

export interface FailedSource {
  part: FailurePart;
  /** The source as the report names it: "eager (ring)", "QEMU (nbd)", "owner (guest)". */
  name: string;
  source?: "refcow" | "qemu" | "raw";
  scheme?: string;
  order?: FlushOrder;
  alloc?: AllocPolicyName;
  transport?: Transport;
  cache?: string;
  workload?: string;
  /** fio's queue depth. */
  iodepth?: number;
  /** The round (1-based; a guest run's repetition) it failed in. */
  round?: number;
  /** Why: the exception's text, or "the image it left fails qemu-img check: <verdict>". */
  reason: string;
  /** qemu-img check's verdict, when the image it left did not pass. */
  check?: string;
}

/** An image that did not pass qemu-img check: the source's figures are not used. */
export class ImageCheckFailed extends Error {
  constructor(
    readonly verdict: string,
    what = "the image it left",
  ) {
    super(`${what} fails qemu-img check: ${verdict}`);
    this.name = "ImageCheckFailed";
  }
}

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

/** The failed entry of an exception: its text as the reason, and the check verdict when that was the cause. */
export function failureOf(e: unknown, entry: Omit<FailedSource, "reason" | "check">): FailedSource {
  const reason = e instanceof Error ? e.message : String(e);
  return { ...entry, reason, ...(e instanceof ImageCheckFailed ? { check: e.verdict } : {}) };
}

/** One line for a failure: where, what, why. */
export function failureLine(f: FailedSource): string {
  const where = [f.part, f.name, f.cache, f.workload, f.iodepth !== undefined ? `iodepth ${f.iodepth}` : "", f.round !== undefined ? (f.part === "guest" ? `run ${f.round}` : `round ${f.round}`) : ""].filter(Boolean).join(", ");
  return `${where}: ${f.reason}`;
}
