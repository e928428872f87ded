/**
 * The report's cost groups: the accounting wrapper's I/O purposes folded into the few questions a reader
 * asks of a post-snapshot write (how much is refcount work, COW copying, L2 copying, file growth, flushing).
 * Flush time is taken out of every purpose and shown as its own group, so "flushes" is what waiting for the
 * disk to make things durable cost, whatever was being made durable.
 */
import { SCHEME_IO_PURPOSES } from "../schemes/index.js";
import type { PurposeRow } from "./results.js";

export const COST_GROUPS = [
  "guest data",
  "data COW (read-modify-write)",
  "L2/L1 tables",
  "refcount/owner/journal metadata",
  "allocation/growth",
  "header/snapshot table/other",
  "flushes",
] as const;
export type CostGroup = (typeof COST_GROUPS)[number];

/** The engine's purposes by group; the schemes' come from the registry (SchemeDefinition.ioPurposes). */
const GROUP_OF: Record<string, CostGroup> = {
  ...Object.fromEntries(SCHEME_IO_PURPOSES),
  "guest-data": "guest data",
  "cow-read": "data COW (read-modify-write)",
  "cow-write": "data COW (read-modify-write)",
  l1: "L2/L1 tables",
  l2: "L2/L1 tables",
  refcount: "refcount/owner/journal metadata",
  growth: "allocation/growth",
};

export function groupOf(purpose: string): CostGroup {
  return GROUP_OF[purpose] ?? "header/snapshot table/other";
}

/** Microseconds per guest write by cost group (flush time moved to "flushes"). */
export function groupTimes(breakdown: Record<string, PurposeRow> | undefined): Record<CostGroup, number> {
  const out = Object.fromEntries(COST_GROUPS.map((g) => [g, 0])) as Record<CostGroup, number>;
  for (const [purpose, v] of Object.entries(breakdown ?? {})) {
    const flushUs = v.flush_us ?? 0;
    out[groupOf(purpose)] += v.us - flushUs;
    out.flushes += flushUs;
  }
  return out;
}

/** Host bytes, host operations and flushes per guest write, summed over purposes. */
export function hostTotals(breakdown: Record<string, PurposeRow> | undefined): { bytes: number; ops: number; flushes: number; us: number } {
  const t = { bytes: 0, ops: 0, flushes: 0, us: 0 };
  for (const v of Object.values(breakdown ?? {})) {
    t.bytes += v.bytes;
    t.ops += v.ops;
    t.flushes += v.flushes;
    t.us += v.us;
  }
  return t;
}
