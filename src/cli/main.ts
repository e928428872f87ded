/**
 * refcow's command line: qemu-img compatible commands (create, info, check, snapshot, bitmap, convert,
 * compare, map), qemu-io as `refcow io`, and the commands other layers register (bench, run, experiment).
 *
 * Every failure ends as one line on stderr, "refcow: <message>", and an exit code (1 unless the command
 * defines its own, as check and compare do); never a stack trace.
 */
import { type CliIo, type Command, type CommandRun, processIo } from "./command.js";
import { BENCH_SUMMARY, BENCH_USAGE } from "./commands/bench-help.js";
import { BOOT_HELP, BOOT_SUMMARY, BOOT_USAGE } from "./commands/boot-help.js";
import { CRASH_TEST_HELP, CRASH_TEST_SUMMARY, CRASH_TEST_USAGE } from "./commands/crash-test-help.js";
import { EXPERIMENT_HELP, EXPERIMENT_SUMMARY, EXPERIMENT_USAGE } from "./commands/experiment-help.js";
import { NBD_HELP, NBD_SUMMARY, NBD_USAGE } from "./commands/nbd-help.js";
import { OS_IMAGE_HELP, OS_IMAGE_SUMMARY, OS_IMAGE_USAGE } from "./commands/os-image-help.js";
import { REPORT_HELP, REPORT_SUMMARY, REPORT_USAGE } from "./commands/report-help.js";
import { RUN_HELP, RUN_SUMMARY, RUN_USAGE } from "./commands/run-help.js";
import { CliError, messageOf, UsageError } from "./errors.js";
import { HELP } from "./help.js";

export type { CliIo, Command, CommandRun } from "./command.js";

/**
 * A command whose module is imported only when the command runs: a command's module pulls in its layer (the
 * benchmarks, the emulator, the NBD server...), and `refcow info` should not wait for all of them to load.
 */
function lazy(load: () => Promise<CommandRun>): CommandRun {
  return async (argv, io) => (await load())(argv, io);
}

/** For a command that needs its output streams: the process's when the caller passes none. */
function orProcessIo(run: (argv: string[], io: CliIo) => Promise<number>): CommandRun {
  return (argv, io) => run(argv, io ?? processIo);
}

function builtin(name: string, load: () => Promise<CommandRun>): Command {
  const h = HELP[name]!;
  return { summary: h.summary, usage: h.usage, help: h.help, run: lazy(load) };
}

/**
 * The dispatch table. Other layers add their commands here — `bench`, `run` and `experiment` belong to
 * bench/ and guest/ — either by an entry below or by calling registerCommand() from a module main.ts imports.
 * A command receives the arguments after its name and returns its exit code. Its help text lives in a module
 * of its own (help.ts, commands/*-help.ts), so that `refcow --help` and the table load no command.
 */
