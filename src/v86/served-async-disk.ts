/**
 * The guest's disk as a worker-served qcow2 image: an AsyncDisk over a DiskClient (src/worker) that also
 * reports the engine's own time for each request (ServiceTimedDisk).
 *
 * DiskClient already fits AsyncDisk: `read` resolves to exactly the bytes asked, `write` copies the data
 * before it returns (so a v86 PIO buffer reused at once is safe — the hda adapter copies as well), `flush`
 * is the engine's flush (what "durable" means follows the image's cache mode: writethrough, writeback, or
 * none in unsafe mode). Ordering comes from the hda adapter, which issues one request at a time in guest
 * order; the ring itself serves an image's requests in submission order too.
 *
 * The callback form (PollableDisk) goes through DiskClient.callbacks: its completions run synchronously when
 * the client reaps them, in `poll()` among others, which the hda adapter calls from inside v86's run loop.
 *
 * The service time is `workerEnd - workerStart` of the ring request(s) (the worker's clock is mapped onto
 * this thread's `performance.now()` scale by the ring), i.e. the engine's time without the ring hand-off,
 * the worker's wake-up and this thread's event-loop delay. The ring time is `completed - called`: from the
 * call on the DiskClient to the moment it settled the request, the service time included.
 */
import type { DiskClient, RequestTiming } from "../worker/disk-client.js";
import type { PollableDisk } from "./async-disk.js";

export class ServedAsyncDisk implements PollableDisk {
  lastServiceMs: number | undefined;
  lastRingMs: number | undefined;

  constructor(readonly client: DiskClient) {}

  get size(): number {
    return this.client.size;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const r = await this.client.timed.read(offset, length);
    this.note(r.timing);
    return r.value;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const r = await this.client.timed.write(offset, data);
    this.note(r.timing);
  }

  async flush(): Promise<void> {
    const r = await this.client.timed.flush();
    this.note(r.timing);
  }

  /** The engine's discard (virtio-blk DISCARD). */
  async discard(offset: number, length: number): Promise<void> {
    const r = await this.client.timed.discard(offset, length);
    this.note(r.timing);
  }

  /** The engine's write-zeroes (virtio-blk WRITE_ZEROES; `unmap` lets it deallocate). */
  async writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<void> {
    const r = await this.client.timed.writeZeroes(offset, length, opts);
    this.note(r.timing);
  }

  readCb(offset: number, length: number, done: (err: Error | undefined, data: Uint8Array | undefined) => void): void {
    this.client.callbacks.read(offset, length, (err, value, timing) => {
      if (timing) this.note(timing);
      done(err, value);
    });
  }

  writeCb(offset: number, data: Uint8Array, done: (err: Error | undefined) => void): void {
    this.client.callbacks.write(offset, data, (err, _v, timing) => {
      if (timing) this.note(timing);
      done(err);
    });
  }

  flushCb(done: (err: Error | undefined) => void): void {
    this.client.callbacks.flush((err, _v, timing) => {
      if (timing) this.note(timing);
      done(err);
    });
  }

  poll(spinMs: number): number {
    return this.client.poll(spinMs);
  }

  get spinBudgetMs(): number {
    return this.client.spinBudgetMs;
  }

  private note(t: RequestTiming): void {
    this.lastServiceMs = t.workerEnd >= t.workerStart ? t.workerEnd - t.workerStart : undefined;
    this.lastRingMs = t.completed >= t.called ? t.completed - t.called : undefined;
  }
}
