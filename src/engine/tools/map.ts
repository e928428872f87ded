/**
 * Allocation map of the virtual disk (qemu-img map): for each range, where its data comes from (depth in the
 * backing chain), whether it is allocated, reads as zero, holds data, and at which host offset.
 *
 * Holes in the image file, as QEMU reports them (block/io.c bdrv_co_block_status, qcow2.c
 * qcow2_co_block_status, qcow2-refcount.c qcow2_detect_metadata_preallocation): a data cluster is also
 * reported as zero where the file has a hole under it (SEEK_DATA/SEEK_HOLE) or ends before it — but only
 * when the image "looks metadata-preallocated": at least max(⌊allocated/cs⌋·10/9, ⌊allocated/cs⌋ + 2)
 * clusters of the file have a non-zero refcount, allocated being the bytes the file occupies (st_blocks).
 * A file whose untouched cluster parts are holes qualifies; one whose zeroes were allocated (fallocate
 * ZERO_RANGE, as QEMU itself zeroes) mostly does not, and QEMU then reports data throughout.
 *
 * Also the allocation depth of each range (the NBD context qemu:allocation-depth): which layer of the chain
 * maps it, counting from 1 for the image itself, 0 where no layer does (allocationDepthRuns).
 */
import { ClusterType } from "../../format/l1l2.js";
import type { BlockFile } from "../../io/block-file.js";
import type { ImageCore } from "../image-core.js";
import type { SyncDisk } from "../../disk/sync-disk.js";
import type { MapExtent } from "../types.js";

interface Status {
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  compressed: boolean;
  offset?: number;
}

/** Something in a backing chain that can report block status (qcow2 images and raw files). */
export interface BlockStatusSource extends SyncDisk {
  blockStatus(offset: number, length: number, depth: number): { status: Status; length: number };
}

function isStatusSource(d: SyncDisk | null): d is BlockStatusSource {
  return !!d && typeof (d as Partial<BlockStatusSource>).blockStatus === "function";
}

/** What one layer's own mapping says of a range (before looking at its backing file). */
type LayerKind = "data" | "zero" | "unalloc" | "compressed";

/**
 * The kind of mapping of the range at `offset` in this image alone: at most `length` bytes, within one
 * cluster (or subcluster of an extended-L2 image), with the host offset of its data where it has some.
 */
function layerMapping(img: ImageCore, offset: number, length: number): { kind: LayerKind; host: number; length: number } {
  const cs = img.clusterSize;
  const gc = Math.floor(offset / cs);
  const inCluster = offset - gc * cs;
  let n = Math.min(length, cs - inCluster);
  const m = img.lookup(gc);
  const e = m.entry;
  let kind: LayerKind;
  let host = 0;
  if (img.l2.extended && e.type !== ClusterType.Compressed) {
    const sc = cs / 32;
    const i = Math.floor(inCluster / sc);
    n = Math.min(n, (i + 1) * sc - inCluster);
    const bit = 1 << i;
    kind = m.alloc & bit ? "data" : m.zero & bit ? "zero" : "unalloc";
    // QEMU also gives the host offset of unallocated subclusters inside an allocated cluster.
    host = kind === "zero" ? 0 : e.offset ? e.offset + inCluster : 0;
  } else {
    switch (e.type) {
      case ClusterType.Normal:
        kind = "data";
        host = e.offset + inCluster;
        break;
      case ClusterType.ZeroPlain:
        kind = "zero";
        break;
      case ClusterType.ZeroAlloc:
        kind = "zero";
        host = e.offset + inCluster;
        break;
      case ClusterType.Compressed:
        kind = "compressed";
        break;
      default:
        kind = "unalloc";
    }
  }
  return { kind, host, length: n };
}

