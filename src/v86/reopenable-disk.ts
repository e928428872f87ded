/**
 * The guest's disk as an AsyncDisk forwarding to the DiskClient currently serving the image, which may be
 * closed and reopened underneath the emulator while the guest is paused: the page does it to download the
 * image (cleanly closed, so it is plain qcow2) or to switch refcount scheme or cache mode; `refcow boot`
 * to commit -snapshot's overlay into the image (Ctrl-A s). Platform-neutral.
 *
 * Each client is wrapped in ServedAsyncDisk (served-async-disk.ts), so the engine's own time of the last
 * request (`lastServiceMs`) reaches the devices' observers, and its callback form and poll() (PollableDisk)
 * let the device complete requests from inside v86's run loop. ReopenableZeroingDisk forwards the engine's
 * discard and write-zeroes as well (virtio-blk then offers DISCARD and WRITE_ZEROES to the guest).
 */
import type { PollableDisk } from "../v86/async-disk.js";
import { ServedAsyncDisk } from "../v86/served-async-disk.js";
import type { DiskClient } from "../worker/disk-client.js";

export class ReopenableDisk implements PollableDisk {
  readonly size: number;
  private current: ServedAsyncDisk | undefined;

  constructor(client: DiskClient) {
    this.size = client.size;
    this.current = new ServedAsyncDisk(client);
  }

  /** The client serving the image now (undefined while it is being swapped). */
  get client(): DiskClient | undefined {
    return this.current?.client;
  }

  /** Engine time of the last resolved request, in ms. */
  get lastServiceMs(): number | undefined {
    return this.current?.lastServiceMs;
  }

  get lastRingMs(): number | undefined {
    return this.current?.lastRingMs;
  }

  /** Closes the current client (flushing and closing the image cleanly). The guest must be paused. */
  async detach(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.client.close();
  }

  /** Serves the guest from `client` from now on; its disk must have the same size. */
  attach(client: DiskClient): void {
    if (this.current) throw new Error("a client is still attached: detach() it first");
    if (client.size !== this.size) {
      throw new Error(`the image is ${client.size} bytes, the guest's disk ${this.size}: boot a new guest for it`);
    }
    this.current = new ServedAsyncDisk(client);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.need().read(offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.need().write(offset, data);
  }

  flush(): Promise<void> {
    return this.need().flush();
  }

  readCb(offset: number, length: number, done: (err: Error | undefined, data: Uint8Array | undefined) => void): void {
    const d = this.current;
    if (!d) return done(this.closedError(), undefined);
    d.readCb(offset, length, done);
  }

  writeCb(offset: number, data: Uint8Array, done: (err: Error | undefined) => void): void {
    const d = this.current;
    if (!d) return done(this.closedError());
    d.writeCb(offset, data, done);
  }

  flushCb(done: (err: Error | undefined) => void): void {
    const d = this.current;
    if (!d) return done(this.closedError());
    d.flushCb(done);
  }

  poll(spinMs: number): number {
    return this.current?.poll(spinMs) ?? 0;
  }

  get spinBudgetMs(): number {
    return this.current?.spinBudgetMs ?? 0;
  }

  private closedError(): Error {
    return new Error("the image is closed (being reopened): pause the guest before detaching it");
  }

  protected need(): ServedAsyncDisk {
    if (!this.current) throw this.closedError();
    return this.current;
  }
}

/** A ReopenableDisk with the engine's discard and write-zeroes (virtio-blk's DISCARD and WRITE_ZEROES). */
export class ReopenableZeroingDisk extends ReopenableDisk {
  discard(offset: number, length: number): Promise<void> {
    return this.need().discard(offset, length);
  }

  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<void> {
    return this.need().writeZeroes(offset, length, opts);
  }
}
