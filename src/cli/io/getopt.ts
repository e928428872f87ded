/**
 * The option language of qemu-io's commands: glibc getopt(3) as qemu-io calls it, driven by a table that each
 * command declares (its options, which take a value and how the value is read, its operand count, and the
 * combinations qemu-io refuses).
 *
 * - Short options only. Several may share one word ("-Cqv"); an option that takes a value takes the rest of
 *   its word ("-P0x11"), else the next word whatever it looks like ("-P -q" reads "-q" as the pattern).
 * - Options and operands mix, as glibc permutes them ("read 0 512 -q" is "read -q 0 512"); "--" ends the
 *   options; a lone "-" is an operand. "--x" is no long option here: its '-' is an unknown option letter.
 * - Options act in the order given, each as getopt returns it to qemu-io's loop: a value that does not read
 *   stops the command there, before a later unknown option is seen ("read -P x -z" complains of the pattern),
 *   and so does an option that ends the command (aio_read -i).
 * - An unknown option or a missing value: glibc's line on stderr ("read: invalid option -- 'x'", "read:
 *   option requires an argument -- 'P'"), then the command's usage line on stdout.
 * - After the options: the operand count (usage line when outside the table's bounds), then the table's rules
 *   in their order. Rules that qemu-io checks only once the operands are converted wait for `refused()`.
 * Every refusal is the command's status EINVAL, except an option that ends the command with its own status.
 */
import type { IoContext } from "./context.js";

export const EINVAL = -22;

/** What a refusal prints: a line on stdout, an error_report line on stderr ("refcow: ..."), or the usage line. */
export type Say = { out: string } | { err: string } | "usage";

/** An option without a value: present or not. */
export interface FlagOption {
  kind: "flag";
}

/** An option with a value, read by `parse`, which prints qemu-io's complaint and gives undefined when it cannot. */
export interface ValueOption<T> {
  kind: "value";
  parse(ctx: IoContext, arg: string): T | undefined;
  /** Every value given, in order (open -o), instead of the last one. */
  many?: boolean;
}

/** An option that ends the command as soon as getopt returns it, printing `say` (aio_read -i). */
export interface EndOption {
  kind: "end";
  say: string;
  status: number;
}

export type OptionDecl = FlagOption | ValueOption<unknown> | EndOption;
export type OptionDecls = Record<string, OptionDecl>;

/** The options given, typed by the table: true for a flag, the read value (or values) for the others. */
export type OptionValues<F extends OptionDecls> = {
  [K in keyof F]?: F[K] extends ValueOption<infer T> ? (F[K] extends { many: true } ? T[] : T) : F[K] extends FlagOption ? true : never;
};

/** A combination qemu-io refuses. */
export interface Rule {
  /** Whether the options given (`given(letter)`) and the operands break the rule. */
  broken(given: (letter: string) => boolean, operands: readonly string[]): boolean;
  say: Say;
}

export interface OptionTable<F extends OptionDecls> {
  options: F;
  /** Letters of which only one may be given, refused as soon as a second one is met (reopen -r / -w). */
  oneOf?: { letters: string; say: Say };
  /** How many operands the command takes; outside these bounds, the usage line. */
  operands: { min: number; max?: number };
  /** Checked after the operand count, in order. */
  rules?: readonly Rule[];
  /** Checked when the command has converted its operands (`refused()`), in order. */
  operandRules?: readonly Rule[];
}

/** One option as given, in order (for options whose effects override each other: open -n and -t). */
export interface GivenOption {
  letter: string;
  value?: unknown;
}

export interface ParsedCommand<F extends OptionDecls> {
  opts: OptionValues<F>;
  given: readonly GivenOption[];
  operands: string[];
  /** Prints the usage line; the status to return. */
  usage(): number;
  /** The table's operand rules: the status to return if one is broken (after its message), else undefined. */
  refused(): number | undefined;
}

/** What a command's usage line and glibc's complaints name. */
export interface CommandNames {
  name: string;
  args?: string;
  oneline: string;
}

export function usageLine(cmd: CommandNames): string {
  return `${cmd.name} ${cmd.args !== undefined ? `${cmd.args} ` : ""}-- ${cmd.oneline}\n`;
}

export const flag = (): FlagOption => ({ kind: "flag" });

export function value<T>(parse: (ctx: IoContext, arg: string) => T | undefined): ValueOption<T> {
  return { kind: "value", parse };
}

