/**
 * The synchronous side of a remote file: reads at any offset and length, served from an in-memory LRU of
 * fixed-size chunks, the missing chunks asked for in one blocking call to a chunk source (a bridge to
 * chunk-service.ts running in another thread). Platform-neutral: the Node and browser remote files share it.
 *
 * Memory: at most `memoryBytes` of chunks are kept here (least recently used dropped first); one read of
 * more than that holds its own chunks only while it copies them. The source side keeps at most its
 * read-ahead window on top (see chunk-service.ts).
 *
 * Read-ahead: a read starting where the previous one ended is sequential; from the second sequential read
 * on, the `readAheadChunks` chunks after it are requested in the background, so that a streaming reader
 * (a boot, a convert) finds them fetched.
 */
import { IoError } from "./block-file.js";

/** A synchronous bridge to the chunk service. */
export interface ChunkSource {
  /** The chunks at `indices` (blocking); throws an IoError when one cannot be had. */
  fetch(indices: number[]): Uint8Array[];
  /** Asks for chunks in the background (never throws, never blocks). */
  prefetch(indices: number[]): void;
}

export interface ChunkReaderOptions {
  chunkSize?: number;
  /** Bytes of chunks kept in memory (default 64 MiB, at least one chunk). */
  memoryBytes?: number;
  /** Chunks read ahead of a sequential reader (default 4; 0 turns read-ahead off). */
  readAheadChunks?: number;
}

export const CHUNK_DEFAULTS = { chunkSize: 1 << 20, memoryBytes: 64 << 20, readAheadChunks: 4 } as const;

/** Checks and completes chunk options (a bad value is a clear error, not a silent default). */
export function chunkOptions(opts: ChunkReaderOptions): Required<ChunkReaderOptions> {
  const chunkSize = opts.chunkSize ?? CHUNK_DEFAULTS.chunkSize;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 512 || chunkSize > 1 << 30) {
    throw new RangeError(`invalid chunk size ${chunkSize} (expecting 512 bytes to 1 GiB)`);
  }
  const memoryBytes = Math.max(chunkSize, opts.memoryBytes ?? CHUNK_DEFAULTS.memoryBytes);
  const readAheadChunks = opts.readAheadChunks ?? CHUNK_DEFAULTS.readAheadChunks;
  if (!Number.isSafeInteger(readAheadChunks) || readAheadChunks < 0) throw new RangeError(`invalid read-ahead ${readAheadChunks}`);
  return { chunkSize, memoryBytes, readAheadChunks };
}

export class ChunkReader {
  private readonly opts: Required<ChunkReaderOptions>;
  /** Chunk index → bytes, in least-recently-used-first order. */
  private readonly chunks = new Map<number, Uint8Array>();
  private held = 0;
  private nextSequential = -1;
  /** Chunks asked for ahead and not claimed yet (so one streaming reader does not ask twice). */
  private readonly askedAhead = new Set<number>();
  readonly chunkCount: number;

  constructor(
    readonly size: number,
    private readonly source: ChunkSource,
    opts: ChunkReaderOptions = {},
  ) {
    this.opts = chunkOptions(opts);
    this.chunkCount = Math.ceil(size / this.opts.chunkSize);
  }

  get chunkSize(): number {
    return this.opts.chunkSize;
  }

  /** Bytes of chunks held in memory now. */
  memoryInUse(): number {
    return this.held;
  }

  /** Reads `buf.length` bytes at `offset`; bytes past the end read as zero. Returns the bytes within the object. */
  read(buf: Uint8Array, offset: number): number {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new IoError(`invalid read offset ${offset}`, "EINVAL");
    const end = Math.min(this.size, offset + buf.length);
    const inside = Math.max(0, end - offset);
    buf.fill(0, inside);
    if (inside === 0) return 0;
    const { chunkSize } = this.opts;
    const first = Math.floor(offset / chunkSize);
    const last = Math.floor((end - 1) / chunkSize);
    const missing: number[] = [];
    for (let i = first; i <= last; i++) if (!this.chunks.has(i)) missing.push(i);
    const fetched = new Map<number, Uint8Array>();
    if (missing.length > 0) {
      const got = this.source.fetch(missing);
      missing.forEach((i, k) => {
        fetched.set(i, got[k]);
        this.askedAhead.delete(i);
      });
    }
    for (let i = first; i <= last; i++) {
      const chunk = fetched.get(i) ?? this.touch(i);
      const start = Math.max(offset, i * chunkSize);
      const stop = Math.min(end, (i + 1) * chunkSize);
      buf.set(chunk.subarray(start - i * chunkSize, stop - i * chunkSize), start - offset);
    }
    for (const [i, chunk] of fetched) this.keep(i, chunk);
    this.readAhead(offset, end, last);
    return inside;
  }

  private touch(index: number): Uint8Array {
    const chunk = this.chunks.get(index)!;
    this.chunks.delete(index);
    this.chunks.set(index, chunk);
    return chunk;
  }

  private keep(index: number, chunk: Uint8Array): void {
    this.chunks.set(index, chunk);
    this.held += chunk.length;
    for (const [old, data] of this.chunks) {
      if (this.held <= this.opts.memoryBytes) break;
      this.chunks.delete(old);
      this.held -= data.length;
    }
  }

  private readAhead(offset: number, end: number, last: number): void {
    const sequential = offset === this.nextSequential;
    this.nextSequential = end;
    if (!sequential || this.opts.readAheadChunks === 0) return;
    const ahead: number[] = [];
    for (let i = last + 1; i <= last + this.opts.readAheadChunks && i < this.chunkCount; i++) {
      if (!this.chunks.has(i) && !this.askedAhead.has(i)) ahead.push(i);
    }
    if (ahead.length === 0) return;
    for (const i of ahead) this.askedAhead.add(i);
    // Forget stale requests (a reader that jumped away never claims them).
    if (this.askedAhead.size > 4 * this.opts.readAheadChunks) {
      for (const i of this.askedAhead) if (i <= last) this.askedAhead.delete(i);
    }
    this.source.prefetch(ahead);
  }
}
