import type { BlockFile, IoPurpose } from "./block-file.js";
import { IoError } from "./block-file.js";

/**
 * A BlockFile held in memory; grows by doubling. Used by tests, property tests and the fault injector.
 * zeroRange clears the bytes in place, no write involved: it counts as zeroing without writing (there are no
 * holes to report).
 */
export class MemoryFile implements BlockFile {
  private buf: Uint8Array;
  private length: number;
  name: string;
  readonly readOnly: boolean;
  private closed = false;

  constructor(initial?: Uint8Array, opts: { name?: string; readOnly?: boolean } = {}) {
    this.buf = initial ? initial.slice() : new Uint8Array(0);
    this.length = this.buf.length;
    this.name = opts.name ?? "memory";
    this.readOnly = opts.readOnly ?? false;
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    this.checkOpen();
    const n = Math.max(0, Math.min(buf.length, this.length - offset));
    if (n > 0) buf.set(this.buf.subarray(offset, offset + n));
    if (n < buf.length) buf.fill(0, Math.max(n, 0));
    return n;
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    this.checkOpen();
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    const end = offset + data.length;
    if (end > this.buf.length) this.grow(end);
    this.buf.set(data, offset);
    if (end > this.length) this.length = end;
  }

  readonly zeroesWithoutWriting: boolean = true;

  zeroRange(offset: number, length: number, _purpose?: IoPurpose): void {
    this.checkOpen();
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    if (length <= 0) return;
    const end = offset + length;
    if (end > this.length) this.truncate(end); // the bytes past the old end are zeroes already
    this.buf.fill(0, offset, Math.min(end, this.length));
  }

  flush(_purpose?: IoPurpose): void {
    this.checkOpen();
  }

  size(): number {
    return this.length;
  }

  truncate(size: number): void {
    this.checkOpen();
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    if (size > this.buf.length) this.grow(size);
    else if (size < this.length) this.buf.fill(0, size, this.length);
    this.length = size;
  }

  close(): void {
    this.closed = true;
  }

  /** An independent copy of this file (one copy of the bytes). */
  clone(name = this.name): MemoryFile {
    const f = new MemoryFile(undefined, { name, readOnly: this.readOnly });
    f.buf = this.buf.slice(0, this.length);
    f.length = this.length;
    return f;
  }

  /**
   * Makes this file a copy of `source` (its bytes and size, open again, named `name`) in the memory it already
   * has when that is large enough: the crash harness rebuilds thousands of disk-sized states one after the
   * other, and a fresh array for each was most of its allocation.
   */
  copyFrom(source: MemoryFile, name = this.name): void {
    if (this.buf.length < source.length) this.buf = new Uint8Array(source.buf.length);
    else if (this.length > source.length) this.buf.fill(0, source.length, this.length); // bytes past the end read as zeroes
    this.buf.set(source.buf.subarray(0, source.length));
    this.length = source.length;
    this.name = name;
    this.closed = false;
  }

  /** A copy of the file's current contents. */
  contents(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  private grow(min: number): void {
    let cap = Math.max(4096, this.buf.length);
    while (cap < min) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  private checkOpen(): void {
    if (this.closed) throw new IoError(`${this.name}: file is closed`, "EBADF");
  }
}
