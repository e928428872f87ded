/**
 * Browser stand-in for the two `node:zlib` functions the engine uses (the web build aliases `node:zlib` to
 * this module): `crc32` (the journal's record checksums) and `inflateRawSync` (compressed clusters), the
 * latter on fflate's raw DEFLATE decoder.
 */
import { Inflate } from "fflate";

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

/** Input fed to the decoder per step: bounds what one step can produce (DEFLATE expands at most ~1032×). */
const STEP = 4096;

/**
 * `zlib.inflateRawSync(data, { maxOutputLength, finishFlush: Z_SYNC_FLUSH })`: bytes after the final block are
 * ignored (a qcow2 compressed cluster is padded to whole sectors), a stream that ends early yields what was
 * decoded so far (the caller checks the length it expected), and output beyond `maxOutputLength` is a
 * RangeError, as Node's is. Corrupt input throws fflate's error ("invalid block type", ...).
 */
export function inflateRawSync(data: Uint8Array, options: { maxOutputLength?: number; finishFlush?: number } = {}): Uint8Array {
  const max = options.maxOutputLength ?? 2 ** 31 - 1;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const inflater = new Inflate((chunk) => {
    total += chunk.length;
    if (total > max) throw new RangeError(`Cannot create a Buffer larger than ${max} bytes`);
    if (chunk.length) chunks.push(chunk);
  });
  // Never marked final: fflate then stops quietly where the input ends instead of reporting a truncated stream.
  for (let at = 0; at < data.length; at += STEP) inflater.push(data.subarray(at, at + STEP), false);
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
