/**
 * The parts of opening an image that need no Node API (the browser's worker uses them too): the raw disk,
 * format probing on an open file, and QEMU's resolution of a backing file name.
 */
import type { BlockFile } from "../io/block-file.js";
import { type AllocationRun, allocationDepthRuns, allocationRuns, type DepthRun, fileStatus } from "../engine/tools/map.js";
import { RequestError } from "../engine/errors.js";
import type { StoredRun, SyncDisk } from "../disk/sync-disk.js";
import type { CacheMode, MapExtent } from "../engine/types.js";

export type ImageFormat = "qcow2" | "raw";

/** probeFormat on an open file. */
export function probeFileFormat(file: BlockFile): ImageFormat {
  const buf = new Uint8Array(4);
  const n = file.read(buf, 0, "header");
  return n === 4 && new DataView(buf.buffer).getUint32(0) === 0x514649fb ? "qcow2" : "raw";
}

/**
 * QEMU's bdrv_make_absolute_filename: a backing name that is absolute or a URL stands; a relative one is
 * appended to the directory part of the name its image was opened by (a path or a URL alike).
 */
export function resolveBackingName(imageName: string, name: string): string {
  if (name.startsWith("/") || /^[a-z][a-z0-9+.-]*:/i.test(name)) return name;
  const slash = imageName.lastIndexOf("/");
  return slash >= 0 ? imageName.slice(0, slash + 1) + name : name;
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

  /** A raw file's bytes are its own, at the guest's offset. */
  storedAt(offset: number, length: number): StoredRun {
    this.checkRange(offset, length);
    return { length, at: { file: this.file, offset } };
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

