/** Helpers shared by the command modules: option specs, --help, --output, operand checks. */
import { type LongOption, type OptionSpec, type ParsedArgs, allValues, hasFlag, lastValue, parseArgs } from "../args.js";
import { parseSchemeOptionText, validateSchemeOptions } from "../../schemes/index.js";
import { type CliIo, processIo } from "../command.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { commandHelpText, HELP } from "../help.js";

export const HELP_LONG: LongOption = { name: "help", arg: false, key: "h" };
export const OUTPUT_LONG: LongOption = { name: "output", arg: true };
export const SCHEME_LONG: LongOption = { name: "scheme", arg: true };
export const SCHEME_OPT_LONG: LongOption = { name: "scheme-opt", arg: true };
export const ALLOC_LONG: LongOption = { name: "alloc", arg: true };
/** --no-reflink: copy the untouched part of a COW cluster even where the file system could share it. */
export const NO_REFLINK_LONG: LongOption = { name: "no-reflink", arg: false };

/**
 * --no-reflink for a command whose images are opened in worker threads or child processes it starts (run,
 * boot): REFCOW_REFLINK=0 for this process, which they inherit (io/node-file.ts reads it at every open).
 */
export function applyNoReflink(noReflink: boolean): void {
  if (noReflink) process.env.REFCOW_REFLINK = "0";
}
export const FORCE_SHARE_LONG: LongOption = { name: "force-share", arg: false, key: "U" };

/** Parses argv; returns undefined after printing help when -h/--help was given. */
export function parseCommandArgs(name: string, argv: string[], spec: OptionSpec, io: CliIo): ParsedArgs | undefined {
  const parsed = parseArgs(argv, spec);
  if (hasFlag(parsed, "h")) {
    io.out(commandHelpText(name, HELP[name]!));
    return undefined;
  }
  return parsed;
}

/**
 * --scheme and every --scheme-opt K=V[,K=V...] (merged, the last value of a key wins), validated against the
 * scheme (the default, eager, when --scheme is absent) before anything is opened: an unknown option, a bad
 * value, or an option for a scheme that takes none is one line and exit 1.
 */
export function schemeChoice(parsed: ParsedArgs): { scheme?: string; schemeOptions?: Record<string, string> } {
  const scheme = lastValue(parsed, "scheme");
  const texts = allValues(parsed, "scheme-opt");
  if (texts.length === 0) return { scheme };
  try {
    const schemeOptions = parseSchemeOptionText(texts);
    validateSchemeOptions(scheme, schemeOptions);
    return { scheme, schemeOptions };
  } catch (e) {
    throw new CliError(messageOf(e));
  }
}

export type OutputFormat = "human" | "json";

export function outputFormat(parsed: ParsedArgs): OutputFormat {
  const v = lastValue(parsed, "output");
  if (v === undefined || v === "human") return "human";
  if (v === "json") return "json";
  throw new CliError("--output must be used with human or json as argument.");
}

/** Exactly one operand: the image file name. */
export function oneFilename(parsed: ParsedArgs): string {
  if (parsed.operands.length !== 1) throw new UsageError("Expecting one image file name");
  return parsed.operands[0]!;
}

export function ioOf(io: CliIo | undefined): CliIo {
  return io ?? processIo;
}

/**
 * Runs `fn`, then closes `disk`. A failure to close (the final flush) after a successful `fn` is an error
 * of the command; after a failed `fn` the original error wins.
 */
export async function closing<T>(disk: { close(): void | Promise<void> }, name: string, fn: () => T | Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    try {
      await disk.close();
    } catch {
      // the first error is the one to report
    }
    throw e;
  }
  try {
    await disk.close();
  } catch (e) {
    throw new CliError(`${name}: ${messageOf(e)}`);
  }
  return result;
}
