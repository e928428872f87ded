/** refcow info — qemu-img info: the image's header facts, human or JSON, optionally for the whole chain. */
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { type ImageInfo, isHttpUrl, Qcow2Image, type SnapshotInfo } from "../engine.js";
import { CliError } from "../errors.js";
import { type ImageInfoData, imageInfoHuman, type Qcow2SpecificInfo, imageInfoHumanList, imageInfoJson } from "../info-output.js";
import { allocatedFileSize, formatForOpen, fullBackingName, openImage, parseFormat, formatProblem } from "../open.js";
import type { SnapshotRow } from "../snapshot-output.js";
import { FORCE_SHARE_LONG, HELP_LONG, ioOf, OUTPUT_LONG, oneFilename, outputFormat, parseCommandArgs } from "./common.js";

export function snapshotRows(list: readonly SnapshotInfo[]): SnapshotRow[] {
  return list.map((s) => ({
    id: s.id,
    name: s.name,
    vmStateSize: s.vmStateSize,
    dateSec: s.dateSec,
    dateNsec: s.dateNsec,
    vmClockNsec: s.vmClockNsec,
    icount: s.icount,
  }));
}

/** ImageInfoSpecificQCow2: v3 images also report extended-l2, lazy-refcounts and corrupt. */
export function qcow2Specific(info: ImageInfo): Qcow2SpecificInfo {
  if (info.version !== 3) return { compat: info.compat, refcountBits: info.refcountBits, compressionType: info.compressionType };
  return {
    compat: info.compat,
    extendedL2: info.extendedL2,
    lazyRefcounts: info.lazyRefcounts,
    corrupt: info.corrupt,
    refcountBits: info.refcountBits,
    ...(info.bitmaps?.length ? { bitmaps: info.bitmaps.map((b) => ({ name: b.name, granularity: b.granularity, flags: [...b.flags] })) } : {}),
    compressionType: info.compressionType,
  };
}

/** The QAPI ImageInfo of an opened qcow2 image, as qemu-img info reports it. */
export function qcow2InfoData(filename: string, info: ImageInfo): ImageInfoData {
  const data: ImageInfoData = {
    filename,
    format: "qcow2",
    dirtyFlag: info.dirty,
    actualSize: allocatedFileSize(filename),
    virtualSize: info.virtualSize,
    clusterSize: info.clusterSize,
    formatSpecific: { type: "qcow2", data: qcow2Specific(info) },
  };
  if (info.backingFile) {
    data.backingFilename = info.backingFile;
    data.fullBackingFilename = fullBackingName(filename, info.backingFile);
    if (info.backingFormat) data.backingFilenameFormat = info.backingFormat;
  }
  if (info.snapshots.length > 0) data.snapshots = snapshotRows(info.snapshots);
  return data;
}

/** Opens one image without its backing file and collects its info. */
function collectInfo(filename: string, format: "qcow2" | "raw" | undefined): ImageInfoData {
  const opened = openImage({ path: filename, format, readOnly: true, noBacking: true });
  try {
    if (opened.disk instanceof Qcow2Image) return qcow2InfoData(filename, opened.disk.info());
    return {
      filename,
      format: "raw",
      // QEMU reports the flag for a raw file, not for a raw image over a protocol (curl).
      dirtyFlag: isHttpUrl(filename) ? undefined : false,
      actualSize: allocatedFileSize(filename),
      virtualSize: opened.disk.size,
    };
  } finally {
    opened.disk.close();
  }
}

export async function infoCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "info",
    argv,
    {
      short: "f:hU",
      long: [HELP_LONG, OUTPUT_LONG, FORCE_SHARE_LONG, { name: "backing-chain", arg: false }, { name: "image-opts", arg: false }],
    },
    io,
  );
  if (!parsed) return 0;
  const output = outputFormat(parsed);
  const filename = oneFilename(parsed);
  if (hasFlag(parsed, "image-opts")) throw new CliError("--image-opts is not supported by refcow");
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  const chain = hasFlag(parsed, "backing-chain");

  if (!chain) {
    const info = collectInfo(filename, format);
    io.out(output === "json" ? imageInfoJson(info) : imageInfoHuman(info));
    return 0;
  }
  // collect_image_info_list: follow full-backing-filename with backing-filename-format, refuse loops.
  const infos: ImageInfoData[] = [];
  const seen = new Set<string>();
  let name: string | undefined = filename;
  let fmt = format;
  while (name !== undefined) {
    if (seen.has(name)) throw new CliError(`Backing file '${name}' creates an infinite loop.`);
    seen.add(name);
    const info = collectInfo(name, fmt);
    infos.push(info);
    name = info.fullBackingFilename;
    if (info.backingFilenameFormat !== undefined) {
      fmt = parseFormat(info.backingFilenameFormat);
      if (!fmt && name !== undefined) throw new CliError(`Could not open '${name}': ${formatProblem(info.backingFilenameFormat)}`);
    } else {
      fmt = undefined;
    }
  }
  io.out(output === "json" ? imageInfoJson(infos) : `${imageInfoHumanList(infos)}`);
  return 0;
}
