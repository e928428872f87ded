/**
 * Options of a refcount scheme: each scheme that takes some declares them (name, kind, range, help line)
 * beside its class, and the registry (index.ts) validates what a caller gives against that declaration, so
 * the command line (`--scheme-opt pending=256,log-size=1M`), the worker and the library share one set of
 * names and one set of errors.
 *
 * Values: `count` is a whole decimal number; `size` is a whole number of bytes with an optional suffix
 * k, M, G (powers of 1024, either case), as qemu-img's sizes. Library callers may pass numbers.
 */
import { UnsupportedFeatureError } from "../format/errors.js";
import type { SchemeOptionValues } from "../engine/types.js";

export type { SchemeOptionValues };

export interface SchemeOptionSpec {
  /** The name on the command line and in OpenOptions.schemeOptions. */
  name: string;
  kind: "count" | "size";
  /** Inclusive bounds (bytes for a size). */
  min: number;
  max: number;
  /** What it sets, for --help (one short phrase). */
  help: string;
  /** Its default, for --help. */
  defaultText: string;
}

/** Validated values, by option name; options not given are absent. */
export type ResolvedSchemeOptions = Readonly<Record<string, number>>;

const SUFFIX: Record<string, number> = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** A size for messages: "64 KiB", "4 MiB", "1000 bytes". */
export function sizeText(bytes: number): string {
  for (const [unit, mul] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= mul && bytes % mul === 0) return `${bytes / mul} ${unit}`;
  }
  return `${bytes} bytes`;
}

export function rangeText(spec: SchemeOptionSpec): string {
  return spec.kind === "size" ? `${sizeText(spec.min)} to ${sizeText(spec.max)}` : `${spec.min} to ${spec.max}`;
}

function parseValue(scheme: string, spec: SchemeOptionSpec, raw: string | number): number {
  const shown = `${spec.name}=${raw}`;
  let value: number;
  if (typeof raw === "number") {
    value = raw;
  } else {
    const m = spec.kind === "size" ? /^([0-9]+)([bkmgt]?)$/i.exec(raw.trim()) : /^([0-9]+)()$/.exec(raw.trim());
    const what = spec.kind === "size" ? "a size in bytes (suffixes k, M, G, T)" : "a whole number";
    if (!m) throw new UnsupportedFeatureError(`scheme '${scheme}' option ${shown}: expecting ${what}`);
    value = Number(m[1]) * SUFFIX[m[2]!.toLowerCase()]!;
  }
  if (!Number.isSafeInteger(value)) {
    throw new UnsupportedFeatureError(`scheme '${scheme}' option ${shown}: expecting a whole number from ${rangeText(spec)}`);
  }
  if (value < spec.min) {
    const min = spec.kind === "size" ? sizeText(spec.min) : String(spec.min);
    throw new UnsupportedFeatureError(`scheme '${scheme}' option ${shown}: below the minimum, ${min}`);
  }
  if (value > spec.max) {
    const max = spec.kind === "size" ? sizeText(spec.max) : String(spec.max);
    throw new UnsupportedFeatureError(`scheme '${scheme}' option ${shown}: above the maximum, ${max}`);
  }
  return value;
}

/**
 * Validates `values` against the options scheme `scheme` declares (none: `specs` undefined or empty).
 * Throws UnsupportedFeatureError with one line naming the scheme, the option and what is expected.
 */
export function resolveSchemeOptions(scheme: string, specs: readonly SchemeOptionSpec[] | undefined, values: SchemeOptionValues | undefined): ResolvedSchemeOptions {
  const given = Object.keys(values ?? {});
  if (given.length === 0) return {};
  if (!specs?.length) throw new UnsupportedFeatureError(`scheme '${scheme}' takes no options (given: ${given.join(", ")})`);
  const out: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const name of given) {
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new UnsupportedFeatureError(`scheme '${scheme}' has no option '${name}' (its options: ${specs.map((s) => s.name).join(", ")})`);
    out[name] = parseValue(scheme, spec, values![name]!);
  }
  return out;
}

/**
 * Parses the text of `--scheme-opt` arguments, each `key=value[,key=value...]`, into values by name (the
 * last one given wins). Syntax only: the registry validates names and values against the scheme.
 */
export function parseSchemeOptionText(texts: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const text of texts) {
    for (const item of text.split(",")) {
      const eq = item.indexOf("=");
      const key = eq >= 0 ? item.slice(0, eq).trim() : "";
      if (eq < 0 || key === "" || item.slice(eq + 1).trim() === "") {
        throw new UnsupportedFeatureError(`scheme option '${item}' is not of the form key=value`);
      }
      out[key] = item.slice(eq + 1).trim();
    }
  }
  return out;
}
