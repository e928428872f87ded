/**
 * Staged BlockFile: holds every write, truncate and flush in memory (reads see them) until commit(), which
 * issues them on the file underneath in the same order, each flush where it was, or until it is dropped, which
 * leaves the file untouched. Opening an image stages what the open writes (a journal replay, a repair, a
 * scheme's conversion), so that an image refused half-way through its open is never written; an open that
 * succeeds writes the same sequence it would have written directly, so crash ordering is unchanged.
 *
 * The staged view is kept in 4 KiB pages; memory grows with what is written, which at open is metadata.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";

const PAGE = 4096;

type StagedOp =
  | { kind: "write"; offset: number; data: Uint8Array; purpose?: IoPurpose }
  | { kind: "truncate"; size: number }
  | { kind: "flush"; purpose?: IoPurpose };

export class StagedFile implements BlockFile {
  private readonly pages = new Map<number, Uint8Array>();
  private readonly ops: StagedOp[] = [];
  private length: number;
  /** Bytes of the base file past this offset were cut by a staged truncate: they read as zeroes. */
  private baseLimit: number;

  constructor(readonly base: BlockFile) {
    this.length = base.size();
    this.baseLimit = this.length;
  }

  get name(): string {
    return this.base.name;
  }

  get readOnly(): boolean {
    return this.base.readOnly;
  }

  /** True when something was staged. */
  get pending(): boolean {
    return this.ops.length > 0;
  }

  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    if (this.ops.length === 0) return this.base.read(buf, offset, purpose);
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const p = Math.floor(pos / PAGE);
      const inPage = pos - p * PAGE;
      const n = Math.min(PAGE - inPage, buf.length - done);
      const dst = buf.subarray(done, done + n);
      const page = this.pages.get(p);
      if (page) dst.set(page.subarray(inPage, inPage + n));
      else this.readBase(dst, pos, purpose);
      done += n;
    }
    return Math.max(0, Math.min(buf.length, this.length - offset));
  }

  write(data: Uint8Array, offset: number, purpose?: IoPurpose): void {
    this.ops.push({ kind: "write", offset, data: data.slice(), purpose });
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const p = Math.floor(pos / PAGE);
      const inPage = pos - p * PAGE;
      const n = Math.min(PAGE - inPage, data.length - done);
      this.page(p).set(data.subarray(done, done + n), inPage);
      done += n;
    }
    this.length = Math.max(this.length, offset + data.length);
  }

  flush(purpose?: IoPurpose): void {
    this.ops.push({ kind: "flush", purpose });
  }

  size(): number {
    return this.length;
  }

  truncate(size: number): void {
    this.ops.push({ kind: "truncate", size });
    if (size < this.length) {
      this.baseLimit = Math.min(this.baseLimit, size);
      for (const [p, page] of this.pages) {
        if (p * PAGE >= size) this.pages.delete(p);
        else if ((p + 1) * PAGE > size) page.fill(0, size - p * PAGE);
      }
    }
    this.length = size;
  }

  close(): void {}

  /** Issues the staged operations on the base file, in order; the staged state is then empty. */
  commit(): void {
    const ops = this.ops.splice(0, this.ops.length);
    this.pages.clear();
    for (const op of ops) {
      if (op.kind === "write") this.base.write(op.data, op.offset, op.purpose);
      else if (op.kind === "flush") this.base.flush(op.purpose);
      else this.base.truncate(op.size);
    }
    this.length = this.base.size();
    this.baseLimit = this.length;
  }

  private readBase(dst: Uint8Array, pos: number, purpose?: IoPurpose): void {
    const inBase = Math.max(0, Math.min(dst.length, this.baseLimit - pos));
    if (inBase > 0) this.base.read(dst.subarray(0, inBase), pos, purpose);
    if (inBase < dst.length) dst.fill(0, inBase);
  }

  private page(p: number): Uint8Array {
    let page = this.pages.get(p);
    if (!page) {
      page = new Uint8Array(PAGE);
      this.readBase(page, p * PAGE);
      this.pages.set(p, page);
    }
    return page;
  }
}
