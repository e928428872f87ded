/**
 * DiskClient: a worker-served image as promises — every request the serve loop answers (data, snapshots,
 * VM state, block status, dirty bitmaps, statistics), for the CLI, NBD and tests. It is a disk API over the
 * ring's transport (`ring`, ring-client.ts); the asynchronous disk contract over the same ring, for
 * emulators, is ServedAsyncDisk (served-async-disk.ts).
 *
 * Data passed to write() is copied before write() returns (into the ring, or aside when the ring is
 * full), so the caller may reuse its buffer at once. Per-request timing: `onTiming`.
 */
import type { SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";
import { Flag, Op, OP_NAMES, splitRange } from "./ring.js";
import { type Chunk, type Operation, RingClient, type RingClientOptions, type RequestTiming } from "./ring-client.js";
import { checkLen, chunk, parseJson, rangeChunks, readChunks, resultChunk, simpleChunks, writeChunks, zeroFlags } from "./ring-requests.js";

/** One extent of DiskClient.blockStatus. */
export interface BlockExtent {
  length: number;
  /** Reads as zeroes. */
  zero: boolean;
  /** Holds data (allocated, not a zero cluster), in this image or its backing chain. */
  data: boolean;
}

/** One extent of DiskClient.allocationDepth: 0 unallocated, 1 the image itself, 2 its backing file... */
export interface DepthExtent {
  length: number;
  depth: number;
}

/** One extent of DiskClient.dirtyExtents. */
export interface DirtyExtent {
  length: number;
  dirty: boolean;
}

export class DiskClient {
  /** The transport: slots, doorbell, polling; the host reports the server's end to it. */
  readonly ring: RingClient;

  /** Wraps a ring whose server is READY (see `waitForServer`). */
  constructor(ring: SharedArrayBuffer, name: string, opts: RingClientOptions = {}) {
    this.ring = new RingClient(ring, name, opts);
  }

  /** Image path or name, for messages. */
  get name(): string {
    return this.ring.name;
  }
  get readOnly(): boolean {
    return this.ring.readOnly;
  }
  /** Identifier of the serving thread (Node worker threadId). */
  get serverId(): number {
    return this.ring.serverId;
  }
  /** Virtual size of the image in bytes (may change when a snapshot is applied or the image resized). */
  get size(): number {
    return this.ring.size;
  }
  /** True once close() was called or the server died. */
  get closed(): boolean {
    return this.ring.closed;
  }
  /** Requests queued or in flight. */
  get pendingRequests(): number {
    return this.ring.pendingRequests;
  }
  /** Per-request timing hook, called for every completed request. */
  get onTiming(): ((op: string, timing: RequestTiming) => void) | undefined {
    return this.ring.onTiming;
  }
  set onTiming(hook: ((op: string, timing: RequestTiming) => void) | undefined) {
    this.ring.onTiming = hook;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    let buf: Uint8Array;
    try {
      buf = new Uint8Array(checkLen(length));
    } catch (e) {
      return Promise.reject(e as Error);
    }
    return this.call("read", (op) => readChunks(this.ring, op, buf, offset)).then(() => buf);
  }
  /** Reads into `buf` (its whole length) from `offset`. */
  readInto(buf: Uint8Array, offset: number): Promise<void> {
    return this.call("read", (op) => readChunks(this.ring, op, buf, offset));
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.call("write", (op) => writeChunks(this.ring, op, offset, data, true));
  }
  writeZeroes(offset: number, length: number, opts: { unmap?: boolean } = {}): Promise<void> {
    return this.call("write-zeroes", (op) => rangeChunks(this.ring, op, Op.WRITE_ZEROES, offset, length, zeroFlags(opts.unmap)));
  }
  discard(offset: number, length: number): Promise<void> {
    return this.call("discard", (op) => rangeChunks(this.ring, op, Op.DISCARD, offset, length));
  }
  flush(): Promise<void> {
    return this.call("flush", (op) => simpleChunks(this.ring, op, Op.FLUSH));
  }
  /** An empty request: measures the ring round trip. */
  nop(): Promise<void> {
    return this.call("nop", (op) => simpleChunks(this.ring, op, Op.NOP));
  }
  snapshotCreate(name: string, opts: SnapshotCreateOptions = {}): Promise<SnapshotInfo> {
    return this.call("snapshot-create", (op) => {
      const args: Record<string, unknown> = { name };
      if (opts.vmClockNsec !== undefined) args.vmClockNsec = opts.vmClockNsec;
      if (opts.date !== undefined) args.dateMs = opts.date.getTime();
      const chunks: Chunk[] = [];
      if (opts.vmState !== undefined) {
        // Stage the VM state with PUT requests, then name it in the create request.
        const token = this.ring.token();
        const state = opts.vmState.slice();
        args.vmStateToken = token;
        args.vmStateLength = state.length;
        for (const [off, len] of splitRange(0, state.length, this.ring.slotData)) {
          chunks.push(chunk(this.ring, op, Op.PUT, { offset: off, length: len, token, input: state.subarray(off, off + len) }));
        }
      }
      chunks.push(resultChunk(this.ring, op, Op.SNAPSHOT_CREATE, args, parseJson));
      return chunks;
    });
  }
  snapshotApply(idOrName: string): Promise<void> {
    return this.call("snapshot-apply", (op) => [resultChunk(this.ring, op, Op.SNAPSHOT_APPLY, { id: idOrName }, (bytes) => this.takeSize(bytes))]);
  }
  snapshotDelete(idOrName: string): Promise<void> {
    return this.json(Op.SNAPSHOT_DELETE, { id: idOrName }, false);
  }
  snapshotList(): Promise<SnapshotInfo[]> {
    return this.json(Op.SNAPSHOT_LIST, undefined, true);
  }
  readVmState(idOrName: string): Promise<Uint8Array> {
    return this.call(OP_NAMES[Op.READ_VMSTATE], (op) => [resultChunk(this.ring, op, Op.READ_VMSTATE, { id: idOrName }, (bytes) => bytes)]);
  }
  /** Reads the active layer's VM-state area (qemu-io's read -b); `pos` is relative to its start. */
  async readVmStateArea(pos: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(checkLen(length));
    await this.call("read", (op) => readChunks(this.ring, op, buf, pos, Flag.VMSTATE));
    return buf;
  }
  /** Writes the active layer's VM-state area (qemu-io's write -b). */
  writeVmStateArea(pos: number, data: Uint8Array): Promise<void> {
    return this.call("write", (op) => writeChunks(this.ring, op, pos, data, true, Flag.VMSTATE));
  }
  /** Changes the virtual size (qemu-io's truncate); `size` follows. */
  resize(size: number): Promise<void> {
    return this.call("resize", (op) => [resultChunk(this.ring, op, Op.RESIZE, { size }, (bytes) => this.takeSize(bytes))]);
  }
  /** Which parts of [offset, offset + length) the image allocates itself (merged runs, up to the disk's end). */
  allocation(offset: number, length: number): Promise<{ allocated: boolean; length: number }[]> {
    return this.json(Op.ALLOCATION, { offset, length }, true);
  }
  /**
   * Allocation status from `offset`: merged extents (whether each reads as zeroes, whether it holds data)
   * covering at most `length` bytes and at most `maxExtents` extents; at least one unless `length` is 0.
   */
  async blockStatus(offset: number, length: number, maxExtents = 1024): Promise<BlockExtent[]> {
    const raw = await this.json<[number, number, number][]>(Op.BLOCK_STATUS, { offset, length, maxExtents }, true);
    return raw.map(([n, zero, data]) => ({ length: n, zero: zero === 1, data: data === 1 }));
  }
  /**
   * Which layer of the backing chain each part of the range comes from (qemu:allocation-depth): merged
   * extents from `offset`, covering at most `length` bytes and at most `maxExtents` extents.
   */
  async allocationDepth(offset: number, length: number, maxExtents = 1024): Promise<DepthExtent[]> {
    const raw = await this.json<[number, number][]>(Op.ALLOCATION_DEPTH, { offset, length, maxExtents }, true);
    return raw.map(([n, depth]) => ({ length: n, depth }));
  }
  /**
   * The persistent dirty bitmap `bitmap` over the range (qemu:dirty-bitmap:NAME): merged extents from
   * `offset`, covering at most `length` bytes and at most `maxExtents` extents.
   */
  async dirtyExtents(bitmap: string, offset: number, length: number, maxExtents = 1024): Promise<DirtyExtent[]> {
    const raw = await this.json<[number, number][]>(Op.DIRTY_EXTENTS, { bitmap, offset, length, maxExtents }, true);
    return raw.map(([n, dirty]) => ({ length: n, dirty: dirty === 1 }));
  }
  /** The engine's cost records (`stats()`), or null when the engine has none. */
  stats(): Promise<unknown> {
    return this.json(Op.STATS, undefined, true);
  }

  /**
   * Waits for every request already made, then flushes and closes the image and waits for the server to
   * end. Requests made after close() reject with a ClosedError. Idempotent.
   */
  close(): Promise<void> {
    return this.ring.close((op) => chunk(this.ring, op, Op.CLOSE));
  }

  private call<T = void>(name: string, build: (op: Operation) => Chunk[]): Promise<T> {
    return new Promise<T>((resolve, reject) => this.ring.submit(name, build, (err, value) => (err ? reject(err) : resolve(value as T))));
  }

  private json<T = void>(code: number, args: unknown, parse: boolean): Promise<T> {
    return this.call<T>(OP_NAMES[code], (op) => [resultChunk(this.ring, op, code, args, (bytes) => (parse ? parseJson(bytes) : undefined))]);
  }

  /** A snapshot apply's or a resize's answer: the image's new size. */
  private takeSize(bytes: Uint8Array): undefined {
    const r = parseJson(bytes) as { size?: number } | null;
    if (r && typeof r.size === "number") this.ring.size = r.size;
    return undefined;
  }
}
