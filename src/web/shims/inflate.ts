/**
 * Raw DEFLATE decoding (RFC 1951), for the browser build of the engine: compressed qcow2 clusters of
 * compression type 0 are raw deflate streams, which Node decodes with zlib's inflateRawSync.
 *
 * A straightforward canonical-Huffman decoder (code by code, as RFC 1951 §3.2.2 builds the codes): compressed
 * clusters are at most 2 MiB and rare, so clarity wins over table-driven speed.
 *
 * Stream end: decoding stops after the block marked final; bytes after it are ignored (a qcow2 compressed
 * cluster is padded to whole sectors). A stream that ends early yields what was decoded so far, as zlib's
 * Z_SYNC_FLUSH does; the caller checks the length it expected.
 */

const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
/** Order in which the code lengths of the code-length alphabet are stored (RFC 1951 §3.2.7). */
const CLEN_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const MAX_BITS = 15;

/** A canonical Huffman code: how many codes of each length, and the symbols in code order. */
interface Huffman {
  count: Uint16Array;
  symbol: Uint16Array;
}

/** Thrown internally when the input ends inside the stream. */
class EndOfInput extends Error {}

export class InflateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InflateError";
  }
}

function buildHuffman(lengths: ArrayLike<number>, n: number): Huffman {
  const count = new Uint16Array(MAX_BITS + 1);
  for (let s = 0; s < n; s++) count[lengths[s]]++;
  count[0] = 0;
  // Over-subscribed sets of lengths are invalid; incomplete ones are allowed (single distance codes).
  let left = 1;
  for (let len = 1; len <= MAX_BITS; len++) {
    left = left * 2 - count[len];
    if (left < 0) throw new InflateError("over-subscribed Huffman code");
  }
  const offs = new Uint16Array(MAX_BITS + 1);
  for (let len = 1; len < MAX_BITS; len++) offs[len + 1] = offs[len] + count[len];
  const symbol = new Uint16Array(n);
  for (let s = 0; s < n; s++) if (lengths[s] !== 0) symbol[offs[lengths[s]]++] = s;
  return { count, symbol };
}

let fixedLit: Huffman | undefined;
let fixedDist: Huffman | undefined;

function fixedCodes(): [Huffman, Huffman] {
  if (!fixedLit || !fixedDist) {
    const l = new Uint8Array(288);
    l.fill(8, 0, 144);
    l.fill(9, 144, 256);
    l.fill(7, 256, 280);
    l.fill(8, 280, 288);
    fixedLit = buildHuffman(l, 288);
    fixedDist = buildHuffman(new Uint8Array(30).fill(5), 30);
  }
  return [fixedLit, fixedDist];
}

class Inflater {
  private pos = 0;
  private bitBuf = 0;
  private bitCnt = 0;
  out: Uint8Array;
  outLen = 0;

  constructor(
    private readonly input: Uint8Array,
    private readonly maxOutput: number,
  ) {
    this.out = new Uint8Array(Math.min(maxOutput, Math.max(1024, input.length * 4)));
  }

  bits(n: number): number {
    let v = this.bitBuf;
    while (this.bitCnt < n) {
      if (this.pos >= this.input.length) throw new EndOfInput();
      v |= this.input[this.pos++] << this.bitCnt;
      this.bitCnt += 8;
    }
    this.bitBuf = v >>> n;
    this.bitCnt -= n;
    return v & ((1 << n) - 1);
  }

  decode(h: Huffman): number {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len <= MAX_BITS; len++) {
      code |= this.bits(1);
      const count = h.count[len];
      if (code - count < first) return h.symbol[index + (code - first)];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw new InflateError("invalid Huffman code");
  }

  private room(n: number): void {
    const need = this.outLen + n;
    if (need > this.maxOutput) throw new InflateError(`output exceeds ${this.maxOutput} bytes`);
    if (need <= this.out.length) return;
    const grown = new Uint8Array(Math.min(this.maxOutput, Math.max(need, this.out.length * 2)));
    grown.set(this.out.subarray(0, this.outLen));
    this.out = grown;
  }