export function values<T>(parse: (ctx: IoContext, arg: string) => T | undefined): ValueOption<T> & { many: true } {
  return { kind: "value", parse, many: true };
}

export const endsCommand = (say: string, status: number): EndOption => ({ kind: "end", say, status });

/** Any value, as given. */
export const text = (_ctx: IoContext, arg: string): string => arg;

/** A value from a fixed set of names; otherwise `complaint(arg)` as an error_report line. */
export function oneOfNames(names: ReadonlySet<string>, complaint: (arg: string) => string): (ctx: IoContext, arg: string) => string | undefined {
  return (ctx, arg) => {
    if (names.has(arg)) return arg;
    ctx.io.err(`refcow: ${complaint(arg)}\n`);
    return undefined;
  };
}

/** Refused when `letter` is given with any of `others`. */
export const notWith = (letter: string, others: string, say: Say): Rule => ({
  broken: (given) => given(letter) && [...others].some(given),
  say,
});

/** Refused when any of `letters` is given without any of `needs`. */
export const needs = (letters: string, needed: string, say: Say): Rule => ({
  broken: (given) => [...letters].some(given) && ![...needed].some(given),
  say,
});

/** Refused when more than one of `letters` is given. */
export const atMostOne = (letters: string, say: Say): Rule => ({
  broken: (given) => [...letters].filter(given).length > 1,
  say,
});

function tell(ctx: IoContext, cmd: CommandNames, say: Say): number {
  if (say === "usage") ctx.io.out(usageLine(cmd));
  else if ("out" in say) ctx.io.out(`${say.out}\n`);
  else ctx.io.err(`refcow: ${say.err}\n`);
  return EINVAL;
}

/** The first broken rule's status after its message, or undefined. */
function firstBroken(ctx: IoContext, cmd: CommandNames, rules: readonly Rule[], given: (letter: string) => boolean, operands: readonly string[]): number | undefined {
  const rule = rules.find((r) => r.broken(given, operands));
  return rule ? tell(ctx, cmd, rule.say) : undefined;
}

/**
 * Parses `argv` (the command's name, then its words) by `table`: the parsed command, or the status to
 * return after the complaint has been printed.
 */
export function parseCommand<F extends OptionDecls>(ctx: IoContext, cmd: CommandNames, argv: readonly string[], table: OptionTable<F>): ParsedCommand<F> | number {
  const opts: Record<string, unknown> = {};
  const given: GivenOption[] = [];
  const operands: string[] = [];
  const complain = (line: string): number => {
    ctx.io.err(`${argv[0]}: ${line}\n`);
    ctx.io.out(usageLine(cmd));
    return EINVAL;
  };
  for (let i = 1; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (!word.startsWith("-") || word === "-") {
      operands.push(word);
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const letter = word[j]!;
      const decl = Object.hasOwn(table.options, letter) ? table.options[letter] : undefined;
      if (!decl) return complain(`invalid option -- '${letter}'`);
      if (table.oneOf?.letters.includes(letter) && given.some((g) => table.oneOf!.letters.includes(g.letter))) return tell(ctx, cmd, table.oneOf.say);
      if (decl.kind === "end") {
        ctx.io.out(`${decl.say}\n`);
        return decl.status;
      }
      if (decl.kind === "flag") {
        opts[letter] = true;
        given.push({ letter });
        continue;
      }
      let arg: string;
      if (j + 1 < word.length) arg = word.slice(j + 1);
      else if (i + 1 < argv.length) arg = argv[++i]!;
      else return complain(`option requires an argument -- '${letter}'`);
      const v = decl.parse(ctx, arg);
      if (v === undefined) return EINVAL;
      if (decl.many) ((opts[letter] ??= []) as unknown[]).push(v);
      else opts[letter] = v;
      given.push({ letter, value: v });
      break;
    }
  }
  const isGiven = (letter: string): boolean => given.some((g) => g.letter === letter);
  const { min, max } = table.operands;
  if (operands.length < min || (max !== undefined && operands.length > max)) return tell(ctx, cmd, "usage");
  const broken = firstBroken(ctx, cmd, table.rules ?? [], isGiven, operands);
  if (broken !== undefined) return broken;
  return {
    opts: opts as OptionValues<F>,
    given,
    operands,
    usage: () => tell(ctx, cmd, "usage"),
    refused: () => firstBroken(ctx, cmd, table.operandRules ?? [], isGiven, operands),
  };
}
