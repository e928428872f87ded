/**
 * `lazy`: QEMU's lazy_refcounts. Refcount changes stay in the refcount cache; a flush writes data and L2/L1
 * tables but not refcount blocks, so a guest write never waits for a refcount block. Before the first table
 * that references a cluster with a stale on-disk count is written, the header's dirty bit is set (one
 * synchronous header write per open); a clean close writes the refcount blocks and clears it. An image left
 * dirty is rebuilt from its L1/L2 tables at the next writable open, by refcow or by QEMU.
 *
 * Ordering kept: COW data before the L2 entry that points to it; decrements still wait for the tables that
 * dropped the reference to be flushed, so a freed cluster is never reused while an on-disk table points to it.
 */
import type { RefcountScheme, SchemeHost } from "./scheme.js";

export class LazyScheme implements RefcountScheme {
  readonly name = "lazy";
  readonly flushesRefcounts = false;
  private host!: SchemeHost;

  attach(host: SchemeHost): void {
    this.host = host;
  }

  mayWriteInPlace(copied: boolean): boolean {
    return copied;
  }

  allocate(n: number): number {
    return this.host.refcounts.allocate(n);
  }

  referenced(): void {
    this.host.markDirty();
  }

  release(cluster: number): void {
    this.host.refcounts.releaseLater(cluster);
  }

  releaseNow(cluster: number): void {
    this.host.refcounts.change(cluster, -1);
  }

  close(): void {
    const rc = this.host.refcounts;
    rc.cache.writeDirty();
    this.host.markClean();
  }
}
