/**
 * How the disk APIs (disk-client.ts, served-async-disk.ts) turn a call into ring requests (chunks, see
 * ring-client.ts): a read or write split at the slot's data size, a range operation split at
 * MAX_RANGE_CHUNK, a request whose result may exceed one slot (fetched with GETs), and the checks of the
 * arguments that fail a call before anything reaches the ring.
 */
import { RequestError } from "../engine/errors.js";
import { sliceWrite, writeLength, type WriteData } from "../disk/async-disk.js";
import { Flag, MAX_RANGE_CHUNK, Op, OP_NAMES, readText, splitRange, Status } from "./ring.js";
import { rebuildError, type Chunk, type Operation, type RingClient } from "./ring-client.js";

const encoder = new TextEncoder();

export interface ChunkParams {
  offset?: number;
  length?: number;
  flags?: number;
  token?: number;
  input?: Uint8Array | readonly Uint8Array[];
  borrowed?: boolean;
}

/** One ring request of `owner`; `onOut` gets the slot's output when it succeeds. */
export function chunk(ring: RingClient, owner: Operation, code: number, p: ChunkParams = {}, onOut?: (out: Uint8Array) => void): Chunk {
  const input = p.input;
  return {
    op: code,
    offset: p.offset ?? 0,
    length: p.length ?? (input instanceof Uint8Array ? input.length : 0),
    flags: p.flags ?? 0,
    token: p.token ?? 0,
    input,
    borrowed: p.borrowed,
    owner,
    done: (status, out) => {
      if (status === Status.OK) {
        if (onOut) onOut(out);
      } else {
        owner.error ??= rebuildError(status, readText(out), ring.name, OP_NAMES[code]);
      }
    },
  };
}

/** A request whose result may exceed the data share: the rest is fetched with GET requests. */
export function resultChunk(ring: RingClient, owner: Operation, code: number, args: unknown, onResult: (bytes: Uint8Array) => unknown): Chunk {
  const input = args === undefined ? undefined : jsonInput(ring, args);
  return {
    op: code,
    offset: 0,
    length: input?.length ?? 0,
    flags: 0,
    token: 0,
    input,
    owner,
    done: (status, out, total, token) => {
      if (status !== Status.OK) {
        owner.error ??= rebuildError(status, readText(out), ring.name, OP_NAMES[code]);
        return;
      }
      const all = new Uint8Array(total);
      all.set(out);
      owner.finish = () => onResult(all);
      if (total <= out.length) return;
      // Fetch the rest of the held result.
      const gets = splitRange(out.length, total - out.length, ring.slotData).map(([off, len]) =>
        chunk(ring, owner, Op.GET, { offset: off, length: len, token }, (piece) => all.set(piece, off)),
      );
      ring.follow(owner, gets);
    },
  };
}

/** Request arguments as JSON bytes; refused when they do not fit one slot. */
function jsonInput(ring: RingClient, args: unknown): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(args));
  if (bytes.length > ring.slotData) {
    throw new RequestError(`request arguments of ${bytes.length} bytes exceed the ring's ${ring.slotData}-byte slot`);
  }
  return bytes;
}

export function parseJson(bytes: Uint8Array): unknown {
  return JSON.parse(readText(bytes));
}

export function checkLen(length: number): number {
  if (!Number.isSafeInteger(length) || length < 0) throw new RequestError(`invalid length ${length}`);
  return length;
}

function checkRange(ring: RingClient, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RequestError(`${ring.name}: invalid offset ${offset}`);
  checkLen(length);
  if (offset + length > ring.size) {
    throw new RequestError(`request at offset ${offset}, length ${length} is past the end of the disk (${ring.size} bytes)`);
  }
}

/** Reads into `buf` from `offset`. `flags`: Flag.VMSTATE reads the VM-state area (the server checks its range). */
export function readChunks(ring: RingClient, op: Operation, buf: Uint8Array, offset: number, flags = 0): Chunk[] {
  if (!(flags & Flag.VMSTATE)) checkRange(ring, offset, buf.length);
  return splitRange(offset, buf.length, ring.slotData).map(([off, len]) => {
    const at = off - offset;
    return chunk(ring, op, Op.READ, { offset: off, length: len, flags }, (out) => buf.set(out, at));
  });
}

/**
 * Writes `data` at `offset`, viewing the caller's buffers (no copy here: the ring client copies each piece
 * into its slot). `borrowed`: the buffers are valid only until the call returns, so pieces that must wait
 * for a free slot are copied; otherwise they are valid until the operation completes.
 */
export function writeChunks(ring: RingClient, op: Operation, offset: number, data: WriteData, borrowed: boolean, flags = 0): Chunk[] {
  const total = writeLength(data);
  if (!(flags & Flag.VMSTATE)) checkRange(ring, offset, total);
  return splitRange(offset, total, ring.slotData).map(([off, len]) => {
    const at = off - offset;
    const input = data instanceof Uint8Array ? data.subarray(at, at + len) : sliceWrite(data, at, len);
    return chunk(ring, op, Op.WRITE, { offset: off, length: len, input, flags, borrowed });
  });
}

/** Write-zeroes or discard of a range, in pieces of at most MAX_RANGE_CHUNK. */
export function rangeChunks(ring: RingClient, op: Operation, code: number, offset: number, length: number, flags = 0): Chunk[] {
  checkRange(ring, offset, length);
  return splitRange(offset, length, MAX_RANGE_CHUNK).map(([off, len]) => chunk(ring, op, code, { offset: off, length: len, flags }));
}

/** A request without arguments or result (flush, nop, close). */
export function simpleChunks(ring: RingClient, op: Operation, code: number): Chunk[] {
  return [chunk(ring, op, code)];
}

/** The flags of a write-zeroes. */
export function zeroFlags(unmap: boolean | undefined): number {
  return unmap ? Flag.UNMAP : 0;
}
