/**
 * Opening images by path: format probing, raw files, and backing chains resolved relative to the image that
 * names them (as QEMU does).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { BlockFile } from "../io/block-file.js";
import { NodeFile } from "../io/node-file.js";
import type { CompactOptions, CompactResult } from "../engine/compact.js";
import { type AllocationRun, allocationDepthRuns, allocationRuns, type DepthRun, fileStatus } from "../engine/map.js";
import { ImageFormatError, RequestError } from "../engine/errors.js";
import { compactImage, Qcow2Image, type LibraryOpenOptions } from "./qcow2.js";
import type { SyncDisk } from "../disk/sync-disk.js";
import type { CacheMode, MapExtent } from "../engine/types.js";

export type ImageFormat = "qcow2" | "raw";

/** qcow2 when the file starts with qcow2's magic, raw otherwise. */
export function probeFormat(file: string): ImageFormat {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.alloc(4);
    const n = fs.readSync(fd, buf, 0, 4, 0);
    return n === 4 && buf.readUInt32BE(0) === 0x514649fb ? "qcow2" : "raw";
  } finally {
    fs.closeSync(fd);
  }
}

/** A raw disk image: guest offset = file offset; the cache mode decides when writes are flushed, as for qcow2. */
export class RawDisk implements SyncDisk {
  /** Virtual disk size: the file's (changed only by resize). */
  size: number;
  readonly readOnly: boolean;

  constructor(
    readonly file: BlockFile,
    readonly cacheMode: CacheMode = "writeback",
  ) {
    this.size = file.size();
    this.readOnly = file.readOnly;
  }

  readInto(buf: Uint8Array, offset: number): void {
    this.checkRange(offset, buf.length);
    this.file.read(buf, offset, "guest-data");
  }

  read(offset: number, length: number): Uint8Array {
    const buf = new Uint8Array(length);
    this.readInto(buf, offset);
    return buf;
  }

  write(offset: number, data: Uint8Array): void {
    this.checkRange(offset, data.length);
    this.file.write(data, offset, "guest-data");
    if (this.cacheMode === "writethrough") this.file.flush("guest-data");
  }

  /**
   * As QEMU's raw driver: fallocate where the file can (ZERO_RANGE; PUNCH_HOLE first with `unmap`), zeroes
   * written elsewhere.
   */
  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): void {
    this.checkRange(offset, length);
    this.file.zeroRange(offset, length, "guest-data", opts.unmap);
    if (this.cacheMode === "writethrough") this.file.flush("guest-data");
  }

  /** A hole where the file system can make one (QEMU punches one); the range reads as zeroes either way. */
  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length, { unmap: true });
  }

  flush(): void {
    if (this.cacheMode !== "unsafe") this.file.flush("guest-data");
  }

  close(): void {
    this.file.close();
  }

  /** Changes the disk size: the file is truncated or extended (with zeroes). */
  resize(newSize: number): void {
    if (this.readOnly) throw new RequestError("image is opened read-only");
    if (!Number.isSafeInteger(newSize) || newSize < 0) throw new RequestError(`invalid size ${newSize}`);
    this.file.truncate(newSize);
    this.size = newSize;
  }

  /** As QEMU's raw driver on a file: a hole of the file reads as zero and holds no data. */
  blockStatus(offset: number, length: number, depth: number) {
    const under = fileStatus(this.file, offset, length);
    return { status: { depth, present: true, zero: under.zero, data: !under.zero, compressed: false, offset }, length: under.length };
  }

  /** A raw file is allocated throughout, holes included (as file-posix reports them to bdrv_is_allocated). */
  allocation(offset: number, length: number): AllocationRun[] {
    return allocationRuns(this, offset, length);
  }

  /** qemu:allocation-depth: a raw file is its own data throughout (depth 1). */
  allocationDepth(offset: number, length: number, maxRuns?: number): DepthRun[] {
    return allocationDepthRuns(this, offset, length, maxRuns);
  }

  map(): MapExtent[] {
    const out: MapExtent[] = [];
    for (let pos = 0; pos < this.size; ) {
      const { status, length } = this.blockStatus(pos, this.size - pos, 0);
      const prev = out[out.length - 1];
      if (prev && prev.zero === status.zero) prev.length += length;
      else out.push({ start: pos, length, ...status });
      pos += length;
    }
    return out;
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new RequestError(`request at offset ${offset}, length ${length} is past the end of the disk (${this.size} bytes)`);
    }
  }
}

export type OpenedImage = Qcow2Image | RawDisk;

const MAX_CHAIN = 64;

export interface PathOpenOptions extends LibraryOpenOptions {
  format?: ImageFormat;
  /**
   * Wraps the top image's file before the engine opens it: the file itself is then opened read-only and
   * the engine opens the wrapper read-write (a private copy-on-write view, see io/overlay-file.ts).
   */
  wrapFile?: (file: BlockFile) => BlockFile;
}

/** Opens an image file (qcow2 or raw, probed unless given), with its backing chain opened read-only. */
export function openImagePath(file: string, opts: PathOpenOptions = {}, depth = 0): OpenedImage {
  if (depth > MAX_CHAIN) throw new ImageFormatError(`backing chain deeper than ${MAX_CHAIN} images (loop?)`);
  if (!fs.existsSync(file)) throw new RequestError(`Could not open '${file}': No such file or directory`);
  const format = opts.format ?? probeFormat(file);
  const nodeFile = NodeFile.open(file, { readOnly: opts.readOnly || opts.wrapFile !== undefined });
  const bf = opts.wrapFile ? opts.wrapFile(nodeFile) : nodeFile;
  try {
    if (format === "raw") return new RawDisk(bf, opts.cache);
    const dir = path.dirname(file);
    const { wrapFile, format: _format, ...engineOpts } = opts;
    return Qcow2Image.open(bf, {
      ...engineOpts,
      readOnly: wrapFile ? false : opts.readOnly,
      openBacking:
        opts.openBacking ??
        ((name, fmt) => {
          const resolved = path.isAbsolute(name) ? name : path.join(dir, name);
          if (fmt && fmt !== "qcow2" && fmt !== "raw") throw new ImageFormatError(`unsupported backing file format '${fmt}'`);
          return openImagePath(resolved, { readOnly: true, format: fmt as ImageFormat | undefined, cache: opts.cache }, depth + 1);
        }),
    });
  } catch (e) {
    bf.close();
    throw e;
  }
}

/** Compacts the qcow2 image file at `file` (see compact.ts); it must not be open anywhere else. */
export function compactImagePath(file: string, opts: Omit<CompactOptions, "schemes"> = {}): CompactResult {
  if (!fs.existsSync(file)) throw new RequestError(`Could not open '${file}': No such file or directory`);
  const bf = NodeFile.open(file, { readOnly: opts.readOnly });
  try {
    return compactImage(bf, opts);
  } finally {
    bf.close();
  }
}

/** Creates a qcow2 image file at `file` (overwriting it). */
export function createImagePath(file: string, opts: Parameters<typeof Qcow2Image.create>[1]): void {
  const bf = NodeFile.open(file, { create: true });
  try {
    Qcow2Image.create(bf, opts);
  } finally {
    bf.close();
  }
}
