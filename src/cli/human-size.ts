/** Human-readable sizes as QEMU prints them. */
import { fixed, general } from "./printf.js";

/** The binary exponent frexp() returns: x = m * 2^e with 0.5 <= m < 1 (0 for x = 0). */
function frexpExponent(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return 0;
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const biased = (view.getUint16(0) >>> 4) & 0x7ff;
  if (biased === 0) return frexpExponent(x * 2 ** 64) - 64; // subnormal
  return biased - 1022;
}

const SIZE_SUFFIXES = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/**
 * util/cutils.c size_to_str: "0 B", "196 KiB", "1.5 GiB" — three significant digits, switching to the next
 * unit once the figure would reach 1000.
 */
export function sizeToStr(val: number | bigint): string {
  const v = Number(val);
  let i = frexpExponent(v / (1000.0 / 1024.0));
  i = Math.trunc((i - 1) / 10);
  const div = 2 ** (i * 10);
  return `${general(v / div, 3)} ${SIZE_SUFFIXES[i]}B`;
}

const KIB = 1024;
const CVT_UNITS: [number, string][] = [
  [KIB ** 6, " EiB"],
  [KIB ** 5, " PiB"],
  [KIB ** 4, " TiB"],
  [KIB ** 3, " GiB"],
  [KIB ** 2, " MiB"],
  [KIB, " KiB"],
];

/** qemu-io's cvtstr: "%.3f" in the largest unit that fits (or "%f bytes"), with ".000" dropped. */
export function cvtstr(value: number): string {
  let str: string | undefined;
  let suffix = " bytes";
  for (const [unit, s] of CVT_UNITS) {
    if (value >= unit) {
      str = fixed(value / unit, 3);
      suffix = s;
      break;
    }
  }
  if (str === undefined) str = fixed(value, 6);
  const trim = str.indexOf(".000");
  return trim >= 0 ? str.slice(0, trim) + suffix : str + suffix;
}
