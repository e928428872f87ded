/**
 * C printf conversions that qemu-img and qemu-io output depends on, reproduced exactly.
 *
 * JavaScript's toFixed/toPrecision round a tie away from zero; glibc rounds the exact binary value of the
 * double, ties to even ("%.2f" of 0.125 is "0.12" in C, "0.13" in JS). qemu-img prints percentages with
 * "%0.2f" and sizes with "%0.3g", so these helpers do the rounding on the exact value with BigInt.
 */

/** The exact value of a finite double as a fraction num / 2^shift (num may be negative). */
function exactParts(x: number): { num: bigint; shift: number } {
  if (x === 0) return { num: 0n, shift: 0 };
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const sign = hi >>> 31 ? -1n : 1n;
  const biased = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let exp: number;
  if (biased === 0) {
    exp = -1074;
  } else {
    mant |= 1n << 52n;
    exp = biased - 1075;
  }
  if (exp >= 0) return { num: sign * (mant << BigInt(exp)), shift: 0 };
  return { num: sign * mant, shift: -exp };
}

/** round(n / d) with ties to even, for n >= 0, d > 0. */
function divRoundEven(n: bigint, d: bigint): bigint {
  const q = n / d;
  const r2 = (n % d) * 2n;
  if (r2 > d || (r2 === d && q % 2n === 1n)) return q + 1n;
  return q;
}

/** Inserts a decimal point `digits` places from the right of the integer string `s`. */
function placePoint(s: string, digits: number): string {
  if (digits === 0) return s;
  const padded = s.padStart(digits + 1, "0");
  return `${padded.slice(0, padded.length - digits)}.${padded.slice(padded.length - digits)}`;
}

/** C's `%.<digits>f`. */
export function fixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return x > 0 ? "inf" : x < 0 ? "-inf" : "nan";
  const { num, shift } = exactParts(x);
  const neg = num < 0n || Object.is(x, -0);
  const abs = num < 0n ? -num : num;
  const scaled = divRoundEven(abs * 10n ** BigInt(digits), 1n << BigInt(shift));
  return (neg ? "-" : "") + placePoint(scaled.toString(), digits);
}

/** C's `%<width>.<digits>f` with zero padding (`%05.2f`). */
export function fixedZeroPad(x: number, width: number, digits: number): string {
  const s = fixed(x, digits);
  if (s.length >= width) return s;
  if (s.startsWith("-")) return `-${s.slice(1).padStart(width - 1, "0")}`;
  return s.padStart(width, "0");
}

/**
 * The `precision` significant digits of |x|, rounded ties-to-even, and the decimal exponent of the first
 * digit: |x| ≈ 0.d1d2d3... × 10^(exp+1).
 */
function significant(x: number, precision: number): { digits: string; exp: number } {
  const { num, shift } = exactParts(Math.abs(x));
  const den = 1n << BigInt(shift);
  let exp = Math.floor(Math.log10(Math.abs(x)));
  for (;;) {
    const k = precision - 1 - exp; // scale by 10^k
    const n = k >= 0 ? num * 10n ** BigInt(k) : num;
    const d = k >= 0 ? den : den * 10n ** BigInt(-k);
    const scaled = divRoundEven(n, d);
    const s = scaled.toString();
    if (s.length > precision) {
      exp += 1;
      continue;
    }
    if (s.length < precision) {
      exp -= 1;
      continue;
    }
    return { digits: s, exp };
  }
}

/** C's `%.<precision>g` (no flags): shortest of %e / %f style, trailing zeros removed. */
export function general(x: number, precision = 6): string {
  if (!Number.isFinite(x)) return x > 0 ? "inf" : x < 0 ? "-inf" : "nan";
  const p = precision === 0 ? 1 : precision;
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  const sign = x < 0 ? "-" : "";
  const { digits, exp } = significant(x, p);
  const strip = (s: string): string => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  if (exp < -4 || exp >= p) {
    const mant = strip(digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits);
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${mant}e${exp < 0 ? "-" : "+"}${e}`;
  }
  // %f style with p - 1 - exp decimals: the digits are already exactly those.
  const decimals = p - 1 - exp;
  let s: string;
  if (decimals >= 0) s = placePoint(digits, decimals);
  else s = digits + "0".repeat(-decimals);
  return sign + strip(s);
}

/** C's `%#x` for a non-negative integer: "0" for zero, else "0x" + lowercase hex. */
export function hexAlt(n: number | bigint): string {
  const v = BigInt(n);
  return v === 0n ? "0" : `0x${v.toString(16)}`;
}
