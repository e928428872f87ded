/**
 * What an open must do about schemes' on-disk leftovers, whatever scheme it opens with: a journal left by a
 * process that died is replayed before any table is read, then removed.
 */
import type { BlockFile } from "../io/block-file.js";
import type { Qcow2Header } from "../format/header.js";
import { INCOMPAT_DIRTY } from "../format/features.js";
import { ImageFormatError } from "../format/errors.js";
import type { SchemeHost } from "../engine/allocation/scheme-seam.js";
import { EXT_REFCOW_JOURNAL, findJournal, INCOMPAT_REFCOW_JOURNAL, type JournalLocation, MAX_JOURNAL_BYTES, replayJournal } from "./journal-format.js";

/** True when the image holds a journal a process left behind (its records may not all be in place yet). */
export function hasJournalToReplay(header: Qcow2Header): boolean {
  return (header.incompatibleFeatures & INCOMPAT_REFCOW_JOURNAL) !== 0n;
}

/** Replays a journal left behind; `readOnly`: the records have nowhere to go, and the open is refused. */
export function recoverBeforeLoad(file: BlockFile, header: Qcow2Header, clusterSize: number, readOnly: boolean): void {
  if (!hasJournalToReplay(header)) return;
  if (readOnly) throw new ImageFormatError("image has a refcow journal to replay (the process that wrote it stopped): open it writable once");
  replayJournal(file, header, clusterSize);
}

/**
 * Removes a (replayed or empty) journal from a writable image: the header forgets it, and its clusters are
 * freed — those of them that nothing references (they are leaks then): the extension is only a pointer, and a
 * damaged one must not free live clusters. Without `freeJournalArea` (an open for check) they are left as
 * they are: check reports them as leaked clusters and repairs them as any other, with qemu-img's words.
 */
export function recoverAfterLoad(host: SchemeHost, opts: { freeJournalArea: boolean } = { freeJournalArea: true }): void {
  const h = host.header;
  if (!h.extensions.some((e) => e.type === EXT_REFCOW_JOURNAL)) return;
  let loc: JournalLocation | undefined;
  try {
    loc = findJournal(h);
  } catch {
    loc = undefined; // a truncated extension: dropped, its area (if any) left as a leak
  }
  // The bit first, alone, then the extension (a rewrite of the header cluster can tear).
  if (h.incompatibleFeatures & INCOMPAT_REFCOW_JOURNAL) {
    h.incompatibleFeatures &= ~INCOMPAT_REFCOW_JOURNAL;
    host.writeIncompatibleFeatures();
  }
  h.extensions = h.extensions.filter((e) => e.type !== EXT_REFCOW_JOURNAL);
  host.writeHeader();
  // A dirty image is rebuilt from its tables next, and they do not reference the journal area.
  if (!loc || h.incompatibleFeatures & INCOMPAT_DIRTY || !opts.freeJournalArea) return;
  const cs = host.clusterSize;
  if (loc.offset % cs || !Number.isSafeInteger(loc.offset) || loc.clusters * cs > MAX_JOURNAL_BYTES) return;
  const first = loc.offset / cs;
  const end = Math.min(first + loc.clusters, Math.ceil(host.file.size() / cs));
  if (first >= end) return;
  const refs = host.referenceCounts();
  for (let c = first; c < end; c++) {
    if (host.refcounts.get(c) > 0 && !(refs[c] > 0)) host.refcounts.change(c, -1);
  }
  host.refcounts.cache.writeDirty();
  host.order.sync("refcount");
}