/** Status of the range starting at `offset` (at most `length` bytes, within one cluster or subcluster). */
export function qcow2BlockStatus(img: ImageCore, offset: number, length: number, depth: number): { status: Status; length: number } {
  const mapping = layerMapping(img, offset, length);
  const { kind, host } = mapping;
  let n = mapping.length;
  if (kind === "unalloc") {
    const b = img.backing;
    if (b && offset < b.size && isStatusSource(b)) {
      const r = b.blockStatus(offset, Math.min(n, b.size - offset), depth + 1);
      return r;
    }
    if (b && offset < b.size) {
      return { status: { depth: depth + 1, present: true, zero: false, data: true, compressed: false }, length: Math.min(n, b.size - offset) };
    }
    return { status: { depth: b ? depth + 1 : depth, present: false, zero: true, data: false, compressed: false, offset: host || undefined }, length: n };
  }
  if (kind === "zero") return { status: { depth, present: true, zero: true, data: false, compressed: false, offset: host || undefined }, length: n };
  if (kind === "compressed") return { status: { depth, present: true, zero: false, data: true, compressed: true }, length: n };
  let zero = false;
  if (looksPreallocated(img)) {
    const under = fileStatus(img.file, host, n);
    zero = under.zero;
    n = under.length;
  }
  return { status: { depth, present: true, zero, data: true, compressed: false, offset: host }, length: n };
}

/**
 * What the image file holds at `offset` (at most `length` bytes): a hole or the end of the file reads as zero.
 * Past the end, the whole range is zero; a hole that reaches the end counts to the end of the range.
 */
/** Whether map asks the file for holes under data clusters (decided once per open, as QEMU does). */
function looksPreallocated(img: ImageCore): boolean {
  img.preallocationLook ??= detectMetadataPreallocation(img.file, img.clusterSize, (c) => img.refcounts.get(c));
  return img.preallocationLook;
}

export function fileStatus(file: BlockFile, offset: number, length: number): { zero: boolean; length: number } {
  const size = file.size();
  if (offset >= size) return { zero: true, length };
  const ext = file.extentAt?.(offset, Math.min(length, size - offset));
  // The file cannot tell: data up to its end (QEMU: "pretend there are no holes").
  if (!ext || ext.length <= 0) return { zero: false, length: Math.min(length, size - offset) };
  if (!ext.data && offset + ext.length >= size) return { zero: true, length };
  return { zero: !ext.data, length: ext.length };
}

/** qcow2_detect_metadata_preallocation: many more clusters in use than the file occupies (see the top). */
export function detectMetadataPreallocation(file: BlockFile, clusterSize: number, refcount: (cluster: number) => number): boolean {
  const allocated = file.allocatedSize?.();
  if (allocated === undefined) return false;
  const real = Math.floor(allocated / clusterSize);
  const threshold = Math.max(Math.floor((real * 10) / 9), real + 2);
  const end = Math.ceil(file.size() / clusterSize);
  let count = 0;
  for (let c = 0; c < end && count < threshold; c++) if (refcount(c) !== 0) count++;
  return count >= threshold;
}

export function mapImage(img: ImageCore): MapExtent[] {
  const out: MapExtent[] = [];
  let pos = 0;
  while (pos < img.size) {
    const { status, length } = qcow2BlockStatus(img, pos, img.size - pos, 0);
    const prev = out[out.length - 1];
    const contiguous = prev && prev.offset !== undefined && status.offset !== undefined ? prev.offset + prev.length === status.offset : prev?.offset === undefined && status.offset === undefined;
    if (
      prev &&
      prev.depth === status.depth &&
      prev.present === status.present &&
      prev.zero === status.zero &&
      prev.data === status.data &&
      prev.compressed === status.compressed &&
      contiguous
    ) {
      prev.length += length;
    } else {
      out.push({ start: pos, length, depth: status.depth, present: status.present, zero: status.zero, data: status.data, compressed: status.compressed, offset: status.offset });
    }
    pos += length;
  }
  return out;
}

/** A run of the virtual disk that is, or is not, allocated in the top layer itself. */
export interface AllocationRun {
  allocated: boolean;
  length: number;
}

