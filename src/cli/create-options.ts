/**
 * `-o` creation options for qcow2 and raw, parsed, validated and echoed as qemu-img 7.2 does.
 *
 * qemu-img parses the option list first (unknown names, malformed sizes, numbers and booleans fail here,
 * before anything is printed), then prints "Formatting 'FILE', fmt=FMT opt=value ..." and only then lets
 * the driver validate the combination (cluster size, compat level...), so those errors follow the
 * Formatting line. The echo lists options in a fixed order, with defaults for the ones not given; sizes
 * and numbers are printed as parsed, booleans and strings as typed (commas in strings doubled).
 */
import type { CreateOptions } from "../engine/types.js";
import { parseSize } from "./sizes.js";

export type ImageFormatName = "qcow2" | "raw";

type OptType = "size" | "number" | "bool" | "string";

interface OptDesc {
  name: string;
  type: OptType;
  /** Printed when the option is not given. */
  def?: string;
  help: string;
}

/** In the order of qemu-img's "Formatting" line. */
const QCOW2_OPTS: OptDesc[] = [
  { name: "cluster_size", type: "size", def: "65536", help: "qcow2 cluster size" },
  { name: "extended_l2", type: "bool", def: "off", help: "Extended L2 tables" },
  { name: "preallocation", type: "string", help: "Preallocation mode (allowed values: off)" },
  { name: "compression_type", type: "string", def: "zlib", help: "Compression method used for image cluster compression" },
  { name: "size", type: "size", help: "Virtual disk size" },
  { name: "compat", type: "string", help: "Compatibility level (v2 [0.10] or v3 [1.1])" },
  { name: "backing_file", type: "string", help: "File name of a base image" },
  { name: "backing_fmt", type: "string", help: "Image format of the base image" },
  { name: "lazy_refcounts", type: "bool", def: "off", help: "Postpone refcount updates" },
  { name: "refcount_bits", type: "number", def: "16", help: "Width of a reference count entry in bits" },
];

const RAW_OPTS: OptDesc[] = [
  { name: "size", type: "size", help: "Virtual disk size" },
  { name: "preallocation", type: "string", help: "Preallocation mode (allowed values: off)" },
];

/** qcow2 options QEMU knows and refcow does not implement. */
const QCOW2_UNSUPPORTED = new Set([
  "encryption",
  "encrypt.format",
  "encrypt.key-secret",
  "encrypt.cipher-alg",
  "encrypt.cipher-mode",
  "encrypt.ivgen-alg",
  "encrypt.ivgen-hash-alg",
  "encrypt.hash-alg",
  "encrypt.iter-time",
  "data_file",
  "data_file_raw",
]);

function descsFor(format: ImageFormatName): OptDesc[] {
  return format === "qcow2" ? QCOW2_OPTS : RAW_OPTS;
}

/** qemu-img's is_valid_option_list: not empty, no leading comma, no unescaped trailing comma. */
export function isValidOptionList(s: string): boolean {
  if (s === "" || s.startsWith(",")) return false;
  let i = s.length;
  while (i > 0 && s[i - 1] === ",") i--;
  return (s.length - i) % 2 === 0;
}

/** True when the list asks for help ("help" or "?" as an element). */
export function wantsHelp(s: string): boolean {
  return splitOptionList(s).some(([k, v]) => v === undefined && (k === "help" || k === "?"));
}

/** Splits "a=1,b=x,,y,c" into [["a","1"],["b","x,y"],["c",undefined]] (",," is a literal comma). */
export function splitOptionList(s: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  let i = 0;
  const readUntil = (stops: string): string => {
    let v = "";
    while (i < s.length) {
      const c = s[i]!;
      if (c === "," && s[i + 1] === ",") {
        v += ",";
        i += 2;
        continue;
      }
      if (stops.includes(c)) break;
      v += c;
      i += 1;
    }
    return v;
  };
  while (i < s.length) {
    const key = readUntil("=,");
    let value: string | undefined;
    if (s[i] === "=") {
      i += 1;
      value = readUntil(",");
    }
    if (s[i] === ",") i += 1;
    out.push([key, value]);
  }
  return out;
}

