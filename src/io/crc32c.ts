/**
 * CRC-32C (Castagnoli; RFC 3720 appendix B.4): the reflected polynomial 0x82F63B78, initial value and final
 * XOR 0xFFFFFFFF. Synchronous and platform-neutral, for checksums the browser's engine worker must verify
 * without awaiting (WebCrypto's digest is asynchronous). Detects torn and damaged data, not forgery.
 *
 * Known values: "123456789" → 0xE3069283; 32 zero bytes → 0x8A9136AA; 32 bytes 0xFF → 0x62A8AB43.
 */

/** TABLES[k][b]: the CRC contribution of byte b followed by k zero bytes (slicing by 4). */
const TABLES: Uint32Array[] = (() => {
  const tables = [0, 1, 2, 3].map(() => new Uint32Array(256));
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    tables[0][b] = c >>> 0;
  }
  for (let b = 0; b < 256; b++) {
    for (let k = 1; k < 4; k++) tables[k][b] = (tables[k - 1][b] >>> 8) ^ tables[0][tables[k - 1][b] & 0xff];
  }
  return tables;
})();

/** The CRC-32C of `data`; pass an earlier result as `crc` to continue over a following piece. */
export function crc32c(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3] = TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const fast = data.length - (data.length % 4);
  for (; i < fast; i += 4) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = t3[c & 0xff] ^ t2[(c >>> 8) & 0xff] ^ t1[(c >>> 16) & 0xff] ^ t0[c >>> 24];
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
