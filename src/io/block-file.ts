/**
 * BlockFile: the only I/O seam of refcow. The engine never touches the OS except through it, so the same
 * engine runs on a Node file, in memory, on OPFS, under fault injection and under accounting.
 *
 * All calls are synchronous (the engine runs inside a worker). Offsets and lengths are byte counts held in
 * JS numbers (exact up to 2^53, far beyond qcow2's 2^56-byte host offsets in practice).
 *
 * Every operation carries a purpose so an accounting wrapper can break the cost of a guest request down by
 * what the I/O was for.
 */

export const IO_PURPOSES = [
  "guest-data",
  "cow-read",
  "cow-write",
  "l1",
  "l2",
  "refcount",
  "owner",
  "journal",
  "header",
  "snapshot-table",
  "vm-state",
  "backing",
  /** File growth and shrinking (truncate); recorded by the accounting wrapper, never passed by the engine. */
  "growth",
  "other",
] as const;
export type IoPurpose = (typeof IO_PURPOSES)[number];

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
  close(): void;
  /** True when the file was opened without write access. */
  readonly readOnly: boolean;
  /** A name for error messages (path, or "memory"). */
  readonly name: string;
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
