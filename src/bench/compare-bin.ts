/**
 * Before/after in one run (`--compare-bin DIR`): a bench loads its modules from this build and from another
 * build's dist/ (say the commit before a change), runs both in every repetition, alternating which goes first,
 * and reports per-repetition ratios this/other — like for like: same process, same requests, same machine
 * moment.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { formatRatio } from "../report/ratios.js";
import { ratioByRounds, spread } from "../stats/latency.js";

export interface Build {
  /** "this" or "other". */
  label: string;
  /** The build's dist/ directory. */
  dist: string;
  /** Imports a module of the build by its path under dist/ ("worker/pool.js"). */
  load<T = Record<string, unknown>>(module: string): Promise<T>;
}

function buildAt(label: string, dist: string): Build {
  return { label, dist, load: (module) => import(pathToFileURL(path.join(dist, module)).href) };
}

/** This build, and the other one when `compareBin` names it (its dist/ or the checkout that holds one). */
export function buildsToCompare(compareBin: string | undefined): Build[] {
  const own = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
  const builds = [buildAt("this", own)];
  if (compareBin === undefined) return builds;
  let dist = path.resolve(compareBin);
  if (!fs.existsSync(path.join(dist, "worker", "pool.js")) && fs.existsSync(path.join(dist, "dist", "worker", "pool.js"))) dist = path.join(dist, "dist");
  if (!fs.existsSync(path.join(dist, "worker", "pool.js"))) throw new Error(`--compare-bin ${compareBin}: no refcow build there (no worker/pool.js)`);
  builds.push(buildAt("other", dist));
  return builds;
}

/** The builds in the order repetition `rep` runs them: alternating, so neither always goes first. */
export function orderFor<T>(builds: readonly T[], rep: number): T[] {
  return rep % 2 === 0 ? [...builds] : [...builds].reverse();
}

/** "ratio (min–max) | r1 r2 r3": this/other per repetition, the median with min–max, then every repetition's. */
export function formatPerRepRatios(thisBuild: readonly number[], other: readonly number[]): string {
  const s = ratioByRounds(thisBuild, other);
  const each = thisBuild.map((x, i) => (other[i]! > 0 ? (x / other[i]!).toFixed(3) : "-")).join(" ");
  return `${formatRatio(s, 3)} | ${each}`;
}

/** "median (min–max)" of a figure over the repetitions. */
export function formatSpread(values: readonly number[], digits = 1): string {
  const s = spread(values);
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
}
