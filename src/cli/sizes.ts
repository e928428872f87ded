/**
 * Size arguments as QEMU parses them (util/cutils.c do_strtosz, QEMU 7.2): a decimal integer, or a hex
 * integer ("0x1000", no fraction and no suffix), or a decimal with a fraction that then needs a suffix
 * ("1.5G"); suffixes b/k/M/G/T/P/E in any case, powers of 1024; no suffix means bytes. The result must fit
 * in 64 bits (-ERANGE otherwise); a minus sign or trailing garbage is -EINVAL.
 */

export type SizeParse =
  | { ok: true; value: bigint; /** A hex number with a suffix ("0x10k"): accepted, with a deprecation warning. */ hexSuffix?: true }
  | { ok: false; error: "EINVAL" | "ERANGE" };

/** The warning QEMU 7.2 prints for a hex number with a multiplier suffix. */
export function hexSuffixWarning(s: string): string {
  return `warning: Using a multiplier suffix on hex numbers is deprecated: ${s}`;
}

const UINT64_MAX = (1n << 64n) - 1n;
export const INT64_MAX = (1n << 63n) - 1n;

function suffixMul(c: string | undefined, unit: bigint): bigint {
  switch (c?.toUpperCase()) {
    case "B":
      return 1n;
    case "K":
      return unit;
    case "M":
      return unit ** 2n;
    case "G":
      return unit ** 3n;
    case "T":
      return unit ** 4n;
    case "P":
      return unit ** 5n;
    case "E":
      return unit ** 6n;
    default:
      return -1n;
  }
}

/** strtoull(s + pos, &end, base) with qemu_strtou64's error reporting. */
function strtou64(s: string, pos: number, base: 10 | 16): { value: bigint; end: number; error?: "EINVAL" | "ERANGE" } {
  let i = pos;
  while (i < s.length && /\s/.test(s[i]!)) i++;
  let neg = false;
  if (s[i] === "+" || s[i] === "-") {
    neg = s[i] === "-";
    i++;
  }
  if (base === 16 && s[i] === "0" && (s[i + 1] === "x" || s[i + 1] === "X") && /[0-9a-fA-F]/.test(s[i + 2] ?? "")) i += 2;
  const digitRe = base === 10 ? /[0-9]/ : /[0-9a-fA-F]/;
  const start = i;
  while (i < s.length && digitRe.test(s[i]!)) i++;
  if (i === start) return { value: 0n, end: pos, error: "EINVAL" };
  let value = BigInt((base === 16 ? "0x" : "") + s.slice(start, i));
  if (value > UINT64_MAX) return { value: UINT64_MAX, end: i, error: "ERANGE" };
  if (neg) value = (1n << 64n) - value;
  return { value: value & UINT64_MAX, end: i };
}

/** qemu_strtosz(s, NULL, &result): the whole string must be consumed. */
export function parseSize(s: string): SizeParse {
  return doStrtosz(s, "B", 1024n);
}

function doStrtosz(s: string, defaultSuffix: string, unit: bigint): SizeParse {
  const first = strtou64(s, 0, 10);
  if (first.error) return { ok: false, error: first.error };
  let val = first.value;
  let end = first.end;
  if (s.slice(0, end).includes("-")) return { ok: false, error: "EINVAL" };
  let valf = 0n;
  let hex = false;
  if (val === 0n && (s[end] === "x" || s[end] === "X")) {
    const h = strtou64(s, 0, 16);
    if (h.error) return { ok: false, error: h.error };
    val = h.value;
    end = h.end;
    if (s[end] === ".") return { ok: false, error: "EINVAL" };
    hex = true;
  } else if (s[end] === ".") {
    // strtod on ".ddd[e±dd]"; on failure QEMU skips the '.' and carries on ("1.k" is 1 KiB).
    const frac = /^\.\d+([eE][+-]?\d+)?/.exec(s.slice(end));
    if (!frac) {
      end += 1;
    } else if (frac[1]) {
      return { ok: false, error: "EINVAL" };
    } else {
      const fraction = Number(frac[0]);
      valf = BigInt(Math.trunc(fraction * 2 ** 64));
      end += frac[0].length;
    }
  }
  let mul = suffixMul(s[end], unit);
  let hexSuffix = false;
  if (mul > 0n) {
    hexSuffix = hex;
    end += 1;
  } else {
    mul = suffixMul(defaultSuffix, unit);
  }
  if (mul === 1n) {
    if (valf !== 0n) return { ok: false, error: "EINVAL" };
  } else {
    // 64.64 fixed point times an integer, rounded half up.
    const whole = val * mul;
    const fracProduct = valf * mul;
    let total = whole + (fracProduct >> 64n);
    total += (fracProduct & UINT64_MAX) >> 63n;
    if (total > UINT64_MAX) return { ok: false, error: "ERANGE" };
    val = total;
  }
  if (end !== s.length) return { ok: false, error: "EINVAL" };
  return hexSuffix ? { ok: true, value: val, hexSuffix: true } : { ok: true, value: val };
}

/**
 * qemu-io's cvtnum: a size in [0, INT64_MAX], or the error qemu-io prints for it
 * (print_cvtnum_err: "Parsing error: ...").
 */
export function ioNumber(s: string): { ok: true; value: number; warning?: string } | { ok: false; message: string } {
  const r = parseSize(s);
  if (r.ok && r.value <= INT64_MAX) {
    if (r.value > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, message: `Parsing error: argument too large -- ${s}` };
    return r.hexSuffix ? { ok: true, value: Number(r.value), warning: hexSuffixWarning(s) } : { ok: true, value: Number(r.value) };
  }
  if (!r.ok && r.error === "EINVAL") {
    return { ok: false, message: `Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${s}` };
  }
  return { ok: false, message: `Parsing error: argument too large -- ${s}` };
}

/**
 * qemu-img's cvtnum_full(name, value, 0, INT64_MAX): the value, or the one-line error qemu-img reports
 * (it prints the suffix hint on two lines; refcow keeps every error on one line).
 */
export function imgNumber(name: string, s: string): { ok: true; value: bigint; warning?: string } | { ok: false; message: string } {
  const r = parseSize(s);
  if (!r.ok && r.error === "EINVAL") {
    return {
      ok: false,
      message:
        `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for ` +
        "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
    };
  }
  if (!r.ok || r.value > INT64_MAX) {
    return { ok: false, message: `Invalid ${name} specified. Must be between 0 and ${INT64_MAX}.` };
  }
  return r.hexSuffix ? { ok: true, value: r.value, warning: hexSuffixWarning(s) } : { ok: true, value: r.value };
}