export const commands: Record<string, Command> = {
  create: builtin("create", async () => (await import("./commands/create.js")).createCommand),
  info: builtin("info", async () => (await import("./commands/info.js")).infoCommand),
  check: builtin("check", async () => (await import("./commands/check.js")).checkCommand),
  snapshot: builtin("snapshot", async () => (await import("./commands/snapshot.js")).snapshotCommand),
  bitmap: builtin("bitmap", async () => (await import("./commands/bitmap.js")).bitmapCommand),
  convert: builtin("convert", async () => (await import("./commands/convert.js")).convertCommand),
  compare: builtin("compare", async () => (await import("./commands/compare.js")).compareCommand),
  map: builtin("map", async () => (await import("./commands/map.js")).mapCommand),
  rebase: builtin("rebase", async () => (await import("./commands/rebase.js")).rebaseCommand),
  compact: builtin("compact", async () => (await import("./commands/compact.js")).compactCommand),
  io: builtin("io", async () => (await import("./commands/io.js")).ioCommand),
  bench: {
    summary: BENCH_SUMMARY,
    usage: BENCH_USAGE,
    run: lazy(async () => orProcessIo((await import("./commands/bench.js")).benchCommand)),
  },
  experiment: {
    summary: EXPERIMENT_SUMMARY,
    usage: EXPERIMENT_USAGE,
    help: EXPERIMENT_HELP,
    run: lazy(async () => orProcessIo((await import("./commands/experiment.js")).experimentCommand)),
  },
  report: {
    summary: REPORT_SUMMARY,
    usage: REPORT_USAGE,
    help: REPORT_HELP,
    run: lazy(async () => orProcessIo((await import("./commands/report.js")).reportCommand)),
  },
  run: { summary: RUN_SUMMARY, usage: RUN_USAGE, help: RUN_HELP, run: lazy(async () => (await import("./commands/run.js")).runCommand) },
  nbd: { summary: NBD_SUMMARY, usage: NBD_USAGE, help: NBD_HELP, run: lazy(async () => (await import("./commands/nbd.js")).nbdCommand) },
  boot: { summary: BOOT_SUMMARY, usage: BOOT_USAGE, help: BOOT_HELP, run: lazy(async () => (await import("./commands/boot.js")).bootCommand) },
  "os-image": { summary: OS_IMAGE_SUMMARY, usage: OS_IMAGE_USAGE, help: OS_IMAGE_HELP, run: lazy(async () => (await import("./commands/os-image.js")).osImageCommand) },
  "crash-test": { summary: CRASH_TEST_SUMMARY, usage: CRASH_TEST_USAGE, help: CRASH_TEST_HELP, run: lazy(async () => (await import("./commands/crash-test.js")).crashTestCommand) },
};

export function registerCommand(name: string, command: Command): void {
  commands[name] = command;
}

const VERSION = "0.1.0";

function topHelp(): string {
  const names = Object.keys(commands);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  let out =
    `refcow version ${VERSION}\n` +
    "usage: refcow [-h | --help | -V | --version] command [command options]\n" +
    "qcow2 disk image engine; the image commands take qemu-img's options and print qemu-img's output,\n" +
    "`refcow io` takes qemu-io's.\n\nCommands:\n";
  for (const n of names) out += `  ${n.padEnd(width)}${commands[n]!.summary}\n`;
  out += "\n'refcow <command> --help' shows a command's options.\n";
  return out;
}

/**
 * `--cache-dir DIR` (or `=DIR`), taken wherever it appears: the persistent chunk cache of images read by
 * http(s) URL ("off": none). Passed on as $REFCOW_HTTP_CACHE, which worker threads inherit.
 */
function takeCacheDir(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--cache-dir" || a.startsWith("--cache-dir=")) {
      const value = a === "--cache-dir" ? argv[++i] : a.slice("--cache-dir=".length);
      if (!value) throw new UsageError("option '--cache-dir' requires an argument");
      process.env.REFCOW_HTTP_CACHE = value;
    } else out.push(a);
  }
  return out;
}

/** Runs the CLI with `argv` (the arguments after the program name); resolves to the exit code. */
export async function main(argv0: string[], io: CliIo = processIo): Promise<number> {
  let first = argv0[0];
  try {
    const argv = takeCacheDir(argv0);
    first = argv[0];
    if (first === undefined) throw new UsageError("Not enough arguments");
    if (first === "-h" || first === "--help" || first === "help") {
      io.out(topHelp());
      return 0;
    }
    if (first === "-V" || first === "--version") {
      io.out(`refcow version ${VERSION}\n`);
      return 0;
    }
    if (first.startsWith("-")) throw new UsageError(`unrecognized option '${first}'`);
    const command = commands[first];
    if (!command) throw new UsageError(`Command not found: ${first}`);
    return await command.run(argv.slice(1), io);
  } catch (e) {
    if (e instanceof UsageError) {
      const hint = first && commands[first] ? `refcow ${first} --help` : "refcow --help";
      io.err(`refcow: ${e.message} (try '${hint}')\n`);
      return e.exitCode;
    }
    if (e instanceof CliError) {
      io.err(`refcow: ${e.message}\n`);
      return e.exitCode;
    }
    io.err(`refcow: ${messageOf(e)}\n`);
    return 1;
  }
}
