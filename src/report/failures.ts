/**
 * What a run could not measure, kept in the results beside what it could: a source that threw, or whose image
 * `qemu-img check` did not pass (src/bench/image-check.ts), becomes a failed entry with its reason, and the
 * report shows it where its row would be. Nothing a run tried is dropped without a trace.
 */
import type { FailedSource } from "./results.js";

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
