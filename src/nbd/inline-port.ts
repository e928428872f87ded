/**
 * The NBD port (port.ts) over an image the engine has open in this thread (a SyncDisk: Qcow2Image or a raw
 * disk): every call runs the engine synchronously and answers at once, except those that wait for a flush.
 *
 * Group commit (open/serving-cache.ts): a durable write (FUA, or cache=writethrough with the engine in writeback) is
 * carried out at once, but answered by the group's promise, which settles at endOfBatch() after one flush of
 * the image — so the requests of one socket read that need a flush share it, and none of their replies is
 * sent before it has returned (a failed flush fails each of them). A FLUSH joins the group when one is open,
 * and otherwise flushes at once.
 */
import { syncImageMonitorTarget } from "./monitor-socket.js";
import { openServedPath, type ServedImageSpec, servingCache } from "../open/serving.js";
import { depthExtents, dirtyExtents, mergedBlockStatus } from "../worker/extents.js";
import type { SyncDisk } from "../disk/sync-disk.js";
import type { Answer, ExportImage, NbdPort } from "./port.js";

/** The requests waiting for the next flush: one promise they all answer with. */
interface Group {
  done: Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
}

export class InlinePort implements NbdPort {
  private group: Group | undefined;
  /** Flushes the groups issued (one per batch that needed one). */
  commits = 0;

  constructor(private readonly disk: SyncDisk) {}

  get size(): number {
    return this.disk.size;
  }

  readInto(buf: Uint8Array, offset: number): void {
    this.disk.readInto(buf, offset);
  }

  write(offset: number, data: Uint8Array, durable: boolean): Answer<void> {
    this.disk.write(offset, data);
    return durable ? this.join() : undefined;
  }

  writeZeroes(offset: number, length: number, unmap: boolean, durable: boolean): Answer<void> {
    this.disk.writeZeroes(offset, length, { unmap });
    return durable ? this.join() : undefined;
  }

  discard(offset: number, length: number, durable: boolean): Answer<void> {
    this.disk.discard(offset, length);
    return durable ? this.join() : undefined;
  }

  /** Joins the group when one is open (durable writes in hand); else flushes at once, as nothing waits to share it. */
  flush(): Answer<void> {
    if (this.group) return this.group.done;
    this.disk.flush();
  }

  blockStatus(offset: number, length: number, maxExtents: number) {
    return mergedBlockStatus(this.disk, offset, length, maxExtents);
  }

  allocationDepth(offset: number, length: number, maxExtents: number) {
    return depthExtents(this.disk, offset, length, maxExtents);
  }

  dirtyExtents(bitmap: string, offset: number, length: number, maxExtents: number) {
    return dirtyExtents(this.disk, bitmap, offset, length, maxExtents);
  }

  /** The group's one flush, then its requests are answered. */
  endOfBatch(): void {
    const g = this.group;
    if (!g) return;
    this.group = undefined;
    this.commits++;
    try {
      this.disk.flush();
    } catch (e) {
      g.reject(e);
      return;
    }
    g.resolve();
  }

  private join(): Promise<void> {
    let g = this.group;
    if (!g) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      g = this.group = { done, resolve, reject };
    }
    return g.done;
  }
}

export function inlinePort(disk: SyncDisk): InlinePort {
  return new InlinePort(disk);
}

/**
 * Opens `spec` in this thread for an inline export. With cache=writethrough the engine runs in writeback and
 * the export makes each write durable (group commit: open/serving-cache.ts).
 */
export function openInlineImage(spec: ServedImageSpec): ExportImage & { port: InlinePort } {
  const img = openServedPath({ ...spec, cache: servingCache(spec.cache).engine });
  return {
    port: new InlinePort(img),
    monitor: syncImageMonitorTarget(img),
    close: async () => img.close(),
  };
}
