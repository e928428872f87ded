/**
 * The synchronous disk contract: an image open in this thread — a qcow2 image (Qcow2Image,
 * src/engine/qcow2-image.ts) or a raw file (RawDisk, src/open/open-path.ts) — as the serve loop serves it
 * (src/worker/serve-loop.ts), NBD's inline export uses it (src/nbd) and a backing chain reads it (the
 * engine's backing layers). Every method is synchronous and reports failure by throwing one of the
 * engine's errors (src/engine/errors.ts) or an IoError; a server turns those into a status code and a
 * message. The optional members are what a qcow2 image offers beyond a raw file.
 *
 * The asynchronous contract, for callers that must not block, is async-disk.ts.
 */
import type { BlockFile } from "../io/block-file.js";
import type { BitmapInfo, SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";

/** A run of the virtual disk (storedAt): its length, and the file and offset holding its bytes as they read. */
export interface StoredRun {
  /** Bytes in the run, from the offset asked: at least 1, at most the length asked. */
  length: number;
  /** Where the run's bytes lie as they are; absent when no file holds them so (zeroes, compressed data...). */
  at?: { file: BlockFile; offset: number };
}

export interface SyncDisk {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Fills `buf` from the virtual disk at `offset`. `buf` may be a view on a SharedArrayBuffer. */
  readInto(buf: Uint8Array, offset: number): void;
  /**
   * Writes `data` at `offset`. `data` may be a view on a SharedArrayBuffer and is only valid during the
   * call: the disk must copy what it keeps.
   */
  write(offset: number, data: Uint8Array): void;
  /** Zeroes the range; with `unmap` the disk may deallocate it. */
  writeZeroes(offset: number, length: number, opts?: { unmap?: boolean }): void;
  discard(offset: number, length: number): void;
  /** Makes every write done so far durable (what that means is the image's cache mode). */
  flush(): void;
  /** Flushes and closes the disk; later calls fail. */
  close(): void;
  snapshotCreate?(name: string, opts?: SnapshotCreateOptions): SnapshotInfo;
  snapshotApply?(idOrName: string): void;
  snapshotDelete?(idOrName: string): void;
  snapshotList?(): SnapshotInfo[];
  readVmState?(idOrName: string): Uint8Array;
  /** The active layer's VM-state area (qemu-io's read -b / write -b); `pos` is relative to its start. */
  readVmStateArea?(buf: Uint8Array, pos: number): void;
  writeVmStateArea?(pos: number, data: Uint8Array): void;
  /** Changes the virtual size (qemu-io's truncate). */
  resize?(size: number): void;
  /** Which parts of [offset, offset + length) the image allocates itself, as merged runs up to the disk's end. */
  allocation?(offset: number, length: number): { allocated: boolean; length: number }[];
  /**
   * Status of the range at `offset` (at most `length` bytes, possibly fewer): whether it reads as zeroes and
   * whether it holds data, looking down the backing chain (qemu-img map's zero and data).
   */
  blockStatus?(offset: number, length: number, depth: number): { status: { zero: boolean; data: boolean }; length: number };
  /**
   * Which layer of the backing chain each part of [offset, offset + length) comes from (qemu:allocation-depth):
   * merged runs up to the disk's end, at most `maxRuns`; 1 is the image itself, 2 its backing file, 0 none.
   */
  allocationDepth?(offset: number, length: number, maxRuns?: number): { depth: number; length: number }[];
  /**
   * Where the bytes at `offset` (inside the disk) lie, unchanged, in a file, and for how long (at most
   * `length`): a raw file's own bytes, a qcow2 data cluster the image maps itself (uncompressed). What an
   * image above clones its copies from (engine/data/cow-fill.ts).
   */
  storedAt?(offset: number, length: number): StoredRun;
  /** The image's persistent dirty bitmaps (qcow2). */
  bitmapList?(): BitmapInfo[];
  /** Dirty and clean runs of bitmap `name` covering [offset, offset + length) exactly, adjacent equal runs merged. */
  bitmapExtents?(name: string, offset: number, length: number): { length: number; dirty: boolean }[];
  /** Deferred work (a scheme's pending copies) for idle time, and whether there is some. */
  idle?(): boolean;
  readonly hasIdleWork?: boolean;
  /** Per-request cost records (optional; the engine may expose it later). Must be JSON-serialisable. */
  stats?(): unknown;
}
