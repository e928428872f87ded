/**
 * The guest's disk as the page sees it: an AsyncDisk forwarding to the DiskClient currently serving the
 * image, which the page may close and reopen underneath the emulator — to download the image (cleanly
 * closed, so it is plain qcow2), or to switch refcount scheme or cache mode — while the guest is paused.
 *
 * It also keeps the engine's own time of the last request (`lastServiceMs`, worker start → worker end of
 * the ring request), which the hda adapter records next to the latency the guest saw.
 */
import type { AsyncDisk } from "../vm/async-disk.js";
import type { DiskClient, RequestTiming } from "../worker/disk-client.js";

export class ReopenableDisk implements AsyncDisk {
  readonly size: number;
  lastServiceMs: number | undefined;
  private current: DiskClient | undefined;

  constructor(client: DiskClient) {
    this.size = client.size;
    this.current = client;
  }

  /** The client serving the image now (undefined while it is being swapped). */
  get client(): DiskClient | undefined {
    return this.current;
  }

  /** Closes the current client (flushing and closing the image cleanly). The guest must be paused. */
  async detach(): Promise<void> {
    const c = this.current;
    this.current = undefined;
    await c?.close();
  }

  /** Serves the guest from `client` from now on; its disk must have the same size. */
  attach(client: DiskClient): void {
    if (this.current) throw new Error("a client is still attached: detach() it first");
    if (client.size !== this.size) {
      throw new Error(`the image is ${client.size} bytes, the guest's disk ${this.size}: boot a new guest for it`);
    }
    this.current = client;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const r = await this.need().timed.read(offset, length);
    this.note(r.timing);
    return r.value;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const r = await this.need().timed.write(offset, data);
    this.note(r.timing);
  }

  async flush(): Promise<void> {
    const r = await this.need().timed.flush();
    this.note(r.timing);
  }

  private need(): DiskClient {
    if (!this.current) throw new Error("the image is closed (being reopened): pause the guest before detaching it");
    return this.current;
  }

  private note(t: RequestTiming): void {
    this.lastServiceMs = t.workerEnd >= t.workerStart ? t.workerEnd - t.workerStart : undefined;
  }
}
