/**
 * refcow check — qemu-img check: report (and with -r repair) refcount inconsistencies, with qemu-img's
 * messages, JSON and exit codes. With -r, a repair that fixed something is followed by a second,
 * read-only pass whose result is what gets printed and decides the exit code.
 */
import { hasFlag, lastValue } from "../args.js";
import {
  CHECK_EXIT,
  checkExitCode,
  checkHuman,
  checkJson,
  type ImageCheckData,
  repairBanner,
} from "../check-output.js";
import type { CliIo } from "../command.js";
import { type CheckResult, Qcow2Image, type RepairMode } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { formatForOpen, openImage, parseAllocPolicy, parseCacheMode, probedRawWarning } from "../open.js";
import { ALLOC_LONG, closing, FORCE_SHARE_LONG, HELP_LONG, ioOf, NO_REFLINK_LONG, OUTPUT_LONG, oneFilename, outputFormat, parseCommandArgs, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";

function toCheckData(filename: string, r: CheckResult): ImageCheckData {
  return {
    filename,
    format: "qcow2",
    checkErrors: r.checkErrors,
    imageEndOffset: r.imageEndOffset,
    corruptions: r.corruptions,
    leaks: r.leaks,
    corruptionsFixed: r.corruptionsFixed,
    leaksFixed: r.leaksFixed,
    totalClusters: r.totalClusters,
    allocatedClusters: r.allocatedClusters,
    fragmentedClusters: r.fragmentedClusters,
    compressedClusters: r.compressedClusters,
  };
}

export async function checkCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "check",
    argv,
    { short: "hf:r:T:t:qU", long: [HELP_LONG, OUTPUT_LONG, SCHEME_LONG, SCHEME_OPT_LONG, ALLOC_LONG, NO_REFLINK_LONG, FORCE_SHARE_LONG, { name: "repair", arg: true, key: "r" }] },
    io,
  );
  if (!parsed) return 0;
  let repair: RepairMode | undefined;
  const r = lastValue(parsed, "r");
  if (r !== undefined) {
    if (r !== "leaks" && r !== "all") throw new UsageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${r}`);
    repair = r;
  }
  const output = outputFormat(parsed);
  const quiet = hasFlag(parsed, "q");
  const filename = oneFilename(parsed);
  const srcCache = lastValue(parsed, "T");
  if (srcCache !== undefined) parseCacheMode(srcCache, "source cache");
  const cacheArg = lastValue(parsed, "t");
  const cache = cacheArg === undefined ? undefined : parseCacheMode(cacheArg);
  const format = formatForOpen(lastValue(parsed, "f"), filename);

  const readOnly = repair === undefined;
  const opened = openImage({
    path: filename,
    format,
    readOnly,
    forCheck: true,
    cache,
    ...schemeChoice(parsed),
    alloc: parseAllocPolicy(lastValue(parsed, "alloc")),
    noReflink: hasFlag(parsed, "no-reflink") || undefined,
  });
  const warning = probedRawWarning(opened, readOnly);
  if (warning) io.err(warning);
  const img = opened.disk;
  return closing(img, filename, () => {
    if (!(img instanceof Qcow2Image)) {
      io.err("refcow: This image format does not support checks\n");
      return CHECK_EXIT.unsupported;
    }
    let result: CheckResult;
    try {
      result = img.check(repair);
    } catch (e) {
      throw new CliError(`Check failed: ${messageOf(e)}`);
    }
    for (const m of result.messages) io.err(`${m}\n`);
    // qemu-img's "Check failed" (a leak repair that needs a rebuild): no summary, exit 1.
    if (result.failure) throw new CliError(`Check failed: ${result.failure}`);
    let data = toCheckData(filename, result);
    if (result.leaksFixed || result.corruptionsFixed) {
      if (output === "human" && !quiet) io.out(repairBanner(result.leaksFixed, result.corruptionsFixed));
      let second: CheckResult;
      try {
        second = img.check();
      } catch (e) {
        throw new CliError(`Check failed: ${messageOf(e)}`);
      }
      for (const m of second.messages) io.err(`${m}\n`);
      data = { ...toCheckData(filename, second), leaksFixed: result.leaksFixed, corruptionsFixed: result.corruptionsFixed };
    }
    if (!quiet) io.out(output === "json" ? checkJson(data) : checkHuman(data));
    // A refused repair: the report above, then why nothing was repaired (the exit code is the report's).
    if (result.refused) io.err(`refcow: ${result.refused}\n`);
    if (data.checkErrors) {
      io.err("refcow: Check failed\n");
      return CHECK_EXIT.failed;
    }
    return checkExitCode(data);
  });
}
