/** Builds the SchemeHost (scheme-seam.ts) of an image: the only parts of the engine a scheme may use. */
import { referenceCounts } from "../check/check.js";
import type { ImageCore } from "../image-core.js";
import type { SchemeHost, SnapshotTools } from "./scheme-seam.js";
import * as snapshots from "../snapshots/snapshots.js";

export function schemeHostOf(img: ImageCore): SchemeHost {
  const tools: SnapshotTools = {
    list: () => img.snapshots,
    find: (idOrName) => snapshots.findSnapshot(img, idOrName),
    readL1: (sn) => img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets,
    diskL1Entries: () => img.vmStateOffset / (img.clusterSize * img.l2Entries),
    forEachReference: (l1, fn) => snapshots.forEachReference(img, l1 as number[], fn),
    ensureHeadroom: (l1, what) => snapshots.ensureHeadroom(img, l1 as number[], what),
    replaceActiveL1: (sn) => snapshots.replaceActiveL1(img, sn),
    recomputeCopied: () => snapshots.recomputeCopied(img),
    copyActiveL1: () => snapshots.copyActiveL1(img),
    newEntry: (name, l1Offset, l1Size, opts) => snapshots.newEntry(img, name, l1Offset, l1Size, opts),
    writeTable: (entries) => snapshots.writeSnapshotTable(img, entries),
    writeVmState: (data) => img.writeGuest(img.vmStateOffset, data),
    dropActiveVmState: () => snapshots.dropActiveVmState(img),
    toInfo: (sn) => snapshots.toInfo(sn),
  };
  return {
    clusterSize: img.clusterSize,
    cacheMode: img.cacheMode,
    get diskSize() {
      return img.size;
    },
    link: (gc, host) => img.writer.link(gc, host),
    replayGuestWrite: (offset, data) => {
      // A guest write all the same: the bitmaps record it.
      img.bitmaps.record(offset, data.length);
      img.writer.writeGuestDirect(offset, data);
    },
    shareCopy: (copy) => img.cow.share(copy),
    tables: img.tables,
    get refcounts() {
      return img.refcounts;
    },
    order: img.order,
    header: img.header,
    file: img.file,
    allocPolicy: img.allocPolicy,
    snapshots: tools,
    random: () => img.random(),
    markDirty: () => img.setDirtyBit(true),
    markClean: () => img.setDirtyBit(false),
    flushMetadata: () => img.flushMetadata(),
    writeHeader: () => img.writeHeader(),
    writeIncompatibleFeatures: () => img.writeIncompatibleFeatures(),
    truncateFile: (size) => img.file.truncate(size),
    checkFree: (c) => img.overlap.checkFree(c),
    referenceCounts: () => referenceCounts(img),
    forEachBitmapCluster: (fn) => {
      // Only clusters inside the file: an in-use bitmap's table is not validated, and may point anywhere.
      const end = Math.ceil(img.file.size() / img.clusterSize);
      const one = (c: number) => {
        if (c < end) fn(c);
      };
      img.bitmaps.forEachReference(
        (offset, bytes) => {
          for (let c = Math.floor(offset / img.clusterSize); c < Math.min(end, Math.ceil((offset + bytes) / img.clusterSize)); c++) fn(c);
        },
        one,
        () => {},
      );
    },
  };
}
