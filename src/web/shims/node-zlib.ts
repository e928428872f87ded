/**
 * Browser stand-in for the two `node:zlib` functions the engine uses (the web build aliases `node:zlib` to
 * this module): `crc32` (the journal's record checksums) and `inflateRawSync` (compressed clusters).
 */
import { inflateRaw } from "./inflate.js";

let table: Uint32Array | undefined;

function crcTable(): Uint32Array {
  if (table) return table;
  table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
}

/** CRC-32 (IEEE 802.3, zlib's), continuing from `value` as Node's `zlib.crc32(data, value)`. */
export function crc32(data: Uint8Array | string, value = 0): number {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const t = crcTable();
  let c = ~value >>> 0;
  for (let i = 0; i < bytes.length; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** `zlib.inflateRawSync(data, { maxOutputLength })`: trailing bytes after the final block are ignored. */
export function inflateRawSync(data: Uint8Array, options: { maxOutputLength?: number; finishFlush?: number } = {}): Uint8Array {
  return inflateRaw(data, options.maxOutputLength);
}
