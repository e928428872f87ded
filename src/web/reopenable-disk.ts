/**
 * The guest's disk as the page sees it: an AsyncDisk forwarding to the DiskClient currently serving the
 * image, which the page may close and reopen underneath the emulator — to download the image (cleanly
 * closed, so it is plain qcow2), or to switch refcount scheme or cache mode — while the guest is paused.
 *
 * Each client is wrapped in the Node side's ServedAsyncDisk (src/vm/served-async-disk.ts), so the engine's
 * own time of the last request (`lastServiceMs`) reaches the hda adapter's records as in Node.
 */
import type { ServiceTimedDisk } from "../vm/async-disk.js";
import { ServedAsyncDisk } from "../vm/served-async-disk.js";
import type { DiskClient } from "../worker/disk-client.js";

export class ReopenableDisk implements ServiceTimedDisk {
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

  private need(): ServedAsyncDisk {
    if (!this.current) throw new Error("the image is closed (being reopened): pause the guest before detaching it");
    return this.current;
  }
}
