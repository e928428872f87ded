/**
 * `lazy-count`: on-disk refcounts count only references from snapshots and from metadata; the active layer
 * counts 0. Which clusters the active layer uses (its L2 tables and data) is an in-memory bitmap built at open
 * by scanning the active L2 tables.
 *
 *   - guest write: in place iff the cluster's count is 0 (nothing but the active layer references it), else
 *     COW into a fresh cluster marked in the bitmap. No refcount is written on the write path, ever.
 *   - free cluster: count 0 and not in the bitmap.
 *   - snapshot create: +1 on every cluster the active layer reaches (the new snapshot's references), as eager.
 *   - snapshot apply: the new active L1 is written, then the bitmap is rebuilt from it; no count changes.
 *   - snapshot delete: -1 on the snapshot's clusters.
 *
 * While open the counts are not standard qcow2 counts, so the dirty bit stays set: a crash leaves an image
 * that QEMU or refcow rebuilds from the L1/L2 tables. A clean close converts back (+1 per active reference,
 * COPIED flags recomputed) and clears the bit; the conversion's cost (both ways) is reported.
 */
import { performance } from "node:perf_hooks";
import type { ClusterKind, RefcountScheme, SchemeDefinition, SchemeHost } from "./scheme.js";

export class LazyCountScheme implements RefcountScheme {
  readonly name = "lazy-count";
  readonly flushesRefcounts = true;
  readonly keepsDirty: boolean = true;
  readonly maintainsCopied = false;
  private host!: SchemeHost;
  /** Drops the refcount subscription taken at attach. */
  private unsubscribe: () => void = () => {};
  /** One byte per host cluster: 1 = referenced by the active layer. */
  private active = new Uint8Array(1024);
  /** Active-layer references dropped by tables not yet on disk. */
  private pending: number[] = [];
  private costs = { openConvertMs: 0, openConvertClusters: 0, closeConvertMs: 0, closeConvertClusters: 0 };

  attach(host: SchemeHost): void {
    this.host = host;
    const t = performance.now();
    host.markDirty();
    // Standard counts → lazy-count: the active layer's references come off the on-disk counts.
    let n = 0;
    host.snapshots.forEachReference(host.tables.l1, (c) => {
      this.mark(c, true);
      host.refcounts.change(c, -1);
      n++;
    });
    this.unsubscribe = host.refcounts.subscribe({ inUse: (c) => c < this.active.length && this.active[c] === 1 });
    host.flushMetadata();
    this.costs.openConvertMs = performance.now() - t;
    this.costs.openConvertClusters = n;
  }

  private mark(c: number, used: boolean): void {
    if (c >= this.active.length) {
      let len = this.active.length;
      while (len <= c) len *= 2;
      const next = new Uint8Array(len);
      next.set(this.active);
      this.active = next;
    }
    this.active[c] = used ? 1 : 0;
  }

  mayWriteInPlace(_copied: boolean, hostCluster: number): boolean {
    return this.host.refcounts.get(hostCluster) === 0;
  }

  allocate(n: number, kind: ClusterKind): number {
    const rc = this.host.refcounts;
    if (kind === "meta") return rc.allocate(n);
    return rc.allocate(n, (start, count) => {
      for (let i = 0; i < count; i++) this.mark(start + i, true);
    });
  }

  referenced(): void {}

  uncountedReferences(cluster: number): number {
    return cluster < this.active.length ? this.active[cluster] : 0;
  }

  release(cluster: number, kind: ClusterKind): void {
    if (kind === "meta") this.host.refcounts.releaseLater(cluster);
    else this.pending.push(cluster);
  }

  releaseNow(cluster: number, kind: ClusterKind): void {
    if (kind === "meta") this.host.refcounts.change(cluster, -1);
    else this.unmark(cluster);
  }

  afterFlush(): void {
    const p = this.pending;
    this.pending = [];
    for (const c of p) this.unmark(c);
  }

  /** The active layer no longer uses `c`; with no snapshot reference left, it is free. */
  private unmark(c: number): void {
    this.mark(c, false);
    const rc = this.host.refcounts;
    if (rc.get(c) === 0) rc.noteFreed(c);
  }

  snapshotApply(idOrName: string): void {
    const { snapshots, refcounts, tables } = this.host;
    const sn = snapshots.find(idOrName);
    const snL1 = snapshots.readL1(sn);
    // The new active layer's references will be counted at close: they must fit then.
    snapshots.ensureHeadroom(snL1.slice(0, snapshots.diskL1Entries()), "apply the snapshot");
    snapshots.replaceActiveL1(sn);
    // Only now may the old active layer's clusters be reused.
    const old = this.active;
    this.active = new Uint8Array(old.length);
    snapshots.forEachReference(tables.l1, (c) => this.mark(c, true));
    for (let c = 0; c < old.length; c++) if (old[c] && !this.active[c] && refcounts.get(c) === 0) refcounts.noteFreed(c);
  }

  report(): Record<string, number> {
    return { ...this.costs };
  }

  close(): void {
    const host = this.host;
    const t = performance.now();
    let n = 0;
    host.snapshots.forEachReference(host.tables.l1, (c) => {
      host.refcounts.change(c, +1);
      n++;
    });
    this.unsubscribe();
    host.snapshots.recomputeCopied();
    host.flushMetadata();
    host.refcounts.cache.writeDirty();
    this.host.markClean();
    this.costs.closeConvertMs = performance.now() - t;
    this.costs.closeConvertClusters = n;
  }
}

export const LAZY_COUNT_SCHEME: SchemeDefinition = { name: "lazy-count", make: () => new LazyCountScheme() };
