/**
 * `qemu-img info` output, human and JSON, as QEMU 7.2 prints it (block/qapi.c bdrv_image_info_dump;
 * qemu-img.c dump_json_image_info). The JSON is the QAPI ImageInfo struct put into a QDict member by member
 * in schema order and printed in QDict order (see qobject.ts).
 */
import { sizeToStr } from "./human-size.js";
import { dumpQObject, QDict, type QValue, toJson } from "./qobject.js";
import { type SnapshotRow, snapshotHeader, snapshotRow } from "./snapshot-output.js";

export interface Qcow2SpecificInfo {
  compat: string;
  /** v3 only (absent for compat 0.10), like the three below. */
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  corrupt?: boolean;
  refcountBits: number;
  /** Persistent dirty bitmaps (Qcow2BitmapInfo), present only when the image has some. */
  bitmaps?: { name: string; granularity: number; flags: string[] }[];
  compressionType: string;
}

/** QAPI ImageInfo, the members refcow can fill. Optional members are omitted when undefined. */
export interface ImageInfoData {
  filename: string;
  format: string;
  dirtyFlag?: boolean;
  actualSize?: number;
  virtualSize: number;
  clusterSize?: number;
  backingFilename?: string;
  fullBackingFilename?: string;
  backingFilenameFormat?: string;
  /** Present only when the image has snapshots. */
  snapshots?: SnapshotRow[];
  formatSpecific?: { type: "qcow2"; data: Qcow2SpecificInfo };
}

export function snapshotToQDict(sn: SnapshotRow): QDict {
  const d = new QDict()
    .put("id", sn.id)
    .put("name", sn.name)
    .put("vm-state-size", sn.vmStateSize)
    .put("date-sec", sn.dateSec)
    .put("date-nsec", sn.dateNsec)
    .put("vm-clock-sec", Math.trunc(sn.vmClockNsec / 1e9))
    .put("vm-clock-nsec", sn.vmClockNsec % 1e9);
  return d.putOptional("icount", sn.icount);
}

function qcow2SpecificToQDict(s: Qcow2SpecificInfo): QDict {
  return new QDict()
    .put("compat", s.compat)
    .putOptional("extended-l2", s.extendedL2)
    .putOptional("lazy-refcounts", s.lazyRefcounts)
    .putOptional("corrupt", s.corrupt)
    .put("refcount-bits", s.refcountBits)
    .putOptional("bitmaps", s.bitmaps?.map((b) => new QDict().put("name", b.name).put("granularity", b.granularity).put("flags", b.flags)))
    .put("compression-type", s.compressionType);
}

export function imageInfoToQDict(info: ImageInfoData): QDict {
  const d = new QDict()
    .put("filename", info.filename)
    .put("format", info.format)
    .putOptional("dirty-flag", info.dirtyFlag)
    .putOptional("actual-size", info.actualSize)
    .put("virtual-size", info.virtualSize)
    .putOptional("cluster-size", info.clusterSize)
    .putOptional("backing-filename", info.backingFilename)
    .putOptional("full-backing-filename", info.fullBackingFilename)
    .putOptional("backing-filename-format", info.backingFilenameFormat);
  if (info.snapshots && info.snapshots.length > 0) d.put("snapshots", info.snapshots.map(snapshotToQDict));
  if (info.formatSpecific) {
    d.put("format-specific", new QDict().put("type", info.formatSpecific.type).put("data", qcow2SpecificToQDict(info.formatSpecific.data)));
  }
  return d;
}

/** `qemu-img info --output=json`: one object, or (with --backing-chain) a list; ends with a newline. */
export function imageInfoJson(infos: ImageInfoData | ImageInfoData[]): string {
  const value: QValue = Array.isArray(infos) ? infos.map(imageInfoToQDict) : imageInfoToQDict(infos);
  return `${toJson(value)}\n`;
}

/** bdrv_image_info_dump. */
export function imageInfoHuman(info: ImageInfoData): string {
  let out =
    `image: ${info.filename}\n` +
    `file format: ${info.format}\n` +
    `virtual size: ${sizeToStr(info.virtualSize)} (${info.virtualSize} bytes)\n` +
    `disk size: ${info.actualSize === undefined ? "unavailable" : sizeToStr(info.actualSize)}\n`;
  if (info.clusterSize !== undefined) out += `cluster_size: ${info.clusterSize}\n`;
  if (info.dirtyFlag) out += "cleanly shut down: no\n";
  if (info.backingFilename !== undefined) {
    out += `backing file: ${info.backingFilename}`;
    if (info.fullBackingFilename === undefined) out += " (cannot determine actual path)";
    else if (info.fullBackingFilename !== info.backingFilename) out += ` (actual path: ${info.fullBackingFilename})`;
    out += "\n";
    if (info.backingFilenameFormat !== undefined) out += `backing file format: ${info.backingFilenameFormat}\n`;
  }
  if (info.snapshots && info.snapshots.length > 0) {
    out += `Snapshot list:\n${snapshotHeader()}\n`;
    for (const sn of info.snapshots) out += `${snapshotRow(sn)}\n`;
  }
  if (info.formatSpecific) {
    out += "Format specific information:\n";
    out += dumpQObject(1, qcow2SpecificToQDict(info.formatSpecific.data));
  }
  return out;
}

/** The "Format specific information" block's body (also printed by qemu-io's `info`). */
export function qcow2SpecificHuman(data: Qcow2SpecificInfo): string {
  return dumpQObject(1, qcow2SpecificToQDict(data));
}

/** `qemu-img info --backing-chain` (human): the images separated by an empty line. */
export function imageInfoHumanList(infos: readonly ImageInfoData[]): string {
  return infos.map(imageInfoHuman).join("\n");
}
