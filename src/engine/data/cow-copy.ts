/**
 * Copy-free copy on write. Where the image file can share extents between two ranges of itself (FICLONERANGE
 * on XFS with reflink and on btrfs: BlockFile.cloneBlockSize), a copied cluster is made to share the old
 * cluster's storage instead of being read and written again, and the guest's bytes are written over it (the
 * file system then keeps a private copy of the blocks they touch, and only those): one clone per copy,
 * which measured faster than two clones of the parts the guest does not write. Only whole file-system
 * blocks can be shared: the block-aligned part of a range is cloned, an unaligned rest copied (read and
 * written) as before.
 *
 * A clone takes the place of the write of the copy, nothing else: it is issued where the copy was written,
 * before the flush that precedes the L2 entry mapping the new cluster (write-order.ts, rule 1 → 3), and is
 * durable after that flush as the write would be. The old cluster is still referenced while it is cloned
 * (its decrement follows the entry), so its bytes cannot change under the clone.
 *
 * Off when the file cannot clone, when the open asked for it (ImageOpenOptions.noReflink), and while the open
 * stages its writes (the staging layer cannot clone: the copy is written instead). Never shared: the copy of
 * a compressed cluster (its bytes must be decompressed). Shared from another file (shareFrom): a backing
 * file's bytes, where the backing disk stores them as they are (cow-fill.ts decides what comes from where).
 */
import type { AccountingFile } from "../../io/accounting-file.js";
import type { BlockFile, IoPurpose } from "../../io/block-file.js";
import { alignUp } from "../../format/bytes.js";

/** `length` bytes to copy from host offset `src` to host offset `dst`. */
export interface HostCopy {
  src: number;
  dst: number;
  length: number;
}

export class CowCopier {
  /** Files a clone from was refused (cloneFrom: not on the image's file system). */
  private readonly refused = new WeakSet<BlockFile>();

  constructor(
    private readonly file: AccountingFile,
    /** False: never clone (`--no-reflink`), to compare with the copy. */
    private readonly enabled: boolean,
  ) {}

  /** The block size clones are aligned to now, or 0 when nothing is cloned. */
  get block(): number {
    return this.enabled ? this.file.cloneBlockSize : 0;
  }

  /**
   * Shares the block-aligned part of a copy (when its source and destination lie at the same offset inside
   * a block, and inside the file) and returns what is left to copy: the whole copy when nothing could be
   * shared, else the unaligned head and tail.
   */
  share(copy: HostCopy, purpose: IoPurpose = "cow-write"): HostCopy[] {
    return this.shareAligned(copy, this.file.size(), (src, dst, length) => this.file.cloneRange(src, dst, length, purpose));
  }

  /**
   * As share, with the bytes at `copy.src` of another file, `source` (a backing file's). A source the image
   * file cannot share from (another file system) is copied from, and not asked again.
   */
  shareFrom(source: BlockFile, copy: HostCopy, purpose: IoPurpose = "cow-write"): HostCopy[] {
    if (this.refused.has(source)) return copy.length > 0 ? [copy] : [];
    return this.shareAligned(copy, source.size(), (src, dst, length) => {
      if (this.file.cloneFrom(source, src, dst, length, purpose)) return true;
      this.refused.add(source);
      return false;
    });
  }

  /** Whether clones from `source` may be tried (none was refused). */
  mayShareFrom(source: BlockFile): boolean {
    return this.block > 0 && !this.refused.has(source);
  }

  private shareAligned(copy: HostCopy, sourceSize: number, clone: (src: number, dst: number, length: number) => boolean): HostCopy[] {
    const bs = this.block;
    const { src, dst, length } = copy;
    if (!bs || length <= 0 || (src - dst) % bs !== 0) return length > 0 ? [copy] : [];
    const head = alignUp(src, bs) - src;
    // Past the end of the source the bytes read as zeroes, which a clone cannot share: copied.
    const end = Math.min(src + length, Math.floor(sourceSize / bs) * bs);
    const shared = Math.floor((end - src - head) / bs) * bs;
    if (shared <= 0 || !clone(src + head, dst + head, shared)) return [copy];
    const rest: HostCopy[] = [];
    if (head > 0) rest.push({ src, dst, length: head });
    const after = head + shared;
    if (after < length) rest.push({ src: src + after, dst: dst + after, length: length - after });
    return rest;
  }
}
