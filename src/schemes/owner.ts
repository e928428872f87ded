/**
 * `owner`: an owner table is the truth while the image is open; refcounts are left stale (dirty bit set).
 *
 *   owner[c] = 0 free | META image metadata | a node id. Nodes form a tree: every snapshot is a read-only node,
 *   the active layer is the one writable node. A node references what its parent referenced when it was
 *   created, minus what it has since replaced: so a cluster is owned by the highest node that references it.
 *
 *   - guest write: in place iff owner == active node, else allocate a cluster owned by the active node (COW).
 *     No refcount or owner-table write on the write path; a dropped cluster is freed iff the active node owns it.
 *   - snapshot create: O(1) in clusters: the active node becomes the snapshot's read-only node and a new child
 *     node becomes active (the L1 table is copied for the snapshot entry).
 *   - snapshot apply: the old active node's clusters are freed, a new child of the snapshot's node is active.
 *   - snapshot delete: the node merges into its only child (its clusters the child still references pass to
 *     the child, the rest are freed); refused with a clear error when it has more than one child. A "legacy"
 *     node (below) is deleted by a scan of every view instead: what no other view references is freed, and
 *     what only the active layer still references passes to the active node.
 *
 * Nothing of the scheme is persisted: the table and the tree live in memory, are built at every writable open
 * from the L1/L2 tables (as lazy-count builds its bitmap), and a clean close leaves plain qcow2 (standard
 * refcounts rebuilt from the tables, COPIED flags recomputed, dirty bit cleared; no feature bit, no extension).
 * The build: metadata is META; a cluster the active layer alone references once is the active node's; one a
 * snapshot (or the active layer twice) references is owned by LEGACY_OWNER, so a write to it copies; every
 * snapshot becomes a legacy node whose place in the tree is not known.
 *
 * Why not persist: the earlier format kept the table and tree past the end of the image behind an autoclear
 * bit, and `qemu-img check -r` (QEMU 7.2) drops every internal snapshot of an image with an autoclear bit it
 * does not know (an open for check does not read the snapshot table; clearing the bit rewrites the header with
 * none). Without the bit, whatever is persisted survives QEMU's writes unchanged (QEMU keeps unknown header
 * extensions and snapshot entries' extra data) and must be proved current before use: for the table, that is
 * the same walk of every view's L2 tables the build does; for the tree (which snapshot descends from which,
 * storable in the entries' extra data), that every cluster's referencing views form a subtree rooted at its
 * owner, again a walk of every view. The tree buys one thing, a delete that reads the child's view instead of
 * every view, and costs the refusal of a delete with two children: not worth a format. The build's cost is one
 * read of every L2 table of every view at open (the `openMs` and `openClusters` of report()): on a 1 GiB image
 * written in full with 4 snapshots, about 23 ms with 64 KiB clusters and 0.4 s with 4 KiB clusters, where
 * loading and validating the earlier format's table took about 20 ms and 0.9 s (src/bench/owner-open.ts).
 *
 * Images the earlier format left (autoclear bit 32, extension 0x52434f57 "RCOW", the table in clusters past
 * the end that refcounts call free) open under every scheme: the engine clears the bit (as any autoclear bit
 * it does not maintain) and the recovery below drops the extension at any writable open, the table's clusters are free space, and nothing reads them.
 */
