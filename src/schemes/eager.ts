/**
 * `eager`: standard qcow2 refcounts kept exact on disk, with QEMU's ordering rules and no more flushes than
 * they need:
 *  - refcount block before the L2 entry that uses a new cluster (the L2 cache depends on the refcount cache);
 *  - L2 entry before the decrement of the cluster it drops (decrements are deferred until the tables that
 *    dropped the reference have been flushed, instead of ping-ponging the two caches as QEMU 7.2 does);
 *  - COW data before the L2 entry (the L2 cache flushes first when it holds entries pointing to copies).
 */
import type { RefcountStore } from "../engine/refcounts.js";
import type { ClusterKind, RefcountScheme, SchemeHost } from "./scheme.js";

export class EagerScheme implements RefcountScheme {
  readonly name: string = "eager";
  readonly flushesRefcounts: boolean = true;
  readonly keepsDirty: boolean = false;
  readonly maintainsCopied = true;
  protected host!: SchemeHost;

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
    img.l2Cache.dependsOn = img.refcounts.cache;
  }

  release(cluster: number, _kind?: ClusterKind): void {
    this.refcounts.releaseLater(cluster);
  }

  releaseNow(cluster: number, _kind?: ClusterKind): void {
    this.refcounts.change(cluster, -1);
  }

  close(): void {}
}
