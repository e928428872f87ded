/**
 * refcow's command line: qemu-img compatible commands (create, info, check, snapshot, bitmap, convert,
 * compare, map), qemu-io as `refcow io`, and the commands other layers register (bench, run, experiment).
 *
 * Every failure ends as one line on stderr, "refcow: <message>", and an exit code (1 unless the command
 * defines its own, as check and compare do); never a stack trace.
 */
import { type CliIo, type Command, type CommandRun, processIo } from "./command.js";
import { bitmapCommand } from "./commands/bitmap.js";
import { checkCommand } from "./commands/check.js";
import { compactCommand } from "./commands/compact.js";
import { compareCommand } from "./commands/compare.js";
import { convertCommand } from "./commands/convert.js";
import { createCommand } from "./commands/create.js";
import { infoCommand } from "./commands/info.js";
import { ioCommand } from "./commands/io.js";
import { mapCommand } from "./commands/map.js";
import { rebaseCommand } from "./commands/rebase.js";
import { snapshotCommand } from "./commands/snapshot.js";
import { BENCH_USAGE, benchCommand } from "./commands/bench.js";
import { RUN_HELP, RUN_SUMMARY, RUN_USAGE, runCommand } from "./commands/run.js";
import { REPORT_HELP, REPORT_SUMMARY, REPORT_USAGE, reportCommand } from "./commands/report.js";
import { EXPERIMENT_HELP, EXPERIMENT_SUMMARY, EXPERIMENT_USAGE, experimentCommand } from "./commands/experiment.js";
import { CRASH_TEST_HELP, CRASH_TEST_USAGE, crashTestCommand } from "./commands/crash-test.js";
import { NBD_HELP, NBD_SUMMARY, NBD_USAGE, nbdCommand } from "./commands/nbd.js";
import { BOOT_HELP, BOOT_SUMMARY, BOOT_USAGE, bootCommand } from "./commands/boot.js";
import { OS_IMAGE_HELP, OS_IMAGE_SUMMARY, OS_IMAGE_USAGE, osImageCommand } from "./commands/os-image.js";
import { CliError, messageOf, UsageError } from "./errors.js";
import { HELP } from "./help.js";

export type { CliIo, Command, CommandRun } from "./command.js";

function builtin(name: string, run: CommandRun): Command {
  const h = HELP[name]!;
  return { summary: h.summary, usage: h.usage, help: h.help, run };
}

/**
 * The dispatch table. Other layers add their commands here — `bench`, `run` and `experiment` belong to
 * bench/ and guest/ — either by an entry below or by calling registerCommand() from a module main.ts imports.
 * A command receives the arguments after its name and returns its exit code.
 */
export const commands: Record<string, Command> = {
  create: builtin("create", createCommand),
  info: builtin("info", infoCommand),
  check: builtin("check", checkCommand),
  snapshot: builtin("snapshot", snapshotCommand),
  bitmap: builtin("bitmap", bitmapCommand),
  convert: builtin("convert", convertCommand),
  compare: builtin("compare", compareCommand),
  map: builtin("map", mapCommand),
  rebase: builtin("rebase", rebaseCommand),
  compact: builtin("compact", compactCommand),
  io: builtin("io", ioCommand),
  bench: { summary: "the write-after-snapshot benchmark (schemes, QEMU, raw file) or the request ring's round trip", usage: BENCH_USAGE, run: (argv, io) => benchCommand(argv, io ?? processIo) },
  experiment: { summary: EXPERIMENT_SUMMARY, usage: EXPERIMENT_USAGE, help: EXPERIMENT_HELP, run: (argv, io) => experimentCommand(argv, io ?? processIo) },
  report: { summary: REPORT_SUMMARY, usage: REPORT_USAGE, help: REPORT_HELP, run: (argv, io) => reportCommand(argv, io ?? processIo) },
  run: { summary: RUN_SUMMARY, usage: RUN_USAGE, help: RUN_HELP, run: (argv, io) => runCommand(argv, io) },
  nbd: { summary: NBD_SUMMARY, usage: NBD_USAGE, help: NBD_HELP, run: nbdCommand },
  boot: { summary: BOOT_SUMMARY, usage: BOOT_USAGE, help: BOOT_HELP, run: bootCommand },
  "os-image": { summary: OS_IMAGE_SUMMARY, usage: OS_IMAGE_USAGE, help: OS_IMAGE_HELP, run: osImageCommand },
  "crash-test": { summary: "crash-consistency harness: every crash state of seeded workloads, recovered and verified", usage: CRASH_TEST_USAGE, help: CRASH_TEST_HELP, run: crashTestCommand },
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
