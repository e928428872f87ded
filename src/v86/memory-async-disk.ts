import type { AsyncDisk } from "./async-disk.js";

/**
 * A raw disk in memory (one Uint8Array), behind the asynchronous disk interface. Operations complete on a
 * later microtask, or after `delayMs` when given, so callers see real asynchrony. Counts operations so a
 * test can tell what reached the disk.
 */
export class MemoryAsyncDisk implements AsyncDisk {
  readonly bytes: Uint8Array;
  readonly counts = { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0 };
  /** How many writes had completed when the last flush completed. */
  writesBeforeLastFlush = 0;

  constructor(
    size: number | Uint8Array,
    private readonly delayMs = 0,
  ) {
    this.bytes = typeof size === "number" ? new Uint8Array(size) : size;
  }

  get size(): number {
    return this.bytes.length;
  }

  private check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new RangeError(`MemoryAsyncDisk: [${offset}, +${length}) outside a ${this.bytes.length}-byte disk`);
    }
  }

  private settle(): Promise<void> {
    return this.delayMs > 0 ? new Promise((r) => setTimeout(r, this.delayMs)) : Promise.resolve();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.check(offset, length);
    await this.settle();
    this.counts.reads++;
    this.counts.bytesRead += length;
    return this.bytes.slice(offset, offset + length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.check(offset, data.length);
    await this.settle();
    this.bytes.set(data, offset);
    this.counts.writes++;
    this.counts.bytesWritten += data.length;
  }

  async flush(): Promise<void> {
    await this.settle();
    this.counts.flushes++;
    this.writesBeforeLastFlush = this.counts.writes;
  }
}
