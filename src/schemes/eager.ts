/**
 * `eager`: standard qcow2 refcounts kept exact on disk, with QEMU's ordering rules and no more flushes than
 * they need:
 *  - refcount block before the L2 entry that uses a new cluster (the L2 cache depends on the refcount cache);
 *  - L2 entry before the decrement of the cluster it drops (decrements are deferred until the tables that
 *    dropped the reference have been flushed, instead of ping-ponging the two caches as QEMU 7.2 does);
 *  - COW data before the L2 entry (the L2 cache flushes first when it holds entries pointing to copies).
 *
 * With `order: "qemu"` (`--order qemu`) it keeps the same rules the way QEMU 7.2 does instead: a decrement
 * that leaves the cluster in use is applied at once and makes the refcount cache depend on the L2 cache,
 * and each dependency is stated with QEMU's flushing rule (MetadataCache.setDependencyAsQemu), so the two
 * caches ping-pong after a snapshot. It exists to attribute the gap to QEMU to its flush policy. A decrement
 * to 0 still waits for the flush (the freed cluster must not be reused while a table on disk points to it).
 */
import type { RefcountStore } from "../engine/refcounts.js";
import type { FlushOrder } from "../engine/types.js";
import type { ClusterKind, RefcountScheme, SchemeHost } from "./scheme.js";

export class EagerScheme implements RefcountScheme {
  readonly name: string = "eager";
  readonly flushesRefcounts: boolean = true;
  readonly keepsDirty: boolean = false;
  readonly maintainsCopied = true;
  protected host!: SchemeHost;

  constructor(readonly order: FlushOrder = "refcow") {}

  attach(host: SchemeHost): void {
    this.host = host;
  }

  protected get refcounts(): RefcountStore {
    return this.host.image.refcounts;
  }

  mayWriteInPlace(copied: boolean): boolean {
    return copied;
  }

  allocate(n: number): number {
    return this.refcounts.allocate(n);
  }

  referenced(): void {
    const img = this.host.image;
    if (this.order === "qemu") {
      // QEMU's perform_cow marks the L2 cache depends_on_flush before the entry is linked, so a dependency
      // flush of the L2 cache here fsyncs the data just written first (the engine sets the flag right after).
      img.l2Cache.flushBeforeWrite = true;
      img.l2Cache.setDependencyAsQemu(img.refcounts.cache);
    } else img.l2Cache.dependsOn = img.refcounts.cache;
  }

  release(cluster: number, _kind?: ClusterKind): void {
    if (this.order === "qemu" && this.refcounts.get(cluster) > 1) {
      this.refcounts.change(cluster, -1);
      this.refcounts.cache.setDependencyAsQemu(this.host.image.l2Cache);
    } else this.refcounts.releaseLater(cluster);
  }

  releaseNow(cluster: number, _kind?: ClusterKind): void {
    this.refcounts.change(cluster, -1);
  }

  close(): void {}
}
