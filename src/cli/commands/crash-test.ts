/**
 * refcow crash-test — the crash-consistency harness (src/harness/crash.ts) from the command line: seeded
 * workloads per scheme and cache mode, every crash state recovered and verified, a sample (or all) checked by
 * QEMU. Prints a table of crash states tried and failures; exit code 1 when anything failed, with a command
 * line that reproduces each reported failure.
 */
import type { CliIo } from "../command.js";
import { ALLOC_POLICIES, type AllocPolicyName, type CacheMode } from "../engine.js";
import { SCHEME_NAMES } from "../../schemes/index.js";
import { type CrashTestOptions, formatCrashReport, runCrashTests } from "../../harness/crash.js";
import { CRASH_GEOMETRIES } from "../../harness/crash-geometries.js";
import { qemuImgAvailable } from "../../harness/qemu-tools.js";
import { hasFlag, lastValue, parseArgs } from "../args.js";
import { CliError, UsageError } from "../errors.js";
import { HELP_LONG, ioOf } from "./common.js";
import { CRASH_TEST_USAGE, CRASH_TEST_HELP } from "./crash-test-help.js";

function positive(v: string | undefined, what: string, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${what} must be an integer of at least ${min} (got '${v}')`);
  return n;
}

export async function crashTestCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseArgs(argv, {
    short: "ht:",
    long: [
      HELP_LONG,
      { name: "scheme", arg: true },
      { name: "seed", arg: true },
      { name: "seeds", arg: true },
      { name: "steps", arg: true },
      { name: "geometry", arg: true },
      { name: "alloc", arg: true },
      { name: "reflink", arg: false },
      { name: "torn", arg: true },
      { name: "subsets", arg: true },
      { name: "qemu-sample", arg: true },
      { name: "check-sample", arg: true },
      { name: "at", arg: true },
    ],
  });
  if (hasFlag(parsed, "h")) {
    io.out(`usage: refcow ${CRASH_TEST_USAGE}\n\n${CRASH_TEST_HELP}`);
    return 0;
  }
  if (parsed.operands.length) throw new UsageError(`unexpected argument '${parsed.operands[0]}'`);
  const opts: CrashTestOptions = {};
  const schemes = lastValue(parsed, "scheme");
  if (schemes !== undefined) {
    opts.schemes = schemes.split(",");
    for (const s of opts.schemes) if (!SCHEME_NAMES.includes(s)) throw new UsageError(`unknown scheme '${s}' (available: ${SCHEME_NAMES.join(", ")})`);
  }
  const caches = lastValue(parsed, "t");
  if (caches !== undefined) {
    opts.caches = caches.split(",") as CacheMode[];
    for (const c of opts.caches) if (c !== "writeback" && c !== "writethrough") throw new UsageError(`-t takes writeback and/or writethrough (got '${c}'): unsafe ignores flushes, so no crash state is meant to survive it`);
  }
  opts.seed = positive(lastValue(parsed, "seed"), "--seed", 0);
  opts.seeds = positive(lastValue(parsed, "seeds"), "--seeds");
  opts.steps = positive(lastValue(parsed, "steps"), "--steps");
  opts.subsets = positive(lastValue(parsed, "subsets"), "--subsets", 0);
  opts.at = positive(lastValue(parsed, "at"), "--at");
  const geometry = lastValue(parsed, "geometry");
  if (geometry !== undefined) {
    if (!CRASH_GEOMETRIES.some((g) => g.name === geometry)) throw new UsageError(`unknown geometry '${geometry}' (available: ${CRASH_GEOMETRIES.map((g) => g.name).join(", ")})`);
    opts.geometry = geometry;
  }
  const alloc = lastValue(parsed, "alloc");
  if (alloc !== undefined) {
    if (!ALLOC_POLICIES.includes(alloc as AllocPolicyName)) throw new UsageError(`unknown allocation policy '${alloc}' (available: ${ALLOC_POLICIES.join(", ")})`);
    opts.alloc = alloc as AllocPolicyName;
  }
  if (hasFlag(parsed, "reflink")) opts.reflink = true;
  const torn = lastValue(parsed, "torn");
  if (torn !== undefined) opts.torn = torn === "all" ? Infinity : positive(torn, "--torn", 0);
  const sample = lastValue(parsed, "qemu-sample");
  if (sample !== undefined) {
    opts.qemuSample = sample === "all" ? "all" : positive(sample, "--qemu-sample", 0);
    if (opts.qemuSample !== 0 && !qemuImgAvailable()) throw new CliError("qemu-img not found: install qemu-utils, or pass --qemu-sample 0");
  }
  opts.checkSample = positive(lastValue(parsed, "check-sample"), "--check-sample", 0);
  if (opts.checkSample && !qemuImgAvailable()) throw new CliError("qemu-img not found: install qemu-utils, or pass --check-sample 0");
  const started = Date.now();
  opts.onCell = (c) =>
    io.err(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${c.scheme}/${c.cache}: ${c.states} crash states, ${c.failures} failures\n`);
  const report = runCrashTests(opts);
  io.out(formatCrashReport(report));
  return report.failures ? 1 : 0;
}
