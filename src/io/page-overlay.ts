/**
 * PageOverlay: a copy-on-write view of a BlockFile kept in memory. Writes and truncates change only the view:
 * a write lands in pages of `pageSize` bytes (each read from the base file on its first write), reads see
 * those pages over the base file, and the base file is never written. Bytes of the base cut by a truncate
 * read as zeroes from then on, also when the file grows again.
 *
 * StagedFile (writes held until commit) and the CLI's private views (OverlayFile) are built on it. Memory
 * grows with what is written.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";

export class PageOverlay {
  private readonly pages = new Map<number, Uint8Array>();
  private length: number;
  /** Bytes of the base file past this offset were cut by a truncate: they read as zeroes. */
  private baseLimit: number;

  constructor(
    private readonly base: BlockFile,
    private readonly pageSize: number,
  ) {
    this.length = base.size();
    this.baseLimit = this.length;
  }

  /** Reads as BlockFile.read does: zeroes past the end; returns the bytes that lie inside the view. */
  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    const ps = this.pageSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const p = Math.floor(pos / ps);
      const inPage = pos - p * ps;
      const n = Math.min(ps - inPage, buf.length - done);
      const dst = buf.subarray(done, done + n);
      const page = this.pages.get(p);
      if (page) dst.set(page.subarray(inPage, inPage + n));
      else this.readBase(dst, pos, purpose);
      done += n;
    }
    return Math.max(0, Math.min(buf.length, this.length - offset));
  }

  write(data: Uint8Array, offset: number): void {
    const ps = this.pageSize;
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const p = Math.floor(pos / ps);
      const inPage = pos - p * ps;
      const n = Math.min(ps - inPage, data.length - done);
      this.page(p).set(data.subarray(done, done + n), inPage);
      done += n;
    }
    this.length = Math.max(this.length, offset + data.length);
  }

  /** Zeroes in the view (pages of zeroes where the range covers pages of the base). */
  zeroRange(offset: number, length: number): void {
    const ps = this.pageSize;
    const zero = new Uint8Array(Math.min(length, ps));
    for (let done = 0; done < length; ) {
      const n = Math.min(ps - ((offset + done) % ps), length - done);
      this.write(zero.subarray(0, n), offset + done);
      done += n;
    }
  }

  size(): number {
    return this.length;
  }

  truncate(size: number): void {
    if (size < this.length) {
      const ps = this.pageSize;
      this.baseLimit = Math.min(this.baseLimit, size);
      for (const [p, page] of this.pages) {
        if (p * ps >= size) this.pages.delete(p);
        else if ((p + 1) * ps > size) page.fill(0, size - p * ps);
      }
    }
    this.length = size;
  }

  /** Drops every change: the view is the base file as it is now. */
  reset(): void {
    this.pages.clear();
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
      page = new Uint8Array(this.pageSize);
      this.readBase(page, p * this.pageSize);
      this.pages.set(p, page);
    }
    return page;
  }
}
