/**
 * What an open must do about schemes' on-disk leftovers, whatever scheme it opens with: a journal left by a
 * process that died is replayed before any table is read, then removed.
 */
import type { BlockFile } from "../io/block-file.js";
import type { Qcow2Header } from "../format/header.js";
import { INCOMPAT_DIRTY, INCOMPAT_REFCOW_JOURNAL } from "../format/features.js";
import type { Qcow2Image } from "../engine/qcow2-image.js";
import { ImageFormatError } from "../engine/errors.js";
import { EXT_REFCOW_JOURNAL, findJournal, replayJournal } from "./journal-format.js";

export function recoverBeforeLoad(file: BlockFile, header: Qcow2Header, clusterSize: number, readOnly: boolean): void {
  if (!(header.incompatibleFeatures & INCOMPAT_REFCOW_JOURNAL)) return;
  if (readOnly) throw new ImageFormatError("image has a refcow journal to replay (the process that wrote it stopped): open it writable once");
  replayJournal(file, header, clusterSize);
}

/** Removes a (replayed or empty) journal from a writable image: its clusters are freed, the header forgets it. */
export function recoverAfterLoad(img: Qcow2Image): void {
  const h = img.header;
  const loc = findJournal(h);
  if (!loc) return;
  // The bit first, alone, then the extension (a rewrite of the header cluster can tear).
  if (h.incompatibleFeatures & INCOMPAT_REFCOW_JOURNAL) {
    h.incompatibleFeatures &= ~INCOMPAT_REFCOW_JOURNAL;
    img.writeIncompatibleFeatures();
  }
  h.extensions = h.extensions.filter((e) => e.type !== EXT_REFCOW_JOURNAL);
  img.writeHeader();
  // A dirty image is rebuilt from its tables next, and they do not reference the journal area.
  if (!(h.incompatibleFeatures & INCOMPAT_DIRTY)) {
    for (let i = 0; i < loc.clusters; i++) {
      const c = loc.offset / img.clusterSize + i;
      if (img.refcounts.get(c) > 0) img.refcounts.change(c, -1);
    }
    img.refcounts.cache.writeDirty();
    img.sync("refcount");
  }
}
