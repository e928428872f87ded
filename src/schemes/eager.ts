/**
 * `eager`: standard qcow2 refcounts kept exact on disk, with QEMU's ordering rules and no more flushes than
 * they need:
 *  - refcount block before the L2 entry that uses a new cluster (the L2 cache depends on the refcount cache);
 *  - L2 entry before the decrement of the cluster it drops (decrements are deferred until the metadata that
 *    dropped the reference has been flushed, instead of ping-ponging the two caches as QEMU 7.2 does);
 *  - COW data before the L2 entry (data writes precede the refcount flush that precedes any L2 write).
 */
import type { RefcountScheme, SchemeHost } from "./scheme.js";

export class EagerScheme implements RefcountScheme {
  readonly name = "eager";
  readonly flushesRefcounts = true;
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
    this.host.l2Cache.dependsOn = this.host.refcounts.cache;
  }

  release(cluster: number): void {
    this.host.refcounts.releaseLater(cluster);
  }

  releaseNow(cluster: number): void {
    this.host.refcounts.change(cluster, -1);
  }

  close(): void {}
}
