/**
 * A worker-served image as the asynchronous disk contract (src/disk/async-disk.ts), over the ring's
 * transport (ring-client.ts): what the v86 devices sit on.
 *
 * Completions run synchronously when the ring client reaps them — in `poll()`, which the devices call from
 * inside v86's run loop, or in the client's own microtask or waitAsync continuation. Each carries the
 * request's timing: the service time is `workerEnd - workerStart` of its ring request(s) (the worker's clock
 * is mapped onto this thread's `performance.now()` scale by the ring), i.e. the engine's time without the
 * ring hand-off, the worker's wake-up and this thread's event-loop delay; the ring time is
 * `completed - called`, from the call to the moment the client completed it, the service time included.
 *
 * A write's buffers (one array, or a virtio request's segments of guest memory) are copied once, straight
 * into the ring's shared memory: the contract lets the disk read them until the write completes, so even
 * pieces that wait for a free slot are not copied aside.
 */
import type { AsyncDisk, DiskDone, DiskTiming, WriteData } from "../disk/async-disk.js";
import { Op } from "./ring.js";
import type { OperationDone, RequestTiming, RingClient } from "./ring-client.js";
import { checkLen, rangeChunks, readChunks, simpleChunks, writeChunks, zeroFlags } from "./ring-requests.js";

export class ServedAsyncDisk implements AsyncDisk {
  constructor(readonly ring: RingClient) {}

  get size(): number {
    return this.ring.size;
  }

  read(offset: number, length: number, done: DiskDone<Uint8Array>, background = false, into?: Uint8Array): void {
    let buf: Uint8Array;
    try {
      buf = into?.length === length ? into : new Uint8Array(checkLen(length));
    } catch (e) {
      return done(e as Error, undefined, undefined);
    }
    this.ring.submit("read", (op) => readChunks(this.ring, op, buf, offset), (err, _v, t) => done(err, err ? undefined : buf, timingOf(t)), false, background);
  }

  write(offset: number, data: WriteData, done: DiskDone, background = false): void {
    // Background: the caller may reuse `data` at once, so chunks that must wait for a slot are copied now.
    this.ring.submit("write", (op) => writeChunks(this.ring, op, offset, data, background), completion(done), false, background);
  }

  flush(done: DiskDone): void {
    this.ring.submit("flush", (op) => simpleChunks(this.ring, op, Op.FLUSH), completion(done));
  }

  discard(offset: number, length: number, done: DiskDone): void {
    this.ring.submit("discard", (op) => rangeChunks(this.ring, op, Op.DISCARD, offset, length), completion(done));
  }

  writeZeroes(offset: number, length: number, unmap: boolean, done: DiskDone): void {
    this.ring.submit("write-zeroes", (op) => rangeChunks(this.ring, op, Op.WRITE_ZEROES, offset, length, zeroFlags(unmap)), completion(done));
  }

  poll(spinMs: number): number {
    return this.ring.poll(spinMs);
  }

  get spinBudgetMs(): number {
    return this.ring.spinBudgetMs;
  }
}

function completion(done: DiskDone): OperationDone {
  return (err, _v, t) => done(err, undefined, timingOf(t));
}

function timingOf(t: RequestTiming | undefined): DiskTiming | undefined {
  if (!t) return undefined;
  return {
    serviceMs: t.workerEnd >= t.workerStart ? t.workerEnd - t.workerStart : undefined,
    ringMs: t.completed >= t.called ? t.completed - t.called : undefined,
  };
}
