/**
 * ReopenableDisk: the guest's disk over a ServedAsyncDisk that can be replaced while the machine is stopped
 * and the disk idle — when the image behind it is closed and opened again (Ctrl-A s commits `-snapshot`'s
 * overlay: the worker closes it, the overlay's data goes into the image, a fresh overlay is opened). The
 * device keeps this one object; every call goes to the current disk.
 */
import type { PollableDisk } from "./async-disk.js";
import type { ServedAsyncDisk } from "./served-async-disk.js";

export class ReopenableDisk implements PollableDisk {
  constructor(private current: ServedAsyncDisk) {}

  /** Puts `next` in place of the current disk (call only with no request in flight). */
  replace(next: ServedAsyncDisk): void {
    this.current = next;
  }

  get size(): number {
    return this.current.size;
  }
  get lastServiceMs(): number | undefined {
    return this.current.lastServiceMs;
  }
  get lastRingMs(): number | undefined {
    return this.current.lastRingMs;
  }
  get spinBudgetMs(): number {
    return this.current.spinBudgetMs;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.current.read(offset, length);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.current.write(offset, data);
  }
  flush(): Promise<void> {
    return this.current.flush();
  }
  discard(offset: number, length: number): Promise<void> {
    return this.current.discard(offset, length);
  }
  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<void> {
    return this.current.writeZeroes(offset, length, opts);
  }
  readCb(offset: number, length: number, done: (err: Error | undefined, data: Uint8Array | undefined) => void): void {
    this.current.readCb(offset, length, done);
  }
  writeCb(offset: number, data: Uint8Array, done: (err: Error | undefined) => void): void {
    this.current.writeCb(offset, data, done);
  }
  flushCb(done: (err: Error | undefined) => void): void {
    this.current.flushCb(done);
  }
  poll(spinMs: number): number {
    return this.current.poll(spinMs);
  }
}