/**
 * Whether each byte of [offset, offset + length) is allocated in this layer — data, a zero cluster or
 * subcluster, compressed data — rather than left to the backing file or unallocated (QEMU's
 * bdrv_is_allocated, as qemu-io's `alloc` and `map` use it). Adjacent runs of the same kind are merged; the
 * runs stop at the end of the disk, so they cover less than `length` when the range passes it.
 */
export function allocationRuns(src: BlockStatusSource, offset: number, length: number): AllocationRun[] {
  const out: AllocationRun[] = [];
  const end = Math.min(offset + length, src.size);
  let pos = offset;
  while (pos < end) {
    const { status, length: n } = src.blockStatus(pos, end - pos, 0);
    if (n <= 0) break;
    const allocated = status.present && status.depth === 0;
    const prev = out[out.length - 1];
    if (prev && prev.allocated === allocated) prev.length += n;
    else out.push({ allocated, length: n });
    pos += n;
  }
  return out;
}

/** A layer of a backing chain that knows what it maps itself (a qcow2 image); any other disk is data throughout. */
export interface ChainLayer extends SyncDisk {
  readonly backing: SyncDisk | null;
  /** Whether the range at `offset` is allocated in this layer itself: at most `length` bytes, at least one. */
  allocatedHere(offset: number, length: number): AllocationRun;
}

function isChainLayer(d: SyncDisk): d is ChainLayer {
  return typeof (d as Partial<ChainLayer>).allocatedHere === "function";
}

/** ChainLayer.allocatedHere of a qcow2 image: data, zero or compressed clusters are its own. */
export function qcow2AllocatedHere(img: ImageCore, offset: number, length: number): AllocationRun {
  const m = layerMapping(img, offset, length);
  return { allocated: m.kind !== "unalloc", length: m.length };
}

/** A run of the virtual disk whose data comes from one layer of the backing chain. */
export interface DepthRun {
  /** 0: allocated in no layer; 1: the image itself; 2: its backing file; 3: that one's backing file... */
  depth: number;
  length: number;
}

/**
 * The layer the range at `offset` comes from (at most `length` bytes), as QEMU's bdrv_is_allocated_above
 * counts it for the NBD context qemu:allocation-depth. A disk that is not a ChainLayer (a raw file) is
 * allocated throughout, holes included. A range past the end of a shorter backing file reads as zeroes that
 * QEMU counts as allocated in that backing file (block/io.c: "any zeroes that we synthesize beyond EOF behave
 * as if they were allocated at this layer"); only a range no layer maps, down to the last, has depth 0.
 */
function depthAt(disk: SyncDisk, offset: number, length: number): DepthRun {
  let layer = disk;
  let depth = 1;
  let n = length;
  for (;;) {
    if (!isChainLayer(layer)) return { depth, length: n };
    const here = layer.allocatedHere(offset, n);
    n = Math.min(n, here.length);
    if (here.allocated) return { depth, length: n };
    const b = layer.backing;
    if (!b) return { depth: 0, length: n };
    if (offset >= b.size) return { depth: depth + 1, length: n };
    n = Math.min(n, b.size - offset);
    layer = b;
    depth++;
  }
}

/**
 * qemu:allocation-depth of [offset, offset + length) (clipped to the disk's end): runs of one depth, adjacent
 * runs of the same depth merged, at most `maxRuns` of them (the last may then end before the range does).
 */
export function allocationDepthRuns(disk: SyncDisk, offset: number, length: number, maxRuns = Infinity): DepthRun[] {
  const out: DepthRun[] = [];
  const end = Math.min(offset + length, disk.size);
  for (let pos = offset; pos < end; ) {
    const r = depthAt(disk, pos, end - pos);
    if (!(r.length > 0)) throw new Error(`internal: allocation depth at ${pos} made no progress`);
    const prev = out[out.length - 1];
    if (prev && prev.depth === r.depth) prev.length += r.length;
    else if (out.length === maxRuns) break;
    else out.push(r);
    pos += r.length;
  }
  return out;
}
