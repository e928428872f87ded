/**
 * The shapes of the transmission phase's replies beyond a simple reply (protocol.ts encodes the bytes): a
 * BLOCK_STATUS's chunks, one per selected metadata context, from the port's extents; and a structured READ
 * whose data has zero runs, as OFFSET_DATA and OFFSET_HOLE chunks.
 */
import type { MetaContext } from "./meta-context.js";
import type { Answer, BlockExtent, NbdPort } from "./port.js";
import { andThen } from "./port.js";
import {
  BaseAllocation,
  DirtyBitmap,
  encodeBlockStatusChunk,
  encodeOffsetHoleChunk,
  type Extent,
  OFFSET_DATA_PREFIX,
  ReplyFlag,
  type Request,
  writeOffsetDataPrefix,
} from "./protocol.js";

/** Granularity of the zero runs a structured read may turn into holes. */
const HOLE_GRANULE = 4096;

const ZEROES = Buffer.alloc(64 << 10);

/** True when `b` holds only zero bytes. */
export function isAllZero(b: Uint8Array): boolean {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 0; at < buf.length; at += ZEROES.length) {
    const n = Math.min(ZEROES.length, buf.length - at);
    if (ZEROES.compare(buf, at, at + n, 0, n) !== 0) return false;
  }
  return true;
}

/** Whether `data` (at disk offset `offset`) has an all-zero aligned HOLE_GRANULE block. */
export function hasZeroGranule(data: Uint8Array, offset: number): boolean {
  let at = (HOLE_GRANULE - (offset % HOLE_GRANULE)) % HOLE_GRANULE;
  for (; at + HOLE_GRANULE <= data.length; at += HOLE_GRANULE) {
    if (isAllZero(data.subarray(at, at + HOLE_GRANULE))) return true;
  }
  return false;
}

/** The extents of one metadata context for [offset, offset + length), at most `maxExtents`, as they go on the wire. */
export function contextExtents(port: NbdPort, ctx: MetaContext, offset: number, length: number, maxExtents: number): Answer<Extent[]> {
  switch (ctx.kind) {
    case "base:allocation":
      return andThen(port.blockStatus(offset, length, maxExtents), (es) => es.map(allocationExtent));
    case "qemu:allocation-depth":
      return andThen(port.allocationDepth(offset, length, maxExtents), (es) => es.map((e) => ({ length: e.length, flags: e.depth })));
    case "qemu:dirty-bitmap":
      return andThen(port.dirtyExtents(ctx.bitmap, offset, length, maxExtents), (es) =>
        es.map((e) => ({ length: e.length, flags: e.dirty ? DirtyBitmap.STATE_DIRTY : 0 })),
      );
  }
}

function allocationExtent(e: BlockExtent): Extent {
  return { length: e.length, flags: (e.data ? 0 : BaseAllocation.STATE_HOLE) | (e.zero ? BaseAllocation.STATE_ZERO : 0) };
}

/** The reply to a BLOCK_STATUS: one chunk per selected context (`answers[i]` the extents of `contexts[i]`), the last with DONE. */
export function blockStatusChunks(req: Request, contexts: readonly MetaContext[], answers: readonly Extent[][]): Uint8Array[] {
  return contexts.map((c, i) => encodeBlockStatusChunk(req.handle, i === contexts.length - 1 ? ReplyFlag.DONE : 0, c.id, answers[i]!));
}

/**
 * The chunks of a structured read whose data (read at req.offset) has zero runs: ranges the extents report
 * as reading zeroes, and that did read as zeroes, become OFFSET_HOLE chunks, the rest OFFSET_DATA chunks
 * (views on `data`); the last has DONE.
 */
export function holeReadChunks(req: Request, data: Uint8Array, extents: readonly BlockExtent[]): Uint8Array[] {
  const { handle, offset, length } = req;
  // Pieces of the reply: [start, end) relative to `offset`, hole or data; the part past the extents is data.
  const pieces: { start: number; end: number; hole: boolean }[] = [];
  const add = (start: number, end: number, hole: boolean): void => {
    const last = pieces[pieces.length - 1];
    if (last && last.hole === hole && last.end === start) last.end = end;
    else pieces.push({ start, end, hole });
  };
  let at = 0;
  for (const e of extents) {
    const end = Math.min(length, at + e.length);
    if (e.zero && isAllZero(data.subarray(at, end))) add(at, end, true);
    else add(at, end, false);
    at = end;
  }
  if (at < length) add(at, length, false);
  const chunks: Uint8Array[] = [];
  pieces.forEach((p, i) => {
    const last = i === pieces.length - 1 ? ReplyFlag.DONE : 0;
    if (p.hole) {
      chunks.push(encodeOffsetHoleChunk(handle, last, offset + p.start, p.end - p.start));
    } else {
      const head = Buffer.allocUnsafe(OFFSET_DATA_PREFIX);
      writeOffsetDataPrefix(head, 0, handle, last, offset + p.start, p.end - p.start);
      chunks.push(head, data.subarray(p.start, p.end));
    }
  });
  return chunks;
}
