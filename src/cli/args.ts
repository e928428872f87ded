/**
 * Command-line parsing with GNU getopt_long semantics, as qemu-img and qemu-io use it:
 * short options cluster ("-qc name"), take their argument attached or as the next word ("-fqcow2",
 * "-f qcow2"); long options take "--output=json" or "--output json" and may be abbreviated to any unique
 * prefix; options and operands may be mixed (arguments are permuted); "--" ends the options.
 * Errors carry qemu-img's wording: "unrecognized option '-z'", "missing argument for option '-c'".
 */
import { UsageError } from "./errors.js";

export interface LongOption {
  name: string;
  /** Whether the option takes an argument. */
  arg: boolean;
  /** The key under which the option is reported; defaults to the name. */
  key?: string;
}

export interface OptionSpec {
  /** getopt short-option string without the leading ':' — e.g. "hf:o:qu". */
  short: string;
  long?: LongOption[];
  /** Stop at the first operand instead of permuting (qemu-io's command parser: "+" mode). */
  stopAtOperand?: boolean;
}

export interface ParsedOption {
  /** Short option letter, or the long option's key. */
  key: string;
  value?: string;
}

export interface ParsedArgs {
  options: ParsedOption[];
  operands: string[];
}

function shortTable(spec: string): Map<string, boolean> {
  const table = new Map<string, boolean>();
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i]!;
    if (c === ":") continue;
    table.set(c, spec[i + 1] === ":");
  }
  return table;
}

export function parseArgs(argv: readonly string[], spec: OptionSpec): ParsedArgs {
  const shorts = shortTable(spec.short);
  const longs = spec.long ?? [];
  const options: ParsedOption[] = [];
  const operands: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const word = argv[i]!;
    if (word === "--") {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (word.startsWith("--")) {
      const eq = word.indexOf("=");
      const name = eq >= 0 ? word.slice(2, eq) : word.slice(2);
      const exact = longs.find((o) => o.name === name);
      const candidates = exact ? [exact] : longs.filter((o) => o.name.startsWith(name));
      if (candidates.length !== 1 || name === "") throw new UsageError(`unrecognized option '${word}'`);
      const opt = candidates[0]!;
      const key = opt.key ?? opt.name;
      if (!opt.arg) {
        if (eq >= 0) throw new UsageError(`unrecognized option '${word}'`);
        options.push({ key });
        i += 1;
        continue;
      }
      if (eq >= 0) {
        options.push({ key, value: word.slice(eq + 1) });
        i += 1;
        continue;
      }
      if (i + 1 >= argv.length) throw new UsageError(`missing argument for option '${word}'`);
      options.push({ key, value: argv[i + 1]! });
      i += 2;
      continue;
    }
    if (word.startsWith("-") && word.length > 1) {
      let j = 1;
      let consumedNext = false;
      while (j < word.length) {
        const c = word[j]!;
        const takesArg = shorts.get(c);
        if (takesArg === undefined) throw new UsageError(`unrecognized option '${word}'`);
        if (!takesArg) {
          options.push({ key: c });
          j += 1;
          continue;
        }
        if (j + 1 < word.length) {
          options.push({ key: c, value: word.slice(j + 1) });
        } else {
          if (i + 1 >= argv.length) throw new UsageError(`missing argument for option '${word}'`);
          options.push({ key: c, value: argv[i + 1]! });
          consumedNext = true;
        }
        break;
      }
      i += consumedNext ? 2 : 1;
      continue;
    }
    if (spec.stopAtOperand) {
      operands.push(...argv.slice(i));
      break;
    }
    operands.push(word);
    i += 1;
  }
  return { options, operands };
}

/** The last value given for `key`, if any. */
export function lastValue(parsed: ParsedArgs, key: string): string | undefined {
  let v: string | undefined;
  for (const o of parsed.options) if (o.key === key) v = o.value;
  return v;
}

export function hasFlag(parsed: ParsedArgs, key: string): boolean {
  return parsed.options.some((o) => o.key === key);
}

export function allValues(parsed: ParsedArgs, key: string): string[] {
  return parsed.options.filter((o) => o.key === key).map((o) => o.value ?? "");
}
