/**
 * The guest's disk as the page sees it: an AsyncDisk forwarding to the DiskClient currently serving the
 * image, which the page may close and reopen underneath the emulator — to download the image (cleanly
 * closed, so it is plain qcow2), or to switch refcount scheme or cache mode — while the guest is paused.
 *
 * Each client is wrapped in the Node side's ServedAsyncDisk (src/v86/served-async-disk.ts), so the engine's
 * own time of the last request (`lastServiceMs`) reaches the hda adapter's records as in Node, and its
 * callback form and poll() (PollableDisk) let the adapter complete requests from inside v86's run loop.
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

  private need(): ServedAsyncDisk {
    if (!this.current) throw this.closedError();
    return this.current;
  }
}
