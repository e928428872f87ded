/**
 * The guest's disk as an AsyncDisk forwarding to the DiskClient currently serving the image, which may be
 * closed and reopened underneath the emulator while the guest is paused: the page does it to download the
 * image (cleanly closed, so it is plain qcow2) or to switch refcount scheme or cache mode; `refcow boot`
 * to commit -snapshot's overlay into the image (Ctrl-A s). Platform-neutral.
 *
 * Each client is served through ServedAsyncDisk (src/worker/served-async-disk.ts), as in Node: its
 * completions carry the engine's time to the hda adapter's observer, and poll() lets the adapter complete
 * requests from inside v86's run loop. ReopenableZeroingDisk forwards the engine's discard and write-zeroes as
 * well (virtio-blk then offers DISCARD and WRITE_ZEROES to the guest).
 */
import type { AsyncDisk, DiskDone, WriteData } from "../disk/async-disk.js";
import { ServedAsyncDisk } from "../worker/served-async-disk.js";
import type { DiskClient } from "../worker/disk-client.js";

export class ReopenableDisk implements AsyncDisk {
  readonly size: number;
  private current: ServedAsyncDisk | undefined;
  private currentClient: DiskClient | undefined;

  constructor(client: DiskClient) {
    this.size = client.size;
    this.currentClient = client;
    this.current = new ServedAsyncDisk(client.ring);
  }

  /** The client serving the image now (undefined while it is being swapped). */
  get client(): DiskClient | undefined {
    return this.currentClient;
  }

  /** Closes the current client (flushing and closing the image cleanly). The guest must be paused. */
  async detach(): Promise<void> {
    const c = this.currentClient;
    this.current = undefined;
    this.currentClient = undefined;
    await c?.close();
  }

  /** Serves the guest from `client` from now on; its disk must have the same size. */
  attach(client: DiskClient): void {
    if (this.current) throw new Error("a client is still attached: detach() it first");
    if (client.size !== this.size) {
      throw new Error(`the image is ${client.size} bytes, the guest's disk ${this.size}: boot a new guest for it`);
    }
    this.currentClient = client;
    this.current = new ServedAsyncDisk(client.ring);
  }

  read(offset: number, length: number, done: DiskDone<Uint8Array>, background?: boolean, into?: Uint8Array): void {
    const d = this.current;
    if (!d) return done(this.closedError(), undefined, undefined);
    d.read(offset, length, done, background, into);
  }

  write(offset: number, data: WriteData, done: DiskDone, background?: boolean): void {
    const d = this.current;
    if (!d) return done(this.closedError(), undefined, undefined);
    d.write(offset, data, done, background);
  }

  flush(done: DiskDone): void {
    const d = this.current;
    if (!d) return done(this.closedError(), undefined, undefined);
    d.flush(done);
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

  /** The disk serving now, or undefined (after calling `done` with the error) while the image is detached. */
  protected current_(done: DiskDone): ServedAsyncDisk | undefined {
    if (!this.current) done(this.closedError(), undefined, undefined);
    return this.current;
  }
}

/** A ReopenableDisk with the engine's discard and write-zeroes (virtio-blk's DISCARD and WRITE_ZEROES). */
export class ReopenableZeroingDisk extends ReopenableDisk {
  discard(offset: number, length: number, done: DiskDone): void {
    this.current_(done)?.discard(offset, length, done);
  }

  writeZeroes(offset: number, length: number, unmap: boolean, done: DiskDone): void {
    this.current_(done)?.writeZeroes(offset, length, unmap, done);
  }
}
