/**
 * The entry of every benchmark program under src/bench (`node dist/bench/NAME.js [options]`).
 *
 * `runProgram(import.meta.url, program, main)` runs `main` only when its module is the script node was started
 * with, so a runner can be imported for its functions without running. It parses the options with
 * node:util's parseArgs (strict: an unknown option or a missing value is an error), prints the program's usage
 * on --help or -h, and ends the process with the status main returns (0 when it returns nothing); an error
 * ends it with status 1 and one line on stderr (its stack, unless it is a mistake on the command line).
 * Results go to stdout; progress goes to stderr (`progress`), so that stdout can be redirected to a file.
 */
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { CACHE_MODES, type CacheMode } from "../engine/types.js";

type OptionsConfig = NonNullable<ParseArgsConfig["options"]>;

/** The parsed values of a program's options, typed from its option table. */
export type OptionValues<T extends OptionsConfig> = ReturnType<typeof parseArgs<{ options: T; strict: true; allowPositionals: false }>>["values"];

export interface BenchProgram<T extends OptionsConfig> {
  /** How error lines name the program ("virtio bench"). */
  name: string;
  /** What --help prints. */
  usage: string;
  /** The option table, as node:util parseArgs takes it (--help and -h are added). */
  options: T;
}

/** A mistake on the command line: reported as one line, without a stack. */
export class BenchUsageError extends Error {
  override name = "BenchUsageError";
}

/** One line of progress on stderr. */
export function progress(message: string): void {
  process.stderr.write(message + "\n");
}

/** Whether the module at `moduleUrl` is the script the process was started with. */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  return script !== undefined && moduleUrl === pathToFileURL(path.resolve(script)).href;
}

/**
 * The option values of `argv`, or "help" when --help or -h is among them. The word after a string option is
 * its value even when it starts with a dash (`--refcow-args "--serve=ring"`), which parseArgs alone refuses.
 */
export function parseOptions<T extends OptionsConfig>(argv: string[], options: T): OptionValues<T> | "help" {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const takesValue = a.startsWith("--") && !a.includes("=") && options[a.slice(2)]?.type === "string";
    args.push(takesValue && i + 1 < argv.length ? `${a}=${argv[++i]}` : a);
  }
  if (args.includes("--help") || args.includes("-h")) return "help";
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values as OptionValues<T>;
  } catch (e) {
    throw new BenchUsageError((e as Error).message);
  }
}

/** A number option: undefined when absent; a usage error unless it is an integer ≥ min. */
export function integerOption(flag: string, v: string | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new BenchUsageError(`--${flag} needs an integer of at least ${min}, not '${v}'`);
  return n;
}

/** A number option: undefined when absent; a usage error unless it is a finite number ≥ 0. */
export function nonNegativeOption(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new BenchUsageError(`--${flag} needs a non-negative number, not '${v}'`);
  return n;
}

/** A comma-separated list option ("a,b"): undefined when absent. */
export function listOption(v: string | undefined): string[] | undefined {
  return v === undefined ? undefined : v.split(",").filter(Boolean);
}

/** The options of the runners that repeat a guest workload over schemes and cache modes (virtio, guest-cuts). */
export const GUEST_MATRIX_OPTIONS = {
  reps: { type: "string" },
  clusters: { type: "string" },
  schemes: { type: "string" },
  cache: { type: "string" },
  json: { type: "string" },
} as const;

/** GUEST_MATRIX_OPTIONS' values, checked: each undefined when absent (the runner's default). */
export function guestMatrixValues(v: OptionValues<typeof GUEST_MATRIX_OPTIONS>): { reps?: number; clusters?: number; schemes?: string[]; caches?: CacheMode[] } {
  const caches = listOption(v.cache);
  for (const c of caches ?? []) if (!(CACHE_MODES as readonly string[]).includes(c)) throw new BenchUsageError(`--cache takes ${CACHE_MODES.join(", ")}, not '${c}'`);
  return { reps: integerOption("reps", v.reps), clusters: integerOption("clusters", v.clusters), schemes: listOption(v.schemes), caches: caches as CacheMode[] | undefined };
}

/** Runs `main` with the parsed options when the calling module is the process's script; see the top. */
export function runProgram<T extends OptionsConfig>(moduleUrl: string, program: BenchProgram<T>, main: (values: OptionValues<T>) => Promise<number | void>): void {
  if (!isMainModule(moduleUrl)) return;
  const run = async (): Promise<number> => {
    const values = parseOptions(process.argv.slice(2), program.options);
    if (values === "help") {
      process.stdout.write(program.usage.endsWith("\n") ? program.usage : program.usage + "\n");
      return 0;
    }
    return (await main(values)) ?? 0;
  };
  run().then(
    (status) => process.exit(status),
    (e: unknown) => {
      const text = e instanceof BenchUsageError ? `${e.message} (--help for the options)` : e instanceof Error ? (e.stack ?? e.message) : String(e);
      process.stderr.write(`${program.name}: ${text}\n`);
      process.exit(1);
    },
  );
}
