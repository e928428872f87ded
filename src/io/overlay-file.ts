/**
 * A copy-on-write view of a read-only BlockFile: writes land in memory, reads see them over the base file,
 * and the base file is never modified. `convert -l snapshot` uses it to apply a snapshot to a private view
 * of the source image (the engine's snapshotApply rewrites the active L1 and refcounts) without touching
 * the source on disk; `io -s` (qemu-io's snapshot mode) to discard what the session wrote.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";
import { PageOverlay } from "./page-overlay.js";

const CHUNK = 64 * 1024;

export class OverlayFile implements BlockFile {
  private readonly view: PageOverlay;
  readonly readOnly = false;
  readonly name: string;

  constructor(private readonly base: BlockFile) {
    this.view = new PageOverlay(base, CHUNK);
    this.name = `${base.name} (private view)`;
  }

  read(buf: Uint8Array, offset: number, purpose?: IoPurpose): number {
    return this.view.read(buf, offset, purpose);
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    this.view.write(data, offset);
  }

  /** Zeroes in memory, like every change of the view. */
  readonly zeroesWithoutWriting = true;

  zeroRange(offset: number, length: number, _purpose?: IoPurpose): void {
    this.view.zeroRange(offset, length);
  }

  /** Nothing here is durable: the view goes with the process. */
  flush(_purpose?: IoPurpose): void {}

  size(): number {
    return this.view.size();
  }

  truncate(size: number): void {
    this.view.truncate(size);
  }

  close(): void {
    this.view.reset();
    this.base.close();
  }
}