export class CreateOptionError extends Error {}

interface OptValue {
  /** As typed. */
  raw: string;
  /** Parsed: bigint for size/number, boolean for bool, string otherwise. */
  value: bigint | boolean | string;
}

const SIZE_ERROR = (name: string): string =>
  `Parameter '${name}' expects a non-negative number below 2^64 ` +
  "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes, respectively.";

function parseBool(s: string): boolean | undefined {
  if (["on", "yes", "true", "y"].includes(s)) return true;
  if (["off", "no", "false", "n"].includes(s)) return false;
  return undefined;
}

/** qemu_strtou64(s, NULL, 0, &n): decimal, 0x hex or 0 octal; the whole string. */
function parseNumber(s: string): bigint | undefined {
  const m = /^\s*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(s);
  if (!m) return undefined;
  const t = m[1]!;
  const v = /^0[xX]/.test(t) ? BigInt(t) : t.length > 1 && t.startsWith("0") ? BigInt(`0o${t.slice(1)}`) : BigInt(t);
  return v < 1n << 64n ? v : undefined;
}

/** Parsed -o options: what was given, by name. */
export class CreateOptionSet {
  private readonly values = new Map<string, OptValue>();

  constructor(readonly format: ImageFormatName) {}

  /** Adds one -o list (several -o accumulate; a later value for a name wins). Throws CreateOptionError. */
  addList(list: string): void {
    const descs = descsFor(this.format);
    for (const [key0, value0] of splitOptionList(list)) {
      let key = key0;
      let raw = value0;
      if (raw === undefined) {
        // QemuOpts short form: "name" means name=on, "noname" name=off.
        if (key.startsWith("no") && descs.some((d) => d.name === key.slice(2))) {
          key = key.slice(2);
          raw = "off";
        } else {
          raw = "on";
        }
      }
      this.set(key, raw);
    }
  }

  set(key: string, raw: string): void {
    const desc = descsFor(this.format).find((d) => d.name === key);
    if (!desc) {
      if (this.format === "qcow2" && QCOW2_UNSUPPORTED.has(key)) {
        throw new CreateOptionError(`Parameter '${key}' is not supported by refcow`);
      }
      throw new CreateOptionError(`Invalid parameter '${key}'`);
    }
    let value: bigint | boolean | string;
    switch (desc.type) {
      case "size": {
        const r = parseSize(raw);
        if (!r.ok) throw new CreateOptionError(SIZE_ERROR(key));
        value = r.value;
        break;
      }
      case "number": {
        const n = parseNumber(raw);
        if (n === undefined) throw new CreateOptionError(`Parameter '${key}' expects a number`);
        value = n;
        break;
      }
      case "bool": {
        const b = parseBool(raw);
        if (b === undefined) throw new CreateOptionError(`Parameter '${key}' expects 'on' or 'off'`);
        value = b;
        break;
      }
      default:
        value = raw;
    }
    if (key === "preallocation" && raw !== "off") {
      throw new CreateOptionError(`Preallocation mode '${raw}' is not supported by refcow (only 'off')`);
    }
    this.values.set(key, { raw, value });
  }

  has(key: string): boolean {
    return this.values.has(key);
  }

  get(key: string): OptValue | undefined {
    return this.values.get(key);
  }

  /** The "fmt=... opt=value ..." part of the Formatting line. */
  echo(): string {
    const parts = [`fmt=${this.format}`];
    for (const d of descsFor(this.format)) {
      const v = this.values.get(d.name);
      let text: string | undefined;
      if (v) {
        if (d.type === "size" || d.type === "number") text = (v.value as bigint).toString();
        else if (d.type === "string") text = v.raw.replace(/,/g, ",,");
        else text = v.raw;
      } else {
        text = d.def;
      }
      if (text !== undefined) parts.push(`${d.name}=${text}`);
    }
    return parts.join(" ");
  }
}

