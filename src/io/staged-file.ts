/**
 * Staged BlockFile: holds every write, truncate and flush in memory (reads see them) until commit(), which
 * issues them on the file underneath in the same order, each flush where it was, or until it is dropped, which
 * leaves the file untouched. Opening an image stages what the open writes (a journal replay, a repair, a
 * scheme's conversion), so that an image refused half-way through its open is never written; an open that
 * succeeds writes the same sequence it would have written directly, so crash ordering is unchanged.
 *
 * The staged view is a PageOverlay of 4 KiB pages; memory grows with what is written, which at open is metadata.
 */
import type { BlockFile, FileExtent, IoPurpose } from "./block-file.js";
import { PageOverlay } from "./page-overlay.js";

const PAGE = 4096;

type StagedOp =
  | { kind: "write"; offset: number; data: Uint8Array; purpose?: IoPurpose }
  | { kind: "truncate"; size: number }
  | { kind: "zero"; offset: number; length: number; purpose?: IoPurpose; unmap?: boolean }
  | { kind: "flush"; purpose?: IoPurpose };

export class StagedFile implements BlockFile {
  /** What reads see: the staged writes and truncates over the base file. */
  private readonly view: PageOverlay;
  private readonly ops: StagedOp[] = [];

  constructor(readonly base: BlockFile) {
    this.view = new PageOverlay(base, PAGE);
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
    return this.view.read(buf, offset, purpose);
  }

  write(data: Uint8Array, offset: number, purpose?: IoPurpose): void {
    this.ops.push({ kind: "write", offset, data: data.slice(), purpose });
    this.view.write(data, offset);
  }

  flush(purpose?: IoPurpose): void {
    this.ops.push({ kind: "flush", purpose });
  }

  get zeroesWithoutWriting(): boolean {
    return this.base.zeroesWithoutWriting;
  }

  zeroRange(offset: number, length: number, purpose?: IoPurpose, unmap?: boolean): void {
    this.ops.push({ kind: "zero", offset, length, purpose, unmap });
    this.view.zeroRange(offset, length);
  }

  /** The base file's answer while nothing is staged (a staged change would make it stale). */
  extentAt(offset: number, length: number): FileExtent | undefined {
    return this.ops.length === 0 ? this.base.extentAt?.(offset, length) : undefined;
  }

  allocatedSize(): number | undefined {
    return this.ops.length === 0 ? this.base.allocatedSize?.() : undefined;
  }

  size(): number {
    return this.view.size();
  }

  truncate(size: number): void {
    this.ops.push({ kind: "truncate", size });
    this.view.truncate(size);
  }

  /** Drops what is staged (the base file never sees it) and closes the base file. */
  close(): void {
    this.ops.length = 0;
    this.view.reset();
    this.base.close();
  }

  /** Issues the staged operations on the base file, in order; the staged state is then empty. */
  commit(): void {
    const ops = this.ops.splice(0, this.ops.length);
    this.view.reset(); // from here on the base file is the truth, also when an operation below fails
    for (const op of ops) {
      if (op.kind === "write") this.base.write(op.data, op.offset, op.purpose);
      else if (op.kind === "flush") this.base.flush(op.purpose);
      else if (op.kind === "zero") this.base.zeroRange(op.offset, op.length, op.purpose, op.unmap);
      else this.base.truncate(op.size);
    }
    this.view.reset();
  }
}
