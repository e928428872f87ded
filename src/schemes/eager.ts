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
 * caches ping-pong after a snapshot; an L2 table copied away from is dropped after QEMU's three flushes
 * (refcount cache, L2 cache, L1 entry). It exists to attribute the gap to QEMU to its flush policy. A
 * decrement to 0 still waits for the next flush (a freed cluster must not be reused while a table on disk
 * points to it).
 */
import type { RefcountView } from "../engine/allocation/scheme-seam.js";
import type { FlushOrder } from "../engine/types.js";
import type { ClusterKind, RefcountScheme, SchemeDefinition, SchemeHost } from "./scheme.js";

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

  protected get refcounts(): RefcountView {
    return this.host.refcounts;
  }

  mayWriteInPlace(copied: boolean): boolean {
    return copied;
  }

  allocate(n: number): number {
    return this.refcounts.allocate(n);
  }

  referenced(): void {
    // QEMU's perform_cow marks the L2 cache depends_on_flush before the entry is linked, so a dependency
    // flush of the L2 cache here fsyncs the data just written first (the engine sets the flag right after).
    if (this.order === "qemu") this.host.order.refcountsBeforeL2AsQemu();
    else this.host.order.refcountsBeforeL2();
  }

  release(cluster: number, kind?: ClusterKind): void {
    if (this.order === "qemu" && this.releaseAsQemu(cluster, kind)) return;
    this.refcounts.releaseLater(cluster);
  }

  /**
   * QEMU's decrements: an L2 table copied away from (l2_allocate) is dropped after the refcount cache, the
   * L2 cache and the new L1 entry have been written and flushed; a data cluster copied away from is dropped
   * at once with the refcount cache made to depend on the L2 cache, once every L1 entry is on disk (the L2
   * table that no longer points to it must be reachable from the L1 on disk). False: defer as refcow does
   * (a decrement to 0, whose cluster must not be reused while a table on disk still points to it).
   */
  private releaseAsQemu(cluster: number, kind?: ClusterKind): boolean {
    const host = this.host;
    if (this.refcounts.get(cluster) <= 1) return false;
    if (kind === "l2") host.flushMetadata();
    else if (kind !== "data" || host.tables.dirtyL1.size > 0) return false;
    // As QEMU's update_refcount: the dependency first (its flush must not carry this decrement), then the change.
    host.order.l2BeforeRefcountsAsQemu();
    this.refcounts.change(cluster, -1);
    return true;
  }

  releaseNow(cluster: number, _kind?: ClusterKind): void {
    this.refcounts.change(cluster, -1);
  }

  close(): void {}
}

/** The default scheme; the only one that takes QEMU's flush order. */
export const EAGER_SCHEME: SchemeDefinition = { name: "eager", make: (_o, order) => new EagerScheme(order) };