  stored(): void {
    this.bitBuf = 0;
    this.bitCnt = 0; // to the byte boundary
    if (this.pos + 4 > this.input.length) throw new EndOfInput();
    const len = this.input[this.pos] | (this.input[this.pos + 1] << 8);
    const nlen = this.input[this.pos + 2] | (this.input[this.pos + 3] << 8);
    this.pos += 4;
    if ((len ^ 0xffff) !== nlen) throw new InflateError("stored block length does not match its complement");
    const avail = Math.min(len, this.input.length - this.pos);
    this.room(avail);
    this.out.set(this.input.subarray(this.pos, this.pos + avail), this.outLen);
    this.outLen += avail;
    this.pos += avail;
    if (avail < len) throw new EndOfInput();
  }

  codes(lit: Huffman, dist: Huffman): void {
    for (;;) {
      const sym = this.decode(lit);
      if (sym < 256) {
        this.room(1);
        this.out[this.outLen++] = sym;
      } else if (sym === 256) {
        return;
      } else {
        const li = sym - 257;
        if (li >= 29) throw new InflateError("invalid length symbol");
        const len = LENGTH_BASE[li] + this.bits(LENGTH_EXTRA[li]);
        const di = this.decode(dist);
        if (di >= 30) throw new InflateError("invalid distance symbol");
        const d = DIST_BASE[di] + this.bits(DIST_EXTRA[di]);
        if (d > this.outLen) throw new InflateError("distance reaches before the start of the output");
        this.room(len);
        const out = this.out;
        let o = this.outLen;
        for (let i = 0; i < len; i++, o++) out[o] = out[o - d];
        this.outLen = o;
      }
    }
  }

  dynamic(): void {
    const nlen = this.bits(5) + 257;
    const ndist = this.bits(5) + 1;
    const ncode = this.bits(4) + 4;
    if (nlen > 286 || ndist > 30) throw new InflateError("too many length or distance codes");
    const lengths = new Uint8Array(320);
    for (let i = 0; i < ncode; i++) lengths[CLEN_ORDER[i]] = this.bits(3);
    const clen = buildHuffman(lengths, 19);
    lengths.fill(0);
    let i = 0;
    while (i < nlen + ndist) {
      const sym = this.decode(clen);
      if (sym < 16) {
        lengths[i++] = sym;
        continue;
      }
      let value = 0;
      let repeat: number;
      if (sym === 16) {
        if (i === 0) throw new InflateError("repeat of a code length with none before it");
        value = lengths[i - 1];
        repeat = 3 + this.bits(2);
      } else if (sym === 17) {
        repeat = 3 + this.bits(3);
      } else {
        repeat = 11 + this.bits(7);
      }
      if (i + repeat > nlen + ndist) throw new InflateError("code lengths overflow their table");
      lengths.fill(value, i, i + repeat);
      i += repeat;
    }
    if (lengths[256] === 0) throw new InflateError("no end-of-block code");
    const lit = buildHuffman(lengths.subarray(0, nlen), nlen);
    const dist = buildHuffman(lengths.subarray(nlen, nlen + ndist), ndist);
    this.codes(lit, dist);
  }

  run(): void {
    for (;;) {
      const last = this.bits(1);
      const type = this.bits(2);
      if (type === 0) this.stored();
      else if (type === 1) this.codes(...fixedCodes());
      else if (type === 2) this.dynamic();
      else throw new InflateError("invalid block type 3");
      if (last) return;
    }
  }
}

/** Decodes a raw deflate stream; at most `maxOutput` bytes of output (an InflateError beyond). */
export function inflateRaw(input: Uint8Array, maxOutput = 1 << 30): Uint8Array {
  const inf = new Inflater(input, maxOutput);
  try {
    inf.run();
  } catch (e) {
    if (!(e instanceof EndOfInput)) throw e;
  }
  return inf.out.subarray(0, inf.outLen);
}
