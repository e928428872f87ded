/**
 * What an open does about a data log (log-format.ts) left in an image, whatever scheme it opens with. A
 * writable open, once its scheme is attached: the records a process that stopped left behind are replayed
 * through the engine's ordinary write path (its own plans: copy on write, allocation), flushed, and the log
 * is removed — the bit first, then the extension, then its clusters, those of them no table references (a
 * damaged extension must not free live clusters). A crash in the middle replays again: applying a record twice
 * leaves what applying it once does. A read-only open of an image with records to replay is refused, with
 * what to do (they cannot be replayed without writing).
 */
import type { Qcow2Header } from "../format/header.js";
import { ImageFormatError } from "../format/errors.js";
import { INCOMPAT_DIRTY } from "../format/features.js";
import type { SchemeHost } from "../engine/allocation/scheme-seam.js";
import { EXT_REFCOW_DATA_LOG, findLog, INCOMPAT_REFCOW_DATA_LOG, type LogLocation, type ScannedRecord, scanLog, validateLogLocation } from "./log-format.js";

/** True when the header says the data log may hold guest writes not yet in place. */
export function hasDataLogToReplay(header: Qcow2Header): boolean {
  return (header.incompatibleFeatures & INCOMPAT_REFCOW_DATA_LOG) !== 0n;
}

/** The records of the image's data log (none unless its bit is set). */
export function readDataLog(host: SchemeHost): ScannedRecord[] {
  if (!hasDataLogToReplay(host.header)) return [];
  const loc = findLog(host.header);
  if (!loc) throw new ImageFormatError("the refcow data log bit is set but the image has no data log extension");
  validateLogLocation(loc, host.clusterSize);
  const area = new Uint8Array(loc.clusters * host.clusterSize);
  host.file.read(area, loc.offset, "journal");
  return scanLog(area, loc.offset, host.diskSize).records;
}

export function refuseReadOnlyDataLog(header: Qcow2Header): void {
  if (hasDataLogToReplay(header)) {
    throw new ImageFormatError("image has a refcow data log to replay (the process that wrote it stopped): open it writable once");
  }
}

/** Replays and removes a data log; returns the number of records replayed. */
export function recoverDataLog(host: SchemeHost): number {
  const h = host.header;
  if (!h.extensions.some((e) => e.type === EXT_REFCOW_DATA_LOG) && !hasDataLogToReplay(h)) return 0;
  const records = readDataLog(host);
  for (const r of records) host.replayGuestWrite(r.guestOffset, r.data);
  if (records.length) host.flushMetadata();
  let loc: LogLocation | undefined;
  try {
    loc = findLog(h);
    if (loc) validateLogLocation(loc, host.clusterSize);
  } catch {
    loc = undefined; // a malformed extension: dropped, its area (if any) left as a leak
  }
  if (hasDataLogToReplay(h)) {
    h.incompatibleFeatures &= ~INCOMPAT_REFCOW_DATA_LOG;
    host.writeIncompatibleFeatures();
  }
  h.extensions = h.extensions.filter((e) => e.type !== EXT_REFCOW_DATA_LOG);
  host.writeHeader();
  // A dirty image was rebuilt from its tables before the scheme was attached: the area is free already.
  if (!loc || h.incompatibleFeatures & INCOMPAT_DIRTY) return records.length;
  const cs = host.clusterSize;
  const first = loc.offset / cs;
  const end = Math.min(first + loc.clusters, Math.ceil(host.file.size() / cs));
  if (first < end) {
    const refs = host.referenceCounts();
    for (let c = first; c < end; c++) if (host.refcounts.get(c) > 0 && !(refs[c]! > 0)) host.refcounts.change(c, -1);
    host.refcounts.cache.writeDirty();
    host.order.sync("refcount");
  }
  return records.length;
}
