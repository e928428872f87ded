import * as fs from "node:fs";
import type { BlockFile, FileExtent, IoPurpose } from "./block-file.js";
import { IoError, writeZeroBytes } from "./block-file.js";
import { nativeFileOps } from "./native-fileops.js";

/**
 * A BlockFile on a Node file descriptor, with synchronous calls (the engine runs in a worker).
 *
 * Zeroes and holes: Node's fs has neither fallocate nor SEEK_DATA/SEEK_HOLE; the native addon
 * (native-fileops.ts) brings them where it is built. Without it, zeroRange inside the file writes zeroes
 * (the part past the end is always a hole: the file is grown by ftruncate) and extentAt cannot tell.
 *
 * Shared extents: a writable open asks the file system once whether it can clone ranges of the file
 * (native-fileops.ts cloneBlockSize: XFS with reflink, btrfs); without the addon, or with REFCOW_REFLINK=0 in
 * the environment (what ImageOpenOptions.noReflink does for one open, for every file of the process), never.
 * A writable file that can clone also tries to share from another file (cloneFrom: a backing file); a source
 * it cannot share from (EXDEV: another file system) is remembered and not asked again.
 */
export class NodeFile implements BlockFile {
  private fd: number;
  readonly name: string;
  readonly readOnly: boolean;
  private closed = false;
  private readonly native = nativeFileOps();
  /** The fallocate modes this file's file system has not refused. */
  private readonly support = this.native?.support();
  /** Block size clones are aligned to; 0 where the file system cannot clone (or the file is read-only). */
  readonly cloneBlockSize: number;
  /** Files a clone from was refused (not on this file system): copied from, never asked again. */
  private readonly refusedSources = new WeakSet<BlockFile>();

  private constructor(fd: number, name: string, readOnly: boolean) {
    this.fd = fd;
    this.name = name;
    this.readOnly = readOnly;
    this.cloneBlockSize = !readOnly && this.native && process.env.REFCOW_REFLINK !== "0" ? this.native.cloneBlockSize(fd) : 0;
  }

  static open(path: string, opts: { readOnly?: boolean; create?: boolean } = {}): NodeFile {
    const readOnly = opts.readOnly ?? false;
    const flags = readOnly ? "r" : opts.create ? "w+" : "r+";
    try {
      return new NodeFile(fs.openSync(path, flags), path, readOnly);
    } catch (e) {
      throw wrap(e, `${path}: cannot open`);
    }
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    let done = 0;
    try {
      while (done < buf.length) {
        const n = fs.readSync(this.fd, buf, done, buf.length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
    } catch (e) {
      throw wrap(e, `${this.name}: read of ${buf.length} bytes at ${offset} failed`);
    }
    if (done < buf.length) buf.fill(0, done);
    return done;
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    let done = 0;
    try {
      while (done < data.length) {
        done += fs.writeSync(this.fd, data, done, data.length - done, offset + done);
      }
    } catch (e) {
      throw wrap(e, `${this.name}: write of ${data.length} bytes at ${offset} failed`);
    }
  }

  flush(_purpose?: IoPurpose): void {
    if (this.readOnly) return;
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw wrap(e, `${this.name}: flush failed`);
    }
  }

  size(): number {
    return fs.fstatSync(this.fd).size;
  }

  truncate(size: number): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    try {
      fs.ftruncateSync(this.fd, size);
    } catch (e) {
      throw wrap(e, `${this.name}: truncate to ${size} failed`);
    }
  }

  get zeroesWithoutWriting(): boolean {
    return !!this.support && (this.support.zeroRange || this.support.punchHole);
  }

  zeroRange(offset: number, length: number, purpose?: IoPurpose, unmap = false): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    if (length <= 0) return;
    const size = this.size();
    const end = offset + length;
    const inside = Math.max(0, Math.min(end, size) - offset);
    if (inside > 0) {
      let done = false;
      if (this.native && this.support && this.zeroesWithoutWriting) {
        try {
          done = this.native.zeroRange(this.fd, offset, inside, unmap, this.support) !== "unsupported";
        } catch (e) {
          throw wrap(e, `${this.name}: zeroing ${inside} bytes at ${offset} failed`);
        }
      }
      if (!done) writeZeroBytes(this, offset, inside, purpose);
    }
    // Past the end: growing the file leaves a hole that reads as zeroes.
    if (end > Math.max(size, offset + inside)) this.truncate(end);
  }

  extentAt(offset: number, length: number): FileExtent | undefined {
    const n = this.native;
    if (!n) return undefined;
    try {
      const data = n.seekData(this.fd, offset);
      if (data === "unsupported") return undefined;
      // Only a hole from here to the end of the file.
      if (data === null) return { data: false, length };
      if (data > offset) return { data: false, length: Math.min(length, data - offset) };
      const hole = n.seekHole(this.fd, offset);
      if (hole === "unsupported" || hole <= offset) return undefined;
      return { data: true, length: Math.min(length, hole - offset) };
    } catch (e) {
      throw wrap(e, `${this.name}: block status at ${offset} failed`);
    }
  }

  cloneRange(src: number, dst: number, length: number, _purpose?: IoPurpose): boolean {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    if (!this.native || !this.cloneBlockSize || length <= 0) return false;
    try {
      return this.native.cloneRange(this.fd, src, dst, length) === "cloned";
    } catch (e) {
      throw wrap(e, `${this.name}: clone of ${length} bytes from ${src} to ${dst} failed`);
    }
  }

  /** Any open file can be a clone's source (read access is all FICLONERANGE asks of it). */
  get cloneHandle(): number | undefined {
    return this.closed ? undefined : this.fd;
  }

  cloneFrom(source: BlockFile, src: number, dst: number, length: number, _purpose?: IoPurpose): boolean {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    const srcFd = source.cloneHandle;
    if (!this.native || !this.cloneBlockSize || length <= 0 || srcFd === undefined || this.refusedSources.has(source)) return false;
    try {
      if (this.native.cloneFrom(this.fd, srcFd, src, dst, length) === "cloned") return true;
    } catch (e) {
      throw wrap(e, `${this.name}: clone of ${length} bytes from ${source.name} at ${src} to ${dst} failed`);
    }
    this.refusedSources.add(source);
    return false;
  }

  allocatedSize(): number | undefined {
    const st = fs.fstatSync(this.fd);
    return typeof st.blocks === "number" ? st.blocks * 512 : undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

function wrap(e: unknown, what: string): IoError {
  const err = e as NodeJS.ErrnoException;
  const code = err?.code;
  const msg = code === "ENOSPC" ? "no space left on device" : (err?.message ?? String(e));
  return new IoError(`${what}: ${msg}`, code);
}
