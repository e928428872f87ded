/**
 * Commit: writes what a qcow2 overlay holds itself into its backing image, as QEMU's `qemu-img commit` and
 * the `-nographic` escape Ctrl-A s (bdrv_commit) do for `-snapshot`'s temporary overlay. Neither image may be
 * open elsewhere while this runs.
 *
 * Every range the overlay allocates itself (its data, and its zero clusters, which read as zeroes) is read
 * from the overlay and written at the same offset of the backing image, in pieces of at most 4 MiB; ranges
 * the overlay leaves to its backing file are not touched. The backing image is flushed and closed before
 * this returns. The overlay is left as it was: emptying it is the caller's (a temporary overlay is simply
 * made again), and until then it reads the same as before.
 */
import { Qcow2Image } from "../engine/qcow2-image.js";
import { openImagePath, type ImageFormat } from "./open-path.js";

const PIECE = 4 << 20;

export interface CommitResult {
  /** Bytes written into the backing image. */
  bytes: number;
}

export function commitOverlay(overlay: string, backing: string, backingFormat: ImageFormat): CommitResult {
  const top = openImagePath(overlay, { format: "qcow2", readOnly: true });
  try {
    if (!(top instanceof Qcow2Image)) throw new Error(`'${overlay}' is not a qcow2 image`);
    const base = openImagePath(backing, { format: backingFormat });
    try {
      if (base.size < top.size) throw new Error(`'${backing}' (${base.size} bytes) is smaller than its overlay (${top.size} bytes): nothing was committed`);
      let bytes = 0;
      let pos = 0;
      for (const run of top.allocation(0, top.size)) {
        if (run.allocated) {
          for (let at = pos; at < pos + run.length; at += PIECE) {
            const n = Math.min(PIECE, pos + run.length - at);
            base.write(at, top.read(at, n));
            bytes += n;
          }
        }
        pos += run.length;
      }
      base.flush();
      return { bytes };
    } finally {
      base.close();
    }
  } finally {
    top.close();
  }
}
