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
import { EagerScheme } from "./eager.js";
import type { SchemeDefinition } from "./scheme.js";

export class LazyScheme extends EagerScheme {
  override readonly name = "lazy";
  override readonly flushesRefcounts = false;
  override readonly keepsDirty = true;

  override referenced(): void {
    this.host.markDirty();
  }

  override close(): void {
    this.refcounts.cache.writeDirty();
    this.host.markClean();
  }
}

export const LAZY_SCHEME: SchemeDefinition = { name: "lazy", make: () => new LazyScheme() };
