/**
 * BlockFile: the only I/O seam of refcow. The engine never touches the OS except through it, so the same
 * engine runs on a Node file, in memory, on OPFS, under fault injection and under accounting.
 *
 * All calls are synchronous (the engine runs inside a worker). Offsets and lengths are byte counts held in
 * JS numbers (exact up to 2^53, far beyond qcow2's 2^56-byte host offsets in practice).
 *
 * Every operation carries a purpose so an accounting wrapper can break the cost of a guest request down by
 * what the I/O was for.
 *
 * Zeroes and holes, as QEMU's file-posix driver: `zeroRange` makes a range read as zeroes — without writing
 * data where `zeroesWithoutWriting` says the file can (fallocate ZERO_RANGE or PUNCH_HOLE inside the file, a
 * hole left by growing it past its end), by writing zeroes elsewhere. `extentAt` and `allocatedSize` are the
 * two questions QEMU's block status asks the file (SEEK_DATA/SEEK_HOLE, st_blocks); a file that cannot answer
 * lacks them or returns undefined, and everything in it then counts as data.
 *
 * Shared extents (copy-free copies): where the file system can make one range of a file share the storage of
 * another (FICLONERANGE on XFS with reflink and on btrfs), `cloneBlockSize` is the block size such clones
 * must be aligned to and `cloneRange` makes one; elsewhere `cloneBlockSize` is 0 or absent and a caller
 * copies the bytes itself. A clone reads afterwards exactly as a write of the source bytes would, and is
 * durable, like a write, after the next flush. `cloneFrom` does the same with another file as the source (a
 * backing file on the same file system): the source offers `cloneHandle`, what the file system names it by;
 * a file whose bytes are not those of one descriptor (in memory, an overlay, a cache) offers none.
 */

/** The engine's I/O purposes. Schemes declare their own (SchemeDefinition.ioPurposes: "journal", "owner"...). */
export const ENGINE_IO_PURPOSES = [
  "guest-data",
  "cow-read",
  "cow-write",
  "l1",
  "l2",
  "refcount",
  "header",
  "snapshot-table",
  /** Persistent dirty bitmaps: their directory, tables and data. */
  "bitmap",
  "vm-state",
  "backing",
  /** File growth and shrinking (truncate); recorded by the accounting wrapper, never passed by the engine. */
  "growth",
  "other",
] as const;
export type EngineIoPurpose = (typeof ENGINE_IO_PURPOSES)[number];
/** What an I/O was for: one of the engine's purposes, or one a scheme declares. */
export type IoPurpose = EngineIoPurpose | (string & {});

export interface BlockFile {
  /** Reads `buf.length` bytes at `offset`. Bytes past the end of the file read as zero. Returns bytes actually read from the file. */
  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number;
  /** Writes all of `data` at `offset`, growing the file if needed. */
  write(data: Uint8Array, offset: number, purpose?: IoPurpose): void;
  /** Makes every completed write durable. */
  flush(purpose?: IoPurpose): void;
  /** Current length of the file in bytes. */
  size(): number;
  /** Sets the file length. */
  truncate(size: number): void;
  /**
   * Makes `length` bytes at `offset` read as zeroes, growing the file when the range ends past its end.
   * `unmap`: the file system may free the blocks (a hole, as a discard makes); else it keeps them where it can.
   */
  zeroRange(offset: number, length: number, purpose?: IoPurpose, unmap?: boolean): void;
  /** True when zeroRange writes no data (false: it writes the zeroes, and a caller may as well write them itself). */
  readonly zeroesWithoutWriting: boolean;
  /**
   * Whether the file holds data or a hole at `offset` (inside the file), and for how many bytes from there (at
   * most `length`); undefined when the file cannot tell.
   */
  extentAt?(offset: number, length: number): FileExtent | undefined;
  /** Bytes of storage the file occupies (st_blocks × 512 on POSIX); undefined when unknown. */
  allocatedSize?(): number | undefined;
  /** The block size clones must be aligned to: offsets and length multiples of it (0 or absent: no clones). */
  readonly cloneBlockSize?: number;
  /**
   * Makes [dst, dst + length) read as [src, src + length) reads now, sharing its storage (the two ranges do
   * not overlap; all three numbers are multiples of cloneBlockSize). Returns false when the file cannot
   * (nothing changed: the caller copies); throws an IoError on a real failure (ENOSPC, EIO).
   */
  cloneRange?(src: number, dst: number, length: number, purpose?: IoPurpose): boolean;
  /**
   * As cloneRange, with [src, src + length) of another file, `source`: false when the two cannot share (not on
   * one file system, a source without cloneHandle; nothing changed: the caller copies).
   */
  cloneFrom?(source: BlockFile, src: number, dst: number, length: number, purpose?: IoPurpose): boolean;
  /** The descriptor another file's cloneFrom shares this file's extents through (absent: none can). */
  readonly cloneHandle?: number;
  close(): void;
  /** True when the file was opened without write access. */
  readonly readOnly: boolean;
  /** A name for error messages (path, or "memory"). */
  readonly name: string;
}

export interface FileExtent {
  data: boolean;
  length: number;
}

/** Writes `length` zero bytes at `offset` in chunks of at most 1 MiB: zeroRange where the file has nothing better. */
export function writeZeroBytes(file: Pick<BlockFile, "write">, offset: number, length: number, purpose?: IoPurpose): void {
  const chunk = new Uint8Array(Math.min(length, 1 << 20));
  for (let done = 0; done < length; done += chunk.length) {
    file.write(chunk.subarray(0, Math.min(chunk.length, length - done)), offset + done, purpose);
  }
}

/** Error raised by a BlockFile for an I/O failure (disk full, EIO...). */
export class IoError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = "IoError";
  }
}
