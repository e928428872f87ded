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
 *     the child, the rest are freed); refused with a clear error when it has more than one child.
 *
 * On disk (clean close only): standard refcounts are rebuilt from the tables, then the owner table and the node
 * tree are written past the end of the image (clusters that are free as far as refcounts go, so QEMU sees no
 * leak) and referenced from header extension 0x52434f57 ("RCOW"), with autoclear bit 32 set. A writer that
 * does not know the table (QEMU) clears the bit; refcow then rebuilds the table from the L1/L2 tables, with
 * snapshots it cannot place in the tree kept as "legacy" nodes (deleted by a scan of every view).
 *
 * Extension data, big-endian: u64 table offset, u32 table entries (one u32 owner per host cluster), u32 active
 * node, u32 node count, then per node: u32 id, u32 parent (0 = none), u32 flags (1 = legacy), u16 snapshot-id
 * length, the snapshot id (empty for the active node), padding to 4.
 */
import { performance } from "node:perf_hooks";
import { alignUp } from "../format/bytes.js";
import { AUTOCLEAR_REFCOW_OWNER } from "../format/features.js";
import { snapshotTableSize } from "../format/snapshot-table.js";
import { referenceCounts } from "../engine/check.js";
import { SnapshotError } from "../engine/errors.js";
import type { Qcow2Image } from "../engine/qcow2-image.js";
import {
  copyActiveL1,
  dropActiveVmState,
  findSnapshot,
  forEachReference,
  newEntry,
  recomputeCopied,
  replaceActiveL1,
  toInfo,
  writeSnapshotTable,
} from "../engine/snapshots.js";
import type { SnapshotCreateOptions, SnapshotInfo } from "../engine/types.js";
import type { ClusterKind, RefcountScheme, SchemeHost } from "./scheme.js";

