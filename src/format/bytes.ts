/** Big-endian helpers shared by the codecs. qcow2 stores every integer big-endian. */

const TWO32 = 0x1_0000_0000;

/** Reads a u64 as a JS number; throws when it does not fit exactly (above 2^53). */
export function readU64(view: DataView, pos: number, what = "value"): number {
  const hi = view.getUint32(pos);
  const lo = view.getUint32(pos + 4);
  if (hi > 0x1fffff) throw new RangeError(`${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")} is too large`);
  return hi * TWO32 + lo;
}

/** Reads a u64 as a bigint (for bit fields whose top bits matter). */
export function readU64Big(view: DataView, pos: number): bigint {
  return view.getBigUint64(pos);
}

export function writeU64(view: DataView, pos: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`cannot store ${value} as u64`);
  view.setUint32(pos, Math.floor(value / TWO32));
  view.setUint32(pos + 4, value >>> 0);
}

export function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export function isAligned(value: number, alignment: number): boolean {
  return value % alignment === 0;
}

export const TWO_POW_32 = TWO32;
