/**
 * The one load generator and the one clock of the write benchmark. Every source — refcow through the ring,
 * refcow's and QEMU's NBD exports, the raw file through qemu-nbd, the ring or pwrite — is driven by
 * `runWritePhase` with the same request sequence, and every request is timed by it, submission to
 * completion, with the same clock (process.hrtime).
 *
 * Workloads, over N clusters of 64 KiB: one 4 KiB write per cluster at 4 KiB into it (so a post-snapshot
 * write copies the rest of the cluster), in a seeded random cluster order (`rand4k-per-cluster`) or in
 * cluster order (`seq`). In writeback a flush follows every 64th write and the last one; in writethrough
 * each write is durable when it completes and no flush is sent. A phase's wall time runs from the first
 * submission until the last request (a flush in writeback) has completed.
 */
import type { Pattern } from "../report/results.js";

export const CLUSTER = 65536;
export const WRITE = 4096;
export const FLUSH_EVERY = 64;

export const PATTERNS: readonly Pattern[] = ["rand4k-per-cluster", "seq"];

/** What the load generator needs of a source: a write and a flush, synchronous or not. */
export interface WriteTarget {
  write(offset: number, data: Uint8Array): void | Promise<unknown>;
  flush(): void | Promise<unknown>;
}

export interface PhaseResult {
  /** Per-write latency, µs, submission to completion (flushes excluded). */
  writeUs: number[];
  /** Per-flush latency, µs. */
  flushUs: number[];
  /** First submission to last completion, µs (flush waits included). */
  wallUs: number;
}

export const nowUs = (): number => Number(process.hrtime.bigint()) / 1000;

/** Cluster indices 0..n-1 in the workload's order (a seeded shuffle for the random pattern). */
export function clusterOrder(n: number, pattern: Pattern, seed: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  if (pattern === "seq") return idx;
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx;
}

/** Byte offsets of a phase's writes: 4 KiB into each cluster of [first, first + n), in the workload's order. */
export function writeOffsets(n: number, pattern: Pattern, seed: number, firstCluster = 0): number[] {
  return clusterOrder(n, pattern, seed).map((c) => (firstCluster + c) * CLUSTER + WRITE);
}

/** Whether the load generator sends a flush after write number i (0-based) of n in this cache mode. */
export function flushAfter(i: number, n: number, cache: string): boolean {
  return cache === "writeback" && ((i + 1) % FLUSH_EVERY === 0 || i === n - 1);
}

/** Runs one phase: the writes at `offsets` one at a time (queue depth 1), flushes as `flushAfter` says. */
export async function runWritePhase(target: WriteTarget, cache: string, offsets: readonly number[], data: Uint8Array): Promise<PhaseResult> {
  const writeUs: number[] = [];
  const flushUs: number[] = [];
  const t0 = nowUs();
  for (let i = 0; i < offsets.length; i++) {
    const t = nowUs();
    await target.write(offsets[i]!, data);
    const t1 = nowUs();
    writeUs.push(t1 - t);
    if (flushAfter(i, offsets.length, cache)) {
      await target.flush();
      flushUs.push(nowUs() - t1);
    }
  }
  return { writeUs, flushUs, wallUs: nowUs() - t0 };
}