import { performance } from "node:perf_hooks";
import { snapshotTableSize } from "../format/snapshot-table.js";
import { SnapshotError } from "../format/errors.js";
import type { SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";
import type { ClusterKind, RefcountScheme, SchemeDefinition, SchemeHost } from "./scheme.js";

const META = 0xffffffff;
/** Owner of clusters the build found shared by snapshots it could not place (no node has this id). */
const LEGACY_OWNER = 1;

interface OwnerNode {
  id: number;
  parent: number;
  legacy: boolean;
  /** Snapshot table id for a snapshot node; "" for the active node. */
  snapshot: string;
}

export class OwnerScheme implements RefcountScheme {
  readonly name = "owner";
  readonly flushesRefcounts = false;
  readonly keepsDirty = true;
  readonly maintainsCopied = false;
  private host!: SchemeHost;
  /** Drops the refcount subscription taken at attach. */
  private unsubscribe: () => void = () => {};
  private owner = new Uint32Array(1024);
  private nodes = new Map<number, OwnerNode>();
  private active = 0;
  private freeIndex = 0;
  /** Highest cluster index ever handed out, plus one. */
  private allocatedEnd = 0;
  private pending: number[] = [];
  /** A lower bound of the file's length in clusters (see allocate). */
  private fileClustersSeen = 0;
  private readonly costs = { openMs: 0, openClusters: 0, closeMs: 0, mergedClusters: 0, freedClusters: 0 };


  attach(host: SchemeHost): void {
    this.host = host;
    const t = performance.now();
    host.markDirty();
    this.build();
    this.unsubscribe = host.refcounts.subscribe({ inUse: (c) => this.ownerOf(c) !== 0 });
    this.costs.openMs = performance.now() - t;
  }

  private ownerOf(c: number): number {
    return c < this.owner.length ? this.owner[c] : 0;
  }

  private setOwner(c: number, id: number): void {
    if (c >= this.owner.length) {
      let n = this.owner.length;
      while (n <= c) n *= 2;
      const next = new Uint32Array(n);
      next.set(this.owner);
      this.owner = next;
    }
    this.owner[c] = id;
    if (id === 0 && c < this.freeIndex) this.freeIndex = c;
  }

  private newNodeId(): number {
    let max = 1;
    for (const id of this.nodes.keys()) max = Math.max(max, id);
    return max + 1;
  }

  /** Metadata clusters (header, tables) and their owner: META. */
  private markMetadata(): void {
    const { header, tables, refcounts, snapshots, clusterSize: cs } = this.host;
    const range = (off: number, bytes: number) => {
      for (let c = Math.floor(off / cs); c < Math.ceil((off + bytes) / cs); c++) this.setOwner(c, META);
    };
    this.setOwner(0, META);
    range(header.l1TableOffset, tables.l1.length * 8);
    range(refcounts.tableOffset, refcounts.tableClusters * cs);
    for (const b of refcounts.table) if (b) this.setOwner(b / cs, META);
    const list = snapshots.list();
    if (header.nbSnapshots) range(header.snapshotsOffset, snapshotTableSize(list));
    for (const sn of list) range(sn.l1TableOffset, sn.l1Size * 8);
    this.host.forEachBitmapCluster((c) => this.setOwner(c, META));
  }

  /**
   * Builds ownership from the tables: a cluster the active layer alone references, once, is its own; one a
   * snapshot or a second active reference shares is legacy (a write to it copies); metadata is META.
   */
  private build(): void {
    const host = this.host;
    const views = host.snapshots;
    this.owner = new Uint32Array(Math.max(1024, Math.ceil(host.file.size() / host.clusterSize)));
    this.nodes.clear();
    this.active = 2;
    this.nodes.set(this.active, { id: this.active, parent: 0, legacy: false, snapshot: "" });
    views.list().forEach((sn, i) => this.nodes.set(3 + i, { id: 3 + i, parent: 0, legacy: true, snapshot: sn.id }));
    this.markMetadata();
    let n = 0;
    views.forEachReference(host.tables.l1, (c) => {
      n++;
      const o = this.ownerOf(c);
      if (o !== META) this.setOwner(c, o === this.active ? LEGACY_OWNER : this.active);
    });
    for (const sn of views.list()) {
      views.forEachReference(this.snapshotL1(sn.id), (c) => {
        n++;
        if (this.ownerOf(c) !== META) this.setOwner(c, LEGACY_OWNER);
      });
    }
    this.costs.openClusters = n;
  }

  private snapshotL1(snapshotId: string): number[] {
    const views = this.host.snapshots;
    const sn = views.list().find((s) => s.id === snapshotId);
    if (!sn) return [];
    return views.readL1(sn);
  }

  mayWriteInPlace(_copied: boolean, hostCluster: number): boolean {
    return this.ownerOf(hostCluster) === this.active;
  }

  allocate(n: number, kind: ClusterKind): number {
    const id = kind === "meta" ? META : this.active;
    const host = this.host;
    const cs = host.clusterSize;
    let run = 0;
    // The allocation policy says where the search starts (first-fit: the lowest free cluster; append: the end).
    let c = host.allocPolicy.searchStart(this.freeIndex, () => Math.max(Math.ceil(host.file.size() / cs), this.allocatedEnd));
    for (;; c++) {
      if (this.ownerOf(c) === 0) {
        if (++run === n) break;
      } else {
        run = 0;
      }
    }
    const start = c - n + 1;
    // The file never shrinks while the image is open: its length is asked again only past the one seen last.
    if (start + n > this.fileClustersSeen) this.fileClustersSeen = Math.ceil(host.file.size() / cs);
    const inFile = Math.min(start + n, this.fileClustersSeen);
    for (let i = start; i < inFile; i++) host.checkFree(i);
    for (let i = 0; i < n; i++) this.setOwner(start + i, id);
    if (start === this.freeIndex) this.freeIndex = start + n;
    if (start + n > this.allocatedEnd) this.allocatedEnd = start + n;
    return start * cs;
  }

  referenced(): void {}

  release(cluster: number, kind: ClusterKind): void {
    const o = this.ownerOf(cluster);
    // Only what the active node (or metadata) owns is freed; a snapshot's cluster stays with the snapshot.
    if (o === this.active || (kind === "meta" && o === META)) this.pending.push(cluster);
  }

  releaseNow(cluster: number, kind: ClusterKind): void {
    const o = this.ownerOf(cluster);
    if (o === this.active || (kind === "meta" && o === META)) this.setOwner(cluster, 0);
  }

  afterFlush(): void {
    const p = this.pending;
    this.pending = [];
    for (const c of p) this.setOwner(c, 0);
  }

  snapshotCreate(name: string, opts: SnapshotCreateOptions): SnapshotInfo {
    const host = this.host;
    const views = host.snapshots;
    if (!name) throw new SnapshotError("snapshot name must not be empty");
    this.checkWidth();
    const vmState = opts.vmState;
    if (vmState && vmState.length) views.writeVmState(vmState);
    host.flushMetadata();
    // The snapshot's copy of the active L1 table; no cluster count changes.
    const { l1Offset, l1Size } = views.copyActiveL1();
    const entry = views.newEntry(name, l1Offset, l1Size, opts);
    host.order.sync("l1");
    views.writeTable([...views.list(), entry]);
    // The active node freezes into the snapshot; a new child node becomes the active layer.
    const frozen = this.nodes.get(this.active)!;
    frozen.snapshot = entry.id;
    const child = this.newNodeId();
    this.nodes.set(child, { id: child, parent: frozen.id, legacy: false, snapshot: "" });
    this.active = child;
    if (vmState && vmState.length) views.dropActiveVmState();
    return views.toInfo(entry);
  }

  /**
   * Refcounts are written at close, so a snapshot that would push a count past the refcount width must be
   * refused now. A cluster is counted once per view (active layer and snapshots): only when there may be as
   * many views as the width can count is a scan needed; otherwise creation stays O(1).
   */
  private checkWidth(): void {
    const { refcounts, snapshots: tools, tables } = this.host;
    const max = refcounts.codec.max;
    if (tools.list().length + 2 <= max) return;
    const views = new Map<number, number>();
    const count = (c: number) => views.set(c, (views.get(c) ?? 0) + 1);
    tools.forEachReference(tables.l1, count);
    for (const sn of tools.list()) tools.forEachReference(this.snapshotL1(sn.id), count);
    const active = new Set<number>();
    tools.forEachReference(tables.l1, (c) => active.add(c));
    for (const c of active) {
      if ((views.get(c) ?? 0) + 1 > max) {
        throw new SnapshotError(`cannot create the snapshot: cluster ${c} would have more references than ${refcounts.codec.bits}-bit refcounts can hold (${max})`);
      }
    }
  }

  snapshotApply(idOrName: string): void {
    const views = this.host.snapshots;
    const sn = views.find(idOrName);
    const node = [...this.nodes.values()].find((n) => n.snapshot === sn.id)!;
    views.replaceActiveL1(sn);
    // The old active layer is discarded: its own clusters are free now that nothing on disk points to them.
    const old = this.active;
    for (let c = 0; c < this.owner.length; c++) if (this.owner[c] === old) this.setOwner(c, 0);
    this.nodes.delete(old);
    const child = this.newNodeId();
    this.nodes.set(child, { id: child, parent: node.id, legacy: false, snapshot: "" });
    this.active = child;
  }

  snapshotDelete(idOrName: string): void {
    const host = this.host;
    const views = host.snapshots;
    const sn = views.find(idOrName);
    const node = [...this.nodes.values()].find((n) => n.snapshot === sn.id)!;
    const children = [...this.nodes.values()].filter((n) => n.parent === node.id);
    if (children.length > 1) {
      const names = children.map((c) => (c.snapshot ? `snapshot '${views.list().find((s) => s.id === c.snapshot)?.name ?? c.snapshot}'` : "the active layer"));
      throw new SnapshotError(
        `cannot delete snapshot '${sn.name}' with the owner scheme: it has ${children.length} children (${names.join(", ")}); a snapshot can only be merged into its only child`,
      );
    }
    host.flushMetadata();
    const snL1 = this.snapshotL1(sn.id);
    views.writeTable(views.list().filter((s) => s !== sn));
    const cs = host.clusterSize;
    for (let i = 0; i < Math.ceil((sn.l1Size * 8) / cs); i++) this.setOwner(sn.l1TableOffset / cs + i, 0);
    if (node.legacy) {
      this.deleteLegacy(snL1);
      if (children[0]) children[0].parent = node.parent;
    } else {
      const child = children[0];
      const keep = new Set<number>();
      if (child) {
        const childL1 = child.snapshot ? this.snapshotL1(child.snapshot) : host.tables.l1;
        views.forEachReference(childL1, (c) => keep.add(c));
        child.parent = node.parent;
      }
      for (let c = 0; c < this.owner.length; c++) {
        if (this.owner[c] !== node.id) continue;
        if (child && keep.has(c)) {
          this.owner[c] = child.id;
          this.costs.mergedClusters++;
        } else {
          this.setOwner(c, 0);
          this.costs.freedClusters++;
        }
      }
    }
    this.nodes.delete(node.id);
  }

  /**
   * A snapshot whose place in the tree is unknown: what no other view references is freed, and what only the
   * active layer still references (once) passes to the active node, so the next write to it is in place.
   */
  private deleteLegacy(snL1: number[]): void {
    const views = this.host.snapshots;
    const inSnapshots = new Set<number>();
    for (const sn of views.list()) views.forEachReference(this.snapshotL1(sn.id), (c) => inSnapshots.add(c));
    const inActive = new Map<number, number>();
    views.forEachReference(this.host.tables.l1, (c) => inActive.set(c, (inActive.get(c) ?? 0) + 1));
    views.forEachReference(snL1, (c) => {
      const o = this.ownerOf(c);
      if (o === META || o === this.active || o === 0 || inSnapshots.has(c)) return;
      const refs = inActive.get(c) ?? 0;
      if (refs === 0) {
        this.setOwner(c, 0);
        this.costs.freedClusters++;
      } else if (refs === 1 && o === LEGACY_OWNER) {
        this.setOwner(c, this.active);
        this.costs.mergedClusters++;
      }
    });
  }

  report(): Record<string, number> {
    return { ...this.costs };
  }

  close(): void {
    const host = this.host;
    const t = performance.now();
    this.unsubscribe();
    // Standard refcounts and COPIED flags, rebuilt from the tables.
    host.refcounts.rebuild(host.referenceCounts());
    host.snapshots.recomputeCopied();
    host.flushMetadata();
    host.refcounts.cache.writeDirty();
    this.host.markClean();
    this.costs.closeMs = performance.now() - t;
  }
}

/**
 * refcow's owner table as an earlier refcow left it at a clean close ("RCOW": u64 table offset, u32 entries,
 * the node tree), meaningful only while autoclear bit 32 was set. Nothing reads it now; a writable open drops it.
 */
export const EXT_REFCOW_OWNER_LEGACY = 0x52434f57;
/** The autoclear bit an earlier refcow set at a clean close of an owner image. Never set now. */
export const AUTOCLEAR_REFCOW_OWNER_LEGACY = 1n << 32n;

export const OWNER_SCHEME: SchemeDefinition = {
  name: "owner",
  make: () => new OwnerScheme(),
  extensions: [{ type: EXT_REFCOW_OWNER_LEGACY, name: "refcow owner table (legacy)" }],
  ioPurposes: [{ purpose: "owner", costGroup: "refcount/owner/journal metadata" }],
  recovery: {
    afterLoad(host) {
      // The earlier format's table, vouched for by the autoclear bit the open just cleared: dead from now on.
      const h = host.header;
      if (!h.extensions.some((e) => e.type === EXT_REFCOW_OWNER_LEGACY)) return;
      h.extensions = h.extensions.filter((e) => e.type !== EXT_REFCOW_OWNER_LEGACY);
      host.writeHeader();
    },
  },
};
