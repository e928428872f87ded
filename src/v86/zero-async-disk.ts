import type { AsyncDisk, DiskDone, WriteData } from "../disk/async-disk.js";
import { writeLength } from "../disk/async-disk.js";

/**
 * An empty disk of any size that reads as zeroes and takes no memory: what the guest boots on when a
 * warm-start state is prepared (the state must not depend on any image's contents). The boot only reads
 * (the partition-table probe); a write is a bug in that procedure and fails.
 */
export class ZeroAsyncDisk implements AsyncDisk {
  reads = 0;

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) throw new RangeError(`ZeroAsyncDisk: invalid size ${size}`);
  }

  read(offset: number, length: number, done: DiskDone<Uint8Array>): void {
    queueMicrotask(() => {
      if (offset < 0 || length < 0 || offset + length > this.size) {
        return done(new RangeError(`ZeroAsyncDisk: [${offset}, +${length}) outside a ${this.size}-byte disk`), undefined, undefined);
      }
      this.reads++;
      done(undefined, new Uint8Array(length), undefined);
    });
  }

  write(offset: number, data: WriteData, done: DiskDone): void {
    const err = new Error(`the guest wrote ${writeLength(data)} bytes at ${offset} while a warm-start state was being prepared (it must only read)`);
    queueMicrotask(() => done(err, undefined, undefined));
  }

  /** Nothing was written, so there is nothing to make durable. */
  flush(done: DiskDone): void {
    queueMicrotask(() => done(undefined, undefined, undefined));
  }
}
