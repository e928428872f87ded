/**
 * QEMU's QObject output, reproduced byte for byte: qemu-img's JSON (info, check) is a QAPI struct turned
 * into a QDict and printed by qobject_to_json_pretty, and its human "Format specific information" block is
 * printed by block/qapi.c's dump_qdict. Neither keeps the schema's field order: a QDict is a hash table of
 * 512 buckets (qobject/qdict.c, tdb_hash), iterated bucket by bucket, and each bucket is a list with the
 * newest entry first. QDict below keeps that order, so `qemu-img info --output=json` and
 * `refcow info --output=json` print the same bytes.
 */

export type QValue = string | number | bigint | boolean | QDict | QValue[];

const QDICT_BUCKET_MAX = 512;

/** qobject/qdict.c tdb_hash ("from the TDB library"). */
export function tdbHash(name: string): number {
  const bytes = new TextEncoder().encode(name);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

export class QDict {
  private readonly entries: { key: string; value: QValue; seq: number }[] = [];
  private seq = 0;

  /** qdict_put: insert, or replace the value of an existing key in place. */
  put(key: string, value: QValue): this {
    const existing = this.entries.find((e) => e.key === key);
    if (existing) existing.value = value;
    else this.entries.push({ key, value, seq: this.seq++ });
    return this;
  }

  /** Puts the value only when it is defined (a QAPI optional member with has_* = true). */
  putOptional(key: string, value: QValue | undefined): this {
    if (value !== undefined) this.put(key, value);
    return this;
  }

  get(key: string): QValue | undefined {
    return this.entries.find((e) => e.key === key)?.value;
  }

  /** Entries in qdict_first/qdict_next order: by bucket, newest first within a bucket. */
  ordered(): [string, QValue][] {
    return this.entries
      .map((e) => ({ ...e, bucket: tdbHash(e.key) % QDICT_BUCKET_MAX }))
      .sort((a, b) => a.bucket - b.bucket || b.seq - a.seq)
      .map((e) => [e.key, e.value]);
  }
}

/** qobject/qjson.c string escaping: \" \\ \b \f \n \r \t, other controls and non-ASCII as \uXXXX (upper-case hex). */
export function jsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case "\\":
        out += "\\\\";
        continue;
      case "\b":
        out += "\\b";
        continue;
      case "\f":
        out += "\\f";
        continue;
      case "\n":
        out += "\\n";
        continue;
      case "\r":
        out += "\\r";
        continue;
      case "\t":
        out += "\\t";
        continue;
    }
    const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, "0");
    if (cp > 0xffff) {
      out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
    } else if (cp < 0x20 || cp >= 0x7f) {
      out += `\\u${hex4(cp)}`;
    } else {
      out += ch;
    }
  }
  return `${out}"`;
}

function scalar(v: QValue): string {
  if (typeof v === "string") return jsonString(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return Number.isInteger(v) ? v.toFixed(0) : String(v);
  throw new Error("not a scalar");
}

function newline(pretty: boolean, indent: number): string {
  return pretty ? `\n${" ".repeat(4 * indent)}` : "";
}

/** qobject_to_json / qobject_to_json_pretty. */
export function toJson(v: QValue, pretty = true, indent = 0): string {
  if (v instanceof QDict) {
    let out = "{";
    let sep = "";
    for (const [key, value] of v.ordered()) {
      out += sep + newline(pretty, indent + 1) + jsonString(key) + ": " + toJson(value, pretty, indent + 1);
      sep = pretty ? "," : ", ";
    }
    return `${out}${newline(pretty, indent)}}`;
  }
  if (Array.isArray(v)) {
    let out = "[";
    let sep = "";
    for (const value of v) {
      out += sep + newline(pretty, indent + 1) + toJson(value, pretty, indent + 1);
      sep = pretty ? "," : ", ";
    }
    return `${out}${newline(pretty, indent)}]`;
  }
  return scalar(v);
}

function humanScalar(v: QValue): string {
  if (typeof v === "string") return v;
  if (typeof v === "boolean") return v ? "true" : "false";
  return typeof v === "bigint" ? v.toString() : String(v);
}

/** block/qapi.c dump_qobject: the human rendering of a QObject tree, 4 spaces per level. */
export function dumpQObject(indentation: number, v: QValue): string {
  if (v instanceof QDict) {
    let out = "";
    for (const [key, value] of v.ordered()) {
      const composite = value instanceof QDict || Array.isArray(value);
      out += `${" ".repeat(indentation * 4)}${key.replace(/-/g, " ")}:${composite ? "\n" : " "}`;
      out += dumpQObject(indentation + 1, value);
      if (!composite) out += "\n";
    }
    return out;
  }
  if (Array.isArray(v)) {
    let out = "";
    v.forEach((value, i) => {
      const composite = value instanceof QDict || Array.isArray(value);
      out += `${" ".repeat(indentation * 4)}[${i}]:${composite ? "\n" : " "}`;
      out += dumpQObject(indentation + 1, value);
      if (!composite) out += "\n";
    });
    return out;
  }
  return humanScalar(v);
}
