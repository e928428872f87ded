/**
 * Overlap checks (QEMU's qcow2_check_metadata_overlap, in the cases that matter to refcow): a cluster about to
 * be handed out, or a data cluster about to be read or written, must not hold image metadata. A hit means the
 * tables are corrupt, and writing there would destroy a structure.
 */
import { alignUp } from "../../format/bytes.js";
import { ImageFormatError } from "../../format/errors.js";
import type { PersistentBitmaps } from "../snapshots/bitmaps.js";
import type { ImageState } from "../image-state.js";

export class OverlapChecks {
  /** A lower bound of the file's size (see checkInFile). */
  private fileEndSeen = 0;

  constructor(
    private readonly img: ImageState,
    private readonly bitmaps: PersistentBitmaps,
  ) {}

  /** What a host cluster holds if it is image metadata (for overlap checks), else undefined. */
  metadataAt(hostCluster: number): string | undefined {
    const img = this.img;
    const cs = img.clusterSize;
    const off = hostCluster * cs;
    const h = img.header;
    if (hostCluster === 0) return "the image header";
    if (off >= h.l1TableOffset && off < h.l1TableOffset + alignUp(h.l1Size * 8, cs)) return "the active L1 table";
    if (off >= img.refcounts.tableOffset && off < img.refcounts.tableOffset + img.refcounts.tableClusters * cs) return "the refcount table";
    if (h.nbSnapshots && off >= h.snapshotsOffset && off < h.snapshotsOffset + cs) return "the snapshot table";
    const dir = this.bitmaps.directory;
    if (dir && off >= dir.offset && off < dir.offset + alignUp(dir.bytes, cs)) return "the bitmap directory";
    return undefined;
  }

  /**
   * For a cluster about to be allocated: a count of 0 on the header, the active L1 table or one of its L2
   * tables, the refcount table or a refcount block, the snapshot table or a snapshot's L1 table means the
   * refcounts are corrupt.
   */
  checkFree(cluster: number): void {
    const img = this.img;
    const cs = img.clusterSize;
    const off = cluster * cs;
    let what = this.metadataAt(cluster);
    if (!what && img.l1.includes(off)) what = "an L2 table of the active layer";
    if (!what && img.refcounts.table.includes(off)) what = "a refcount block";
    if (!what) {
      const sn = img.snapshots.find((s) => off >= s.l1TableOffset && off < s.l1TableOffset + alignUp(s.l1Size * 8, cs));
      if (sn) what = `the L1 table of snapshot '${sn.name}'`;
    }
    if (what) throw new ImageFormatError(`image is corrupt: cluster ${cluster} is free according to its refcount but holds ${what}`);
  }

  /** A data cluster (read, written, copied from) must not be metadata. */
  checkDataCluster(hostOffset: number, guestOffset: number): void {
    const what = this.metadataAt(Math.floor(hostOffset / this.img.clusterSize));
    if (what) {
      throw new ImageFormatError(`image is corrupt: guest offset 0x${guestOffset.toString(16)} maps to host offset 0x${hostOffset.toString(16)}, which holds ${what}`);
    }
  }

  /**
   * A cluster written in place must lie inside the file: an entry pointing past its end is a corruption (no
   * write of refcow's leaves one), and writing there would grow the file to wherever the entry points.
   */
  /**
   * Whether `hostOffset` lies inside the file, asking the file (a syscall) only beyond the size seen last.
   * A stale answer can only be "inside" for a file cut back at a scheme's close, after which nothing writes,
   * and "inside" is the safe one (a fresh cluster is then zeroed before its bytes are written).
   */
  insideFile(hostOffset: number): boolean {
    if (hostOffset < this.fileEndSeen) return true;
    this.fileEndSeen = this.img.file.size();
    return hostOffset < this.fileEndSeen;
  }

  checkInFile(hostOffset: number, guestOffset: number): void {
    // The file only grows while an image is open (only compaction, on its own open, shrinks it), so a size
    // seen once stays a lower bound: the size is asked again (a syscall) only for an offset beyond it, not
    // on every in-place write.
    if (hostOffset < this.fileEndSeen) return;
    this.fileEndSeen = this.img.file.size();
    if (hostOffset >= this.fileEndSeen) {
      throw new ImageFormatError(`image is corrupt: guest offset 0x${guestOffset.toString(16)} maps to host offset 0x${hostOffset.toString(16)}, past the end of the image`);
    }
  }
}
