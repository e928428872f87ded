/** What qemu-io's commands run against: the open image, the session's output, its aio requests and files. */
import type { CliIo } from "../command.js";
import type { AioRequests } from "./aio-requests.js";

/** What the commands run against: an open image, served in-process or by a worker. */
export interface IoTarget {
  /** Virtual size now (truncate changes it). */
  readonly size: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Uint8Array | Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): void | Promise<void>;
  writeZeroes(offset: number, length: number, opts: { unmap: boolean }): void | Promise<void>;
  discard(offset: number, length: number): void | Promise<void>;
  flush(): void | Promise<void>;
  /** Which parts of the range the image allocates itself, as merged runs that stop at the end of the disk. */
  allocation(offset: number, length: number): AllocationRuns | Promise<AllocationRuns>;
  /** Changes the virtual size (truncate). */
  resize(size: number): void | Promise<void>;
  /** The active layer's VM-state area (read -b / write -b); absent where the format has none (raw). */
  readVmState?(pos: number, length: number): Uint8Array | Promise<Uint8Array>;
  writeVmState?(pos: number, data: Uint8Array): void | Promise<void>;
  /** Requests accepted and not yet completed (a worker-served image: queued or in the ring). */
  inFlight?(): number;
  /** For `info`: "format name", "cluster size", "vm state offset", and the format-specific block. */
  describe(): { formatName: string; clusterSize: number; vmStateOffset: number; specific?: string };
}

export type AllocationRuns = readonly { allocated: boolean; length: number }[];

export interface IoContext {
  /** The open image (only meaningful while `closed` is not set). */
  target: IoTarget;
  io: CliIo;
  /** Set by `quit`: stop running commands. */
  quit: boolean;
  /** aio_read / aio_write requests in flight or not yet reported. */
  aio: AioRequests;
  /** Set by `close`: no image is open until `open`. */
  closed?: boolean;
  /** Opening and closing the session's image (`open`, `close`); without it those commands are refused. */
  files?: IoFiles;
}

/** What `open` asks for: its options, as the command line's. */
export interface IoFileOptions {
  readOnly: boolean;
  snapshot: boolean;
  /** -t / -n, as given. */
  cache?: string;
  /** -o driver=. */
  format?: "qcow2" | "raw";
}

export interface IoFiles {
  /** Opens an image; rejects with the reason QEMU's "can't open device" line gives. */
  open(path: string, opts: IoFileOptions): Promise<IoTarget>;
  /** Closes the open image. */
  close(): Promise<void>;
  /** Closes and opens the image again with other options (reopen); rejects with the line to print. */
  reopen(opts: { readOnly?: boolean; cache?: string }): Promise<IoTarget>;
  /** Whether an image is open (a failed reopen that could not restore the old one leaves none). */
  isOpen(): boolean;
}
