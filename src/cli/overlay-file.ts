/**
 * A copy-on-write view of a read-only BlockFile: writes land in memory, reads see them over the base file,
 * and the base file is never modified. `convert -l snapshot` uses it to apply a snapshot to a private view
 * of the source image (the engine's snapshotApply rewrites the active L1 and refcounts) without touching
 * the source on disk.
 */
import type { BlockFile, IoPurpose } from "../engine/types.js";

const CHUNK = 64 * 1024;

export class OverlayFile implements BlockFile {
  private readonly chunks = new Map<number, Uint8Array>();
  private length: number;
  readonly readOnly = false;
  readonly name: string;

  constructor(private readonly base: BlockFile) {
    this.length = base.size();
    this.name = `${base.name} (private view)`;
  }

  private baseChunk(index: number): Uint8Array {
    const buf = new Uint8Array(CHUNK);
    const start = index * CHUNK;
    if (start < this.length) this.base.read(buf, start);
    const valid = this.length - start;
    if (valid < CHUNK) buf.fill(0, Math.max(0, valid));
    return buf;
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const within = pos - index * CHUNK;
      const n = Math.min(CHUNK - within, buf.length - done);
      const chunk = this.chunks.get(index);
      if (chunk) {
        buf.set(chunk.subarray(within, within + n), done);
      } else if (pos >= this.length) {
        buf.fill(0, done, done + n);
      } else {
        const part = buf.subarray(done, done + n);
        this.base.read(part, pos);
        const valid = this.length - pos;
        if (valid < n) part.fill(0, valid);
      }
      done += n;
    }
    return Math.max(0, Math.min(buf.length, this.length - offset));
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const within = pos - index * CHUNK;
      const n = Math.min(CHUNK - within, data.length - done);
      let chunk = this.chunks.get(index);
      if (!chunk) {
        chunk = this.baseChunk(index);
        this.chunks.set(index, chunk);
      }
      chunk.set(data.subarray(done, done + n), within);
      done += n;
    }
    this.length = Math.max(this.length, offset + data.length);
  }

  flush(_purpose?: IoPurpose): void {}

  size(): number {
    return this.length;
  }

  truncate(size: number): void {
    if (size < this.length) {
      for (const index of [...this.chunks.keys()]) {
        const start = index * CHUNK;
        if (start >= size) this.chunks.delete(index);
        else if (start + CHUNK > size) this.chunks.get(index)!.fill(0, size - start);
      }
      // Bytes of the base past the new end must read as zero if the file grows again.
      const lastIndex = Math.floor(size / CHUNK);
      if (size % CHUNK && !this.chunks.has(lastIndex)) {
        const chunk = this.baseChunk(lastIndex);
        chunk.fill(0, size - lastIndex * CHUNK);
        this.chunks.set(lastIndex, chunk);
      }
      for (let i = lastIndex + (size % CHUNK ? 1 : 0); i * CHUNK < this.length; i++) {
        if (!this.chunks.has(i)) this.chunks.set(i, new Uint8Array(CHUNK));
      }
    }
    this.length = size;
  }

  close(): void {
    this.chunks.clear();
    this.base.close();
  }
}
