import type { AsyncDisk } from "./async-disk.js";

/**
 * An empty disk of any size that reads as zeroes and takes no memory: what the guest boots on when a
 * warm-start state is prepared (the state must not depend on any image's contents). The boot only reads
 * (the partition-table probe); a write is a bug in that procedure and rejects.
 */
export class ZeroAsyncDisk implements AsyncDisk {
  reads = 0;

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) throw new RangeError(`ZeroAsyncDisk: invalid size ${size}`);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new RangeError(`ZeroAsyncDisk: [${offset}, +${length}) outside a ${this.size}-byte disk`);
    this.reads++;
    return new Uint8Array(length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    throw new Error(`the guest wrote ${data.length} bytes at ${offset} while a warm-start state was being prepared (it must only read)`);
  }

  /** Nothing was written, so there is nothing to make durable. */
  async flush(): Promise<void> {}
}
