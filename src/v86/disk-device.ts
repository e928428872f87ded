/**
 * What a guest disk device of this folder — the IDE disk's HdaAdapter (hda-adapter.ts) or the virtio-blk
 * device (virtio-blk.ts) — offers its embedder, and what it tells an observer of the guest's requests.
 *
 * The devices measure nothing themselves: they keep no records, no latencies, no per-phase counts. When an
 * observer is set, a device calls it at the moments only the device can see — a request's submission, the
 * start of its service, the disk's completion, the guest being told, a queue notification, a used-ring
 * publication — with the times it took anyway for its own work (the spin budget of `pollFromEmulator`) and
 * the disk's own report of its service time. What is kept and summed is the observer's: the research
 * harness's request recorder (src/guest/request-recorder.ts) or an embedder's own.
 */

export type DiskOp = "read" | "write" | "flush";

/** A request the device accepted from the guest. */
export interface RequestSubmission {
  /** For virtio-blk: "read" for IN, "flush" for FLUSH, "write" for every other type. */
  op: DiskOp;
  /** performance.now() at submission, ms. */
  submitted: number;
  /** Requests outstanding at the device when this one was submitted, itself included. */
  depth: number;
  /** An IDE write: whether v86 passed its data in the drive's reusable PIO buffer (absent: DMA not told apart, or not a write). */
  pio?: boolean;
}

/** A request the device completed to the guest. */
export interface RequestCompletion {
  op: DiskOp;
  /** Byte offset and length (0 for a flush; for a discard or write-zeroes: its first segment's offset, all segments' bytes). */
  offset: number;
  length: number;
  /** As at submission. */
  submitted: number;
  depth: number;
  /** performance.now() when the device started serving it (IDE: after the requests queued before it; virtio: at submission), ms. */
  started: number;
  /** performance.now() when the disk resolved it (for a flush: the engine's flush done), ms. */
  diskDone: number;
  /** performance.now() when the guest was told (IDE: the disk's completion; virtio: the used ring written), ms. */
  completed: number;
  /** The disk's own time for the request, when its completion carries one (DiskTiming, src/disk/async-disk.ts), ms. */
  serviceMs?: number;
  /** Submission to completion at the disk's transport (the DiskClient), when the disk reports it, ms. */
  ringMs?: number;
  /** An IDE write whose data came in v86's reusable PIO buffer (known only when the device can tell). */
  pio?: true;
  /** virtio-blk only: the request type (T_* of virtio-blk.ts) and the status the guest got. */
  virtio?: { type: number; status: number };
}

/**
 * Told of the guest's requests by a device. The IDE adapter reports only the requests that succeeded (a
 * failed one never completes to the guest); virtio-blk reports every request with its status.
 */
export interface DiskRequestObserver<Token = unknown> {
  /** A request reached the device; what this returns is handed back with its completion. */
  submitted(req: RequestSubmission): Token;
  completed(token: Token, req: RequestCompletion): void;
  /** virtio-blk: the driver notified the queue. */
  notified?(): void;
  /** virtio-blk: a batch of completions went to the used ring; `interrupted` when it raised the interrupt. */
  published?(interrupted: boolean): void;
}

/**
 * The devices' write cache (hda-adapter.ts, virtio-blk.ts): the error every later flush fails with once a
 * write the guest was already told had completed fails at the disk.
 */
export function lostWriteError(offset: number, length: number, cause: Error): Error {
  return new Error(`a write the guest saw complete (${length} bytes at offset ${offset}) failed: ${cause.message}`);
}

/** What an embedder needs of the guest's disk device, whichever it is. */
export interface DiskDevice {
  readonly byteLength: number;
  /** Told of every request, when set. */
  observer: DiskRequestObserver | undefined;
  /** The first error a disk operation raised. */
  failure: Error | undefined;
  /** Called on every failed disk operation. */
  onError?: (err: Error, op: DiskOp, offset: number, length: number) => void;
  /** Requests queued or in flight. */
  readonly pending: number;
  readonly idle: boolean;
  /** Resolves when no request is queued or in flight. */
  whenIdle(): Promise<void>;
  /** Reaps the disk's completions from inside v86's run loop (see `hookDiskPolling`, v86-disk.ts). */
  pollFromEmulator(halted: boolean): void;
  /** Requests submitted so far complete nowhere (a state restore replaced the machine they belong to). */
  invalidateCallbacks(): void;
}
