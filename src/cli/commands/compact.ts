/**
 * refcow compact — moves every cluster in use down into the free space inside the file (data, L2 and L1
 * tables of the active layer and of every snapshot, the snapshot table, refcount structures, VM state),
 * rewrites every reference, then truncates the file. Snapshots keep their bytes and VM state. The image must
 * pass check first; a crash in the middle leaves an image that the next open repairs (dirty bit).
 */
import { performance } from "node:perf_hooks";
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { compactImage, type CompactResult, NodeFile, Qcow2Image } from "../engine.js";
import { CliError, messageOf } from "../errors.js";
import { sizeToStr } from "../human-size.js";
import { errnoText, formatForOpen, openImage } from "../open.js";
import { HELP_LONG, ioOf, oneFilename, parseCommandArgs, SCHEME_LONG, SCHEME_OPT_LONG, schemeChoice } from "./common.js";

export async function compactCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs("compact", argv, { short: "hqf:", long: [HELP_LONG, SCHEME_LONG, SCHEME_OPT_LONG] }, io);
  if (!parsed) return 0;
  const filename = oneFilename(parsed);
  const choice = schemeChoice(parsed);
  const quiet = hasFlag(parsed, "q");
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  // Opened read-only first, with its backing chain: the same refusals as any other command (missing file,
  // not qcow2, unreadable backing file, corrupt header).
  const probe = openImage({ path: filename, format, readOnly: true });
  const isQcow2 = probe.disk instanceof Qcow2Image;
  probe.disk.close();
  if (!isQcow2) throw new CliError(`'${filename}' is not a qcow2 image: only qcow2 images can be compacted`);
  let file: NodeFile;
  try {
    file = NodeFile.open(filename, {});
  } catch (e) {
    throw new CliError(`Could not open '${filename}': ${errnoText(e) ?? messageOf(e)}`);
  }
  const t0 = performance.now();
  let result: CompactResult;
  try {
    result = compactImage(file, choice);
  } catch (e) {
    throw new CliError(`Could not compact '${filename}': ${messageOf(e)}`);
  } finally {
    file.close();
  }
  const ms = performance.now() - t0;
  if (!quiet) io.out(compactReport(result, ms));
  return 0;
}

/** What compaction did, for people. */
export function compactReport(r: CompactResult, ms: number): string {
  const m = r.moved;
  const parts = [`${m.data} data`, `${m.l2} L2`, `${m.l1} L1`, `${m.refcount} refcount`, `${m.snapshotTable} snapshot table`, ...(m.bitmaps ? [`${m.bitmaps} bitmap`] : [])];
  const saved = r.bytesBefore - r.bytesAfter;
  const pct = r.bytesBefore ? (100 * saved) / r.bytesBefore : 0;
  let out =
    r.passes === 0
      ? "Nothing to compact: no free cluster inside the image.\n"
      : `Moved ${r.clustersMoved} cluster${r.clustersMoved === 1 ? "" : "s"} (${parts.join(", ")}) in ${r.passes} pass${r.passes === 1 ? "" : "es"}.\n`;
  out += `Image size: ${r.bytesBefore} -> ${r.bytesAfter} bytes (${sizeToStr(r.bytesBefore)} -> ${sizeToStr(r.bytesAfter)}, ${sizeToStr(Math.max(0, saved))} reclaimed, ${pct.toFixed(1)}%)\n`;
  out += `In use: ${r.clustersInUse} clusters of ${sizeToStr(r.clusterSize)}\n`;
  out += `Time: ${ms.toFixed(1)} ms\n`;
  return out;
}