/** "Formatting 'FILE', fmt=... " as printed by bdrv_img_create. */
export function formattingLine(filename: string, opts: CreateOptionSet): string {
  return `Formatting '${filename}', ${opts.echo()}\n`;
}

/** `-o help` for a format. */
export function optionsHelp(format: ImageFormatName): string {
  const descs = [...descsFor(format)].sort((a, b) => a.name.localeCompare(b.name));
  let out = `Supported ${format} options:\n`;
  for (const d of descs) {
    const type = d.type === "bool" ? "bool (on/off)" : d.type === "number" ? "num" : d.type === "size" ? "size" : "str";
    out += `  ${`${d.name}=<${type}>`.padEnd(22)} - ${d.help}\n`;
  }
  return out;
}

const QCOW_MAX_L1_SIZE = 0x2000000;

/**
 * The driver's validation, after the Formatting line (block/qcow2.c qcow2_co_create, in its order).
 * Returns the engine's CreateOptions for `size` (already rounded up to 512 bytes).
 */
export function qcow2CreateOptions(opts: CreateOptionSet, size: number): CreateOptions {
  let version: 2 | 3 = 3;
  const compat = opts.get("compat");
  if (compat) {
    const c = compat.value as string;
    if (c === "0.10" || c === "v2") version = 2;
    else if (c === "1.1" || c === "v3") version = 3;
    else throw new CreateOptionError(`Parameter 'version' does not accept value '${c}'`);
  }
  const compression = (opts.get("compression_type")?.value as string | undefined) ?? "zlib";
  if (compression !== "zlib" && compression !== "zstd") {
    throw new CreateOptionError(`Parameter 'compression-type' does not accept value '${compression}'`);
  }
  const extendedL2 = (opts.get("extended_l2")?.value as boolean | undefined) ?? false;
  if (extendedL2 && version < 3) {
    throw new CreateOptionError(
      "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)",
    );
  }
  const clusterSize = (opts.get("cluster_size")?.value as bigint | undefined) ?? 65536n;
  const cs = Number(clusterSize);
  if (clusterSize < 512n || clusterSize > 2097152n || (clusterSize & (clusterSize - 1n)) !== 0n) {
    throw new CreateOptionError("Cluster size must be a power of two between 512 and 2048k");
  }
  if (extendedL2 && cs < 16384) {
    throw new CreateOptionError("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  }
  const lazy = (opts.get("lazy_refcounts")?.value as boolean | undefined) ?? false;
  if (lazy && version < 3) {
    throw new CreateOptionError(
      "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)",
    );
  }
  const refcountBits = (opts.get("refcount_bits")?.value as bigint | undefined) ?? 16n;
  if (refcountBits === 0n || refcountBits > 64n || (refcountBits & (refcountBits - 1n)) !== 0n) {
    throw new CreateOptionError("Refcount width must be a power of two and may not exceed 64 bits");
  }
  if (version < 3 && refcountBits !== 16n) {
    throw new CreateOptionError(
      "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)",
    );
  }
  if (compression !== "zlib" && version < 3) {
    throw new CreateOptionError(
      "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)",
    );
  }
  const l2Entries = cs / (extendedL2 ? 16 : 8);
  const l1Entries = Math.ceil(size / (cs * l2Entries));
  if (l1Entries > QCOW_MAX_L1_SIZE / 8 || !Number.isSafeInteger(size)) {
    throw new CreateOptionError("The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  const out: CreateOptions = {
    size,
    clusterSize: cs,
    compat: version === 2 ? "0.10" : "1.1",
    lazyRefcounts: lazy,
    refcountBits: Number(refcountBits),
    extendedL2,
    compressionType: compression,
  };
  const backing = opts.get("backing_file");
  if (backing) out.backingFile = backing.value as string;
  const backingFmt = opts.get("backing_fmt");
  if (backingFmt) out.backingFormat = backingFmt.value as string;
  return out;
}
