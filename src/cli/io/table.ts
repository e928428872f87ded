/**
 * qemu-io's command interpreter (qemu-io-cmds.c, QEMU 7.2) for the commands refcow implements: read, readv,
 * write, writev, aio_read, aio_write, aio_flush, discard, flush, alloc, map, truncate, length, info, open,
 * close, reopen, sleep, sigraise, abort, help, quit. Same syntax, same validation order, same messages on the
 * same streams (per-command results and failures on stdout, "command not found" / argument-count errors,
 * getopt complaints and error_report messages on stderr), and the same status: a command fails with
 * non-zero, which makes the whole run exit 1 — including a `read -P` pattern mismatch (qemu-io 7.2 does the
 * same); an aio request's completion never does. The rest of qemu-io's commands (UNSUPPORTED_COMMANDS) and
 * options fail with one line naming them.
 *
 * This module holds the command table and runs one command line: it finds the command, checks what qemu-io
 * checks before the command sees its words (an open image, the argument count, write permission), and hands
 * them to the command, which reads its options by its own table (getopt.ts).
 */
import { EINVAL, type IoCommand, ioCommand, unsupported } from "./command.js";
import type { IoContext } from "./context.js";
import { aioFlushCmd, aioReadCmd, aioWriteCmd } from "./aio-commands.js";
import { discardCmd, flushCmd, readCmd, writeCmd } from "./data-commands.js";
import { usageLine } from "./getopt.js";
import { allocCmd, infoCmd, lengthCmd, mapCmd, truncateCmd } from "./image-commands.js";
import { abortCmd, closeCmd, openCmd, quitCmd, reopenCmd, sigraiseCmd, sleepCmd } from "./session-commands.js";
import { readvCmd, writevCmd } from "./vector-commands.js";

export type { IoCommand } from "./command.js";

/**
 * qemu-io 7.2's commands that refcow does not have: the block layer's debugging hooks (blkdebug
 * breakpoints).
 */
export const UNSUPPORTED_COMMANDS: readonly string[] = ["break", "remove_break", "resume", "wait_break"];

const helpCmd = ioCommand({
  name: "help",
  altname: "?",
  args: "[command]",
  oneline: "help for one or all commands",
  argmin: 0,
  argmax: 1,
  nofile: true,
  async run(ctx, p) {
    const name = p.operands[0];
    if (name === undefined) {
      for (const c of [...COMMANDS].sort((a, b) => a.name.localeCompare(b.name))) ctx.io.out(usageLine(c));
      ctx.io.out("\nUse 'help commandname' for extended help.\n");
      return 0;
    }
    const c = findCommand(name);
    if (!c && UNSUPPORTED_COMMANDS.includes(name)) return unsupported(ctx, name);
    if (!c) {
      ctx.io.out(`command ${name} not found\n`);
      return EINVAL;
    }
    ctx.io.out(usageLine(c));
    if (c.help) ctx.io.out(c.help);
    return 0;
  },
});

export const COMMANDS: readonly IoCommand[] = [
  readCmd,
  readvCmd,
  writeCmd,
  writevCmd,
  aioReadCmd,
  aioWriteCmd,
  aioFlushCmd,
  discardCmd,
  flushCmd,
  allocCmd,
  mapCmd,
  truncateCmd,
  lengthCmd,
  infoCmd,
  sleepCmd,
  sigraiseCmd,
  abortCmd,
  openCmd,
  closeCmd,
  reopenCmd,
  helpCmd,
  quitCmd,
];

function findCommand(name: string): IoCommand | undefined {
  return COMMANDS.find((c) => c.name === name || c.altname === name);
}

/** Splits a command line on spaces (qemu-io's breakline: no quoting). */
export function splitCommandLine(line: string): string[] {
  return line.split(" ").filter((w) => w.length > 0);
}

/** "expected ..." of qemu-io's argument-count complaint. */
function expectedCount(cmd: IoCommand): string {
  if (cmd.argmax === 0) return "0 arguments";
  if (cmd.argmax === cmd.argmin) return `${cmd.argmin} arguments`;
  if (cmd.argmax === -1) return `at least ${cmd.argmin} arguments`;
  return `between ${cmd.argmin} and ${cmd.argmax} arguments`;
}

/** qemuio_command: runs one command line; returns 0 or a negative errno-like value. */
export async function runIoCommand(ctx: IoContext, line: string): Promise<number> {
  const argv = splitCommandLine(line);
  if (argv.length === 0) return 0;
  const cmd = findCommand(argv[0]!);
  if (!cmd?.aio) ctx.aio.start();
  if (!cmd && UNSUPPORTED_COMMANDS.includes(argv[0]!)) return unsupported(ctx, argv[0]!);
  if (!cmd) {
    ctx.io.err(`command "${argv[0]}" not found\n`);
    return EINVAL;
  }
  if (ctx.closed && !cmd.nofile) {
    ctx.io.err("no file open, try 'help open'\n");
    return EINVAL;
  }
  const n = argv.length - 1;
  if (n < cmd.argmin || (cmd.argmax !== -1 && n > cmd.argmax)) {
    ctx.io.err(`bad argument count ${n} to ${argv[0]}, expected ${expectedCount(cmd)}\n`);
    return EINVAL;
  }
  if (cmd.write && ctx.target.readOnly) {
    ctx.io.err("refcow: Block node is read-only\n");
    return -1;
  }
  return cmd.invoke(ctx, argv);
}
