/**
 * The extents a served disk reports for a range, as an NBD export's metadata contexts need them: merged (no
 * two adjacent extents alike), at most `maxExtents` of them (the last may then end before the range does),
 * never past the range's end. The ring's server (serve-loop.ts, which sends them as the tuples of
 * extentsWire) and the inline NBD export (nbd/inline-port.ts) both answer with these functions, so the two
 * ways of serving an image report the same extents.
 *
 * - base:allocation: mergedBlockStatus, BlockExtent (reads as zeroes, holds data);
 * - qemu:allocation-depth: depthExtents, DepthExtent (0 unallocated, 1 the image, 2 its backing file...);
 * - qemu:dirty-bitmap:NAME: dirtyExtents, DirtyExtent, from the first layer of the backing chain that has a
 *   bitmap of that name (as qemu-nbd finds it).
 */
import { RequestError, UnsupportedFeatureError } from "../engine/errors.js";
import type { BlockExtent, DepthExtent, DirtyExtent } from "./disk-client.js";
import type { SyncDisk } from "../disk/sync-disk.js";
import type { BitmapInfo } from "../engine/types.js";

// The extents' types are those the ring's client answers with.
export type { BlockExtent, DepthExtent, DirtyExtent };

/**
 * The extents as the ring's JSON result carries them (worker/disk-client.ts reads them back): block status
 * `[length, zero 0|1, data 0|1]`, depth `[length, depth]`, bitmap `[length, dirty 0|1]`.
 */
export function extentsWire(extents: readonly (BlockExtent | DepthExtent | DirtyExtent)[]): number[][] {
  return extents.map((e) =>
    "zero" in e ? [e.length, e.zero ? 1 : 0, e.data ? 1 : 0] : "depth" in e ? [e.length, e.depth] : [e.length, e.dirty ? 1 : 0],
  );
}

/**
 * The block status of [offset, offset + length) as merged extents, at most `maxExtents` of them. The disk must
 * have blockStatus.
 */
export function mergedBlockStatus(disk: SyncDisk, offset: number, length: number, maxExtents: number): BlockExtent[] {
  const status = disk.blockStatus;
  if (typeof status !== "function") throw new UnsupportedFeatureError("this image does not support blockStatus");
  const out: BlockExtent[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const r = status.call(disk, pos, end - pos, 0);
    const n = Math.min(r.length, end - pos);
    if (!(n > 0)) throw new Error(`internal: block status at ${pos} made no progress`);
    const zero = r.status.zero;
    const data = r.status.data;
    const last = out[out.length - 1];
    if (last && last.zero === zero && last.data === data) last.length += n;
    else if (out.length === maxExtents) break;
    else out.push({ length: n, zero, data });
    pos += n;
  }
  return out;
}

/** The allocation depth of [offset, offset + length) as merged extents, at most `maxExtents`. */
export function depthExtents(disk: SyncDisk, offset: number, length: number, maxExtents: number): DepthExtent[] {
  const depth = disk.allocationDepth;
  if (typeof depth !== "function") throw new UnsupportedFeatureError("this image does not report allocation depth");
  const out: DepthExtent[] = [];
  let left = length;
  for (const r of depth.call(disk, offset, length, maxExtents)) {
    const n = Math.min(r.length, left);
    if (!(n > 0)) break;
    out.push({ length: n, depth: r.depth });
    left -= n;
  }
  return out;
}

/** A layer of the served disk's backing chain, as far as bitmaps go. */
interface BitmapLayer {
  bitmapList?(): BitmapInfo[];
  bitmapExtents?(name: string, offset: number, length: number): { length: number; dirty: boolean }[];
  backing?: unknown;
}

/**
 * The first layer of the disk's backing chain (the disk itself first) with a persistent dirty bitmap named
 * `name`, and the bitmap; undefined when no layer has one.
 */
export function findBitmap(disk: SyncDisk, name: string): { layer: BitmapLayer; bitmap: BitmapInfo } | undefined {
  for (let layer = disk as BitmapLayer | null | undefined; layer; layer = layer.backing as BitmapLayer | null | undefined) {
    if (typeof layer.bitmapList !== "function") continue;
    const bitmap = layer.bitmapList().find((b) => b.name === name);
    if (bitmap) return { layer, bitmap };
  }
  return undefined;
}

/** Bytes of the bitmap asked of the engine at once: its runs are listed whole, so a window bounds that work. */
const DIRTY_WINDOW = 256 << 20;

/**
 * Bitmap `name` (see findBitmap) over [offset, offset + length) as merged extents, at most `maxExtents`.
 */
export function dirtyExtents(disk: SyncDisk, name: string, offset: number, length: number, maxExtents: number): DirtyExtent[] {
  const found = findBitmap(disk, name);
  if (!found || typeof found.layer.bitmapExtents !== "function") throw new RequestError(`Bitmap '${name}' is not found`);
  const out: DirtyExtent[] = [];
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const n = Math.min(DIRTY_WINDOW, end - pos);
    let covered = 0;
    for (const r of found.layer.bitmapExtents(name, pos, n)) {
      const len = Math.min(r.length, n - covered);
      if (!(len > 0)) break;
      const dirty = r.dirty;
      const last = out[out.length - 1];
      if (last && last.dirty === dirty) last.length += len;
      else if (out.length === maxExtents) return out;
      else out.push({ length: len, dirty });
      covered += len;
    }
    if (covered !== n) throw new Error(`internal: bitmap '${name}' covers ${covered} of the ${n} bytes at ${pos}`);
    pos += n;
  }
  return out;
}
