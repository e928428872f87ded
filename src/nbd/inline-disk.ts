/**
 * An image the engine has open in this thread (the serve loop's ServedDisk: Qcow2Image or a raw disk) as an
 * NBD export's InlineDisk: the same synchronous calls, block status merged into extents as the ring's
 * BLOCK_STATUS request merges them.
 */
import type { BlockExtent } from "../worker/disk-client.js";
import { mergedBlockStatus } from "../worker/serve-loop.js";
import type { ServedDisk } from "../worker/served-disk.js";
import type { InlineDisk } from "./export.js";

export function inlineDisk(disk: ServedDisk): InlineDisk {
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
  };
}