export const EXT_REFCOW_OWNER = 0x52434f57;
const META = 0xffffffff;
const FLAG_LEGACY = 1;
/** Owner of clusters a rebuilt tree found shared by snapshots it could not place (no node has this id). */
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
  private owner = new Uint32Array(1024);
  private nodes = new Map<number, OwnerNode>();
  private active = 0;
  private freeIndex = 0;
  /** Highest cluster index ever handed out, plus one. */
  private allocatedEnd = 0;
  private pending: number[] = [];
  private readonly costs = { openMs: 0, openRebuilt: 0, closeMs: 0, mergedClusters: 0, freedClusters: 0 };

  private get img(): Qcow2Image {
    return this.host.image;
  }

  attach(host: SchemeHost): void {
    this.host = host;
    const t = performance.now();
    const img = host.image;
    host.markDirty();
    if (!(img.openedAutoclear & AUTOCLEAR_REFCOW_OWNER) || !this.load()) {
      this.build();
      this.costs.openRebuilt = 1;
    }
    // The table on disk is stale from now on; the header forgets it (the bit was already cleared).
    img.header.extensions = img.header.extensions.filter((e) => e.type !== EXT_REFCOW_OWNER);
    img.writeHeader();
    img.refcounts.usedBy = (c) => this.ownerOf(c) !== 0;
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
    const img = this.img;
    const cs = img.clusterSize;
    const range = (off: number, bytes: number) => {
      for (let c = Math.floor(off / cs); c < Math.ceil((off + bytes) / cs); c++) this.setOwner(c, META);
    };
    this.setOwner(0, META);
    range(img.header.l1TableOffset, img.l1.length * 8);
    range(img.refcounts.tableOffset, img.refcounts.tableClusters * cs);
    for (const b of img.refcounts.table) if (b) this.setOwner(b / cs, META);
    if (img.header.nbSnapshots) range(img.header.snapshotsOffset, snapshotTableSize(img.snapshots));
    for (const sn of img.snapshots) range(sn.l1TableOffset, sn.l1Size * 8);
  }

  /** Rebuilds ownership from the tables: clusters only the active layer uses are its own, shared ones legacy. */
  private build(): void {
    const img = this.img;
    this.owner = new Uint32Array(Math.max(1024, Math.ceil(img.file.size() / img.clusterSize)));
    this.nodes.clear();
    const legacy = LEGACY_OWNER;
    this.active = 2;
    this.nodes.set(this.active, { id: this.active, parent: 0, legacy: false, snapshot: "" });
    img.snapshots.forEach((sn, i) => this.nodes.set(3 + i, { id: 3 + i, parent: 0, legacy: true, snapshot: sn.id }));
    this.markMetadata();
    forEachReference(img, img.l1, (c) => this.setOwner(c, this.active));
    for (const sn of img.snapshots) {
      forEachReference(img, this.snapshotL1(sn.id), (c) => {
        if (this.ownerOf(c) !== META) this.setOwner(c, legacy);
      });
    }
  }

  /** Loads the owner table and node tree written at the last clean close. False when they do not fit. */
  private load(): boolean {
    const img = this.img;
    const ext = img.header.extensions.find((e) => e.type === EXT_REFCOW_OWNER);
    if (!ext || ext.data.length < 20) return false;
    const v = new DataView(ext.data.buffer, ext.data.byteOffset, ext.data.byteLength);
    const offset = Number(v.getBigUint64(0));
    const entries = v.getUint32(8);
    const active = v.getUint32(12);
    const count = v.getUint32(16);
    // The table was written inside the file (past the end of everything else): one that is not is damaged,
    // and its size must not be trusted for an allocation.
    if (offset % img.clusterSize || !Number.isSafeInteger(offset) || offset + entries * 4 > img.file.size()) return false;
    const nodes = new Map<number, OwnerNode>();
    let p = 20;
    const dec = new TextDecoder();
    for (let i = 0; i < count; i++) {
      if (p + 14 > ext.data.length) return false;
      const id = v.getUint32(p);
      const parent = v.getUint32(p + 4);
      const flags = v.getUint32(p + 8);
      const len = v.getUint16(p + 12);
      if (p + 14 + len > ext.data.length) return false;
      const snapshot = dec.decode(ext.data.subarray(p + 14, p + 14 + len));
      nodes.set(id, { id, parent, legacy: (flags & FLAG_LEGACY) !== 0, snapshot });
      p = alignUp(p + 14 + len, 4);
    }
    if (!this.treeIsSound(nodes, count, active)) return false;
    const raw = new Uint8Array(entries * 4);
    img.file.read(raw, offset, "owner");
    const table = new Uint32Array(Math.max(entries, 1024));
    const tv = new DataView(raw.buffer);
    for (let i = 0; i < entries; i++) table[i] = tv.getUint32(i * 4);
    // The table must agree with the counts it was written with (a clean close left them exact).
    const rc = img.refcounts;
    const clusters = Math.ceil(img.file.size() / img.clusterSize);
    for (let c = 0; c < Math.min(clusters, entries); c++) {
      if ((table[c] !== 0) !== (rc.get(c) !== 0)) return false;
      // Every owner is a node of the tree, metadata, or the legacy owner of shared clusters.
      if (table[c] !== 0 && table[c] !== META && table[c] !== LEGACY_OWNER && !nodes.has(table[c])) return false;
    }
    this.owner = table;
    this.nodes = nodes;
    this.active = active;
    return true;
  }

  /**
   * The node tree as loaded must be one the scheme could have written: distinct ids, the active node the only
   * one without a snapshot, one node per snapshot and none for a snapshot that does not exist, parents that
   * exist and no cycle. A damaged one is rebuilt from the tables instead.
   */
  private treeIsSound(nodes: Map<number, OwnerNode>, count: number, active: number): boolean {
    if (nodes.size !== count || nodes.has(0) || nodes.has(META) || nodes.has(LEGACY_OWNER)) return false;
    const activeNode = nodes.get(active);
    if (!activeNode || activeNode.snapshot !== "") return false;
    const ids = new Set(this.img.snapshots.map((sn) => sn.id));
    const seen = new Set<string>();
    for (const n of nodes.values()) {
      if (n.id === active) continue;
      if (!ids.has(n.snapshot) || seen.has(n.snapshot)) return false;
      seen.add(n.snapshot);
      if (n.parent !== 0 && !nodes.has(n.parent)) return false;
    }
    if (seen.size !== ids.size || (activeNode.parent !== 0 && !nodes.has(activeNode.parent))) return false;
    for (const start of nodes.values()) {
      let n: OwnerNode | undefined = start;
      for (let steps = 0; n && n.parent !== 0; steps++) {
        if (steps > nodes.size) return false; // a cycle
        n = nodes.get(n.parent);
      }
    }
    return true;
  }

  private snapshotL1(snapshotId: string): number[] {
    const img = this.img;
    const sn = img.snapshots.find((s) => s.id === snapshotId);
    if (!sn) return [];
    return img.readL1Table(sn.l1TableOffset, sn.l1Size, img.file.size(), `snapshot '${sn.name}' L1 table`).offsets;
  }

  mayWriteInPlace(_copied: boolean, hostCluster: number): boolean {
    return this.ownerOf(hostCluster) === this.active;
  }

  allocate(n: number, kind: ClusterKind): number {
    const id = kind === "meta" ? META : this.active;
    const img = this.img;
    let run = 0;
    // The allocation policy says where the search starts (first-fit: the lowest free cluster; append: the end).
    let c = img.allocPolicy.searchStart(this.freeIndex, () => Math.max(Math.ceil(img.file.size() / img.clusterSize), this.allocatedEnd));
    for (;; c++) {
      if (this.ownerOf(c) === 0) {
        if (++run === n) break;
      } else {
        run = 0;
      }
    }
    const start = c - n + 1;
    const inFile = Math.min(start + n, Math.ceil(img.file.size() / img.clusterSize));
    for (let i = start; i < inFile; i++) img.checkFree(i);
    for (let i = 0; i < n; i++) this.setOwner(start + i, id);
    if (start === this.freeIndex) this.freeIndex = start + n;
    if (start + n > this.allocatedEnd) this.allocatedEnd = start + n;
    return start * img.clusterSize;
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
    const img = this.img;
    if (!name) throw new SnapshotError("snapshot name must not be empty");
    this.checkWidth();
    const vmState = opts.vmState;
    if (vmState && vmState.length) img.writeGuest(img.vmStateOffset, vmState);
    img.flushMetadata();
    // The snapshot's copy of the active L1 table; no cluster count changes.
    const { l1Offset, l1Size } = copyActiveL1(img);
    const entry = newEntry(img, name, l1Offset, l1Size, opts);
    img.sync("l1");
    writeSnapshotTable(img, [...img.snapshots, entry]);
    // The active node freezes into the snapshot; a new child node becomes the active layer.
    const frozen = this.nodes.get(this.active)!;
    frozen.snapshot = entry.id;
    const child = this.newNodeId();
    this.nodes.set(child, { id: child, parent: frozen.id, legacy: false, snapshot: "" });
    this.active = child;
    if (vmState && vmState.length) dropActiveVmState(img);
    return toInfo(entry);
  }

  /**
   * Refcounts are written at close, so a snapshot that would push a count past the refcount width must be
   * refused now. A cluster is counted once per view (active layer and snapshots): only when there may be as
   * many views as the width can count is a scan needed; otherwise creation stays O(1).
   */
  private checkWidth(): void {
    const img = this.img;
    const max = img.refcounts.codec.max;
    if (img.snapshots.length + 2 <= max) return;
    const views = new Map<number, number>();
    const count = (c: number) => views.set(c, (views.get(c) ?? 0) + 1);
    forEachReference(img, img.l1, count);
    for (const sn of img.snapshots) forEachReference(img, this.snapshotL1(sn.id), count);
    const active = new Set<number>();
    forEachReference(img, img.l1, (c) => active.add(c));
    for (const c of active) {
      if ((views.get(c) ?? 0) + 1 > max) {
        throw new SnapshotError(`cannot create the snapshot: cluster ${c} would have more references than ${img.refcounts.codec.bits}-bit refcounts can hold (${max})`);
      }
    }
  }

  snapshotApply(idOrName: string): void {
    const img = this.img;
    const sn = findSnapshot(img, idOrName);
    const node = [...this.nodes.values()].find((n) => n.snapshot === sn.id)!;
    replaceActiveL1(img, sn);
    // The old active layer is discarded: its own clusters are free now that nothing on disk points to them.
    const old = this.active;
    for (let c = 0; c < this.owner.length; c++) if (this.owner[c] === old) this.setOwner(c, 0);
    this.nodes.delete(old);
    const child = this.newNodeId();
    this.nodes.set(child, { id: child, parent: node.id, legacy: false, snapshot: "" });
    this.active = child;
  }

  snapshotDelete(idOrName: string): void {
    const img = this.img;
    const sn = findSnapshot(img, idOrName);
    const node = [...this.nodes.values()].find((n) => n.snapshot === sn.id)!;
    const children = [...this.nodes.values()].filter((n) => n.parent === node.id);
    if (children.length > 1) {
      const names = children.map((c) => (c.snapshot ? `snapshot '${img.snapshots.find((s) => s.id === c.snapshot)?.name ?? c.snapshot}'` : "the active layer"));
      throw new SnapshotError(
        `cannot delete snapshot '${sn.name}' with the owner scheme: it has ${children.length} children (${names.join(", ")}); a snapshot can only be merged into its only child`,
      );
    }
    img.flushMetadata();
    const snL1 = this.snapshotL1(sn.id);
    writeSnapshotTable(img, img.snapshots.filter((s) => s !== sn));
    const cs = img.clusterSize;
    for (let i = 0; i < Math.ceil((sn.l1Size * 8) / cs); i++) this.setOwner(sn.l1TableOffset / cs + i, 0);
    if (node.legacy) {
      this.deleteLegacy(snL1);
      if (children[0]) children[0].parent = node.parent;
    } else {
      const child = children[0];
      const keep = new Set<number>();
      if (child) {
        const childL1 = child.snapshot ? this.snapshotL1(child.snapshot) : img.l1;
        forEachReference(img, childL1, (c) => keep.add(c));
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

  /** A snapshot whose place in the tree is unknown: free what no other view references. */
  private deleteLegacy(snL1: number[]): void {
    const img = this.img;
    const others = new Set<number>();
    forEachReference(img, img.l1, (c) => others.add(c));
    for (const sn of img.snapshots) forEachReference(img, this.snapshotL1(sn.id), (c) => others.add(c));
    forEachReference(img, snL1, (c) => {
      if (!others.has(c) && this.ownerOf(c) !== META && this.ownerOf(c) !== this.active) {
        this.setOwner(c, 0);
        this.costs.freedClusters++;
      }
    });
  }

  report(): Record<string, number> {
    return { ...this.costs };
  }

  close(): void {
    const img = this.img;
    const cs = img.clusterSize;
    const t = performance.now();
    img.refcounts.usedBy = null;
    // Standard refcounts and COPIED flags, rebuilt from the tables.
    img.refcounts.rebuild(referenceCounts(img));
    recomputeCopied(img);
    img.flushMetadata();
    img.refcounts.cache.writeDirty();
    this.host.markClean();
    // The owner table as of now: refcount structures moved, and only clusters something references are owned.
    const counts = referenceCounts(img);
    const end = Math.max(counts.length, Math.ceil(img.file.size() / cs));
    const table = new Uint8Array(end * 4);
    const tv = new DataView(table.buffer);
    for (let c = 0; c < end; c++) {
      const o = c < counts.length && counts[c] > 0 ? this.ownerOf(c) || META : 0;
      tv.setUint32(c * 4, o);
    }
    const offset = alignUp(Math.max(img.file.size(), end * cs), cs);
    img.file.write(table, offset, "owner");
    img.sync("owner");
    const enc = new TextEncoder();
    const ext = new Uint8Array(20 + [...this.nodes.values()].reduce((a, n) => a + alignUp(14 + enc.encode(n.snapshot).length, 4), 0));
    const v = new DataView(ext.buffer);
    v.setBigUint64(0, BigInt(offset));
    v.setUint32(8, end);
    v.setUint32(12, this.active);
    v.setUint32(16, this.nodes.size);
    let p = 20;
    for (const n of this.nodes.values()) {
      const id = enc.encode(n.snapshot);
      v.setUint32(p, n.id);
      v.setUint32(p + 4, n.parent);
      v.setUint32(p + 8, n.legacy ? FLAG_LEGACY : 0);
      v.setUint16(p + 12, id.length);
      ext.set(id, p + 14);
      p = alignUp(p + 14 + id.length, 4);
    }
    img.header.extensions = img.header.extensions.filter((e) => e.type !== EXT_REFCOW_OWNER);
    img.header.extensions.push({ type: EXT_REFCOW_OWNER, data: ext });
    img.header.autoclearFeatures |= AUTOCLEAR_REFCOW_OWNER;
    img.writeHeader();
    this.costs.closeMs = performance.now() - t;
  }
}
