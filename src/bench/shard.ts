/**
 * Shards of the benchmark matrix (`refcow bench --shard i/N`), so that an existing scheduler (a CI matrix,
 * a Slurm array) runs the matrix on N machines and `refcow report DIR...` merges what they wrote
 * (src/report/merge.ts).
 *
 * A cell is what one row's rounds come from: a source in one cache mode and workload (the write matrix),
 * a source in one cache mode (the trace replay), a source at one fio cell, a scheme at one allocated size
 * (the snapshot operations). Each part of the matrix declares its cells in a canonical order computed from
 * the options alone (before anything about the machine is known: which tools it has), and shard i of N runs
 * every N-th of them from the i-th on — a deterministic 1/N of each part, the same in every shard given the
 * same options. All rounds of a cell run in the shard that owns it, so that the cell's ratios stay within
 * one machine and one run.
 */
import type { Shard, ShardRecord } from "../report/results.js";

export type { Shard, ShardRecord };

/** `i/N` with 1 ≤ i ≤ N. */
export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(count) || count < 1 || index < 1 || index > count) throw new Error(`--shard takes i/N with 1 ≤ i ≤ N (got '${text}')`);
  return { index, count };
}

export class ShardPlan {
  private readonly matrix: string[] = [];
  private readonly owned: string[] = [];

  constructor(readonly shard?: Shard) {}

  /**
   * Declares the cells of one part of the matrix (`part`: its name; `keys`: its cells in canonical order)
   * and returns the keys this shard runs (all of them without a shard).
   */
  declare(part: string, keys: readonly string[]): Set<string> {
    const mine = new Set<string>();
    keys.forEach((k, i) => {
      this.matrix.push(cellName(part, k));
      if (!this.shard || i % this.shard.count === this.shard.index - 1) {
        mine.add(k);
        this.owned.push(cellName(part, k));
      }
    });
    return mine;
  }

  /** The record for results.json (undefined when the run is not a shard). */
  record(): ShardRecord | undefined {
    return this.shard ? { ...this.shard, cells: [...this.owned], matrix: [...this.matrix] } : undefined;
  }
}

/** The keys of a part this run owns: `plan`'s share, or all of them when the run is not a shard. */
export function cellsToRun(plan: ShardPlan | undefined, part: string, keys: readonly string[]): Set<string> {
  return plan ? plan.declare(part, keys) : new Set(keys);
}

/** A cell as results.json and the merge name it: "write matrix: refcow/eager//first-fit/ring|writeback|seq". */
export const cellName = (part: string, key: string) => `${part}: ${key}`;
