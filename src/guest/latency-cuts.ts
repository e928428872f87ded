/**
 * The cuts of the delay between the guest and the engine, each of which can be switched off to measure
 * what it brings (`refcow run --cuts`):
 *
 *   spin    spins sized from what was observed (SizedSpin, src/worker/ring.ts): the DiskClient spins for
 *           the completion as long as most requests take (at most SPIN_CAP_CLIENT_US), the worker for the
 *           next request as long as most gaps between requests are (at most SPIN_CAP_SERVER_US), neither
 *           when the wait is mostly longer than that, and neither while idle. Off: the fixed adaptive 50 µs
 *           spins of both sides.
 *   wake    completions reach the guest from inside v86's run loop: the hda adapter polls the ring (with
 *           the sized spin while the guest is halted) each time v86 runs its hardware timers, so the
 *           interrupt is raised without a trip through Node's event loop, halted or not. Off: completions
 *           come through promises after v86 yields.
 *   nocopy  DMA writes are handed to the ring as v86 gathered them (PIO writes are always copied).
 */

import { SizedSpin } from "../worker/ring.js";

export const CUT_NAMES = ["spin", "wake", "nocopy"] as const;
export type CutName = (typeof CUT_NAMES)[number];
export type LatencyCuts = Record<CutName, boolean>;

export const SPIN_CAP_CLIENT_US = SizedSpin.CLIENT_CAP_US;
export const SPIN_CAP_SERVER_US = SizedSpin.SERVER_CAP_US;

export const ALL_CUTS: LatencyCuts = { spin: true, wake: true, nocopy: true };
export const NO_CUTS: LatencyCuts = { spin: false, wake: false, nocopy: false };

/** "all", "none", or a comma-separated list of cut names. Throws a RangeError naming the valid ones. */
export function parseCuts(text: string): LatencyCuts {
  if (text === "all") return { ...ALL_CUTS };
  if (text === "none") return { ...NO_CUTS };
  const out = { ...NO_CUTS };
  for (const name of text.split(",")) {
    if (!(CUT_NAMES as readonly string[]).includes(name)) throw new RangeError(`unknown cut '${name}' (all, none, or a list of: ${CUT_NAMES.join(", ")})`);
    out[name as CutName] = true;
  }
  return out;
}

/** The cuts as `parseCuts` reads them back: "all", "none" or the list. */
export function formatCuts(c: LatencyCuts): string {
  const on = CUT_NAMES.filter((n) => c[n]);
  return on.length === CUT_NAMES.length ? "all" : on.length === 0 ? "none" : on.join(",");
}
