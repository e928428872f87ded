/**
 * An image the engine has open in this thread (the serve loop's SyncDisk: Qcow2Image or a raw disk) as an
 * NBD export's InlineDisk: the same synchronous calls, the extents of block status, allocation depth and
 * dirty bitmaps merged as the ring's requests merge them (worker/extents.ts).
 */
import type { BlockExtent, DepthExtent, DirtyExtent } from "../worker/disk-client.js";
import { depthExtents, dirtyExtents, mergedBlockStatus } from "../worker/extents.js";
import type { SyncDisk } from "../disk/sync-disk.js";
import type { InlineDisk } from "./export.js";

export function inlineDisk(disk: SyncDisk): InlineDisk {
  return {
    inline: true,
    get size() {
      return disk.size;
    },
    readInto: (buf, offset) => disk.readInto(buf, offset),
    write: (offset, data) => disk.write(offset, data),
    writeZeroes: (offset, length, opts) => disk.writeZeroes(offset, length, opts),
    discard: (offset, length) => disk.discard(offset, length),
    flush: () => disk.flush(),
    blockStatus: (offset, length, maxExtents): BlockExtent[] =>
      mergedBlockStatus(disk, offset, length, maxExtents).map(([n, zero, data]) => ({ length: n, zero: zero === 1, data: data === 1 })),
    allocationDepth: (offset, length, maxExtents): DepthExtent[] =>
      depthExtents(disk, offset, length, maxExtents).map(([n, depth]) => ({ length: n, depth })),
    dirtyExtents: (bitmap, offset, length, maxExtents): DirtyExtent[] =>
      dirtyExtents(disk, bitmap, offset, length, maxExtents).map(([n, dirty]) => ({ length: n, dirty: dirty === 1 })),
  };
}
