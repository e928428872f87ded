/**
 * One qemu-io command: its entry in the command table (names, usage, argument count, needs) and its option
 * table; and what the commands share: qemu-io's value readers (cvtnum, parse_pattern), its request checks and
 * its statuses.
 */
import { ioNumber } from "../sizes.js";
import type { IoContext, IoTarget } from "./context.js";
import { type CommandNames, EINVAL, type OptionDecls, type OptionTable, type ParsedCommand, parseCommand, usageLine } from "./getopt.js";
import { type Elapsed, elapsedSince } from "./report.js";

export { EINVAL };
export const EIO_STATUS = -5;
export const ENOTSUP_STATUS = -95;
export const EIO = "Input/output error";
export const ENOTSUP = "Operation not supported";

/** BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to a sector. */
export const REQUEST_MAX_BYTES = 2147483136;

interface CommandInfo extends CommandNames {
  altname?: string;
  /** Least and most words after the name (-1: no most), counted before any option is read. */
  argmin: number;
  argmax: number;
  /** Needs write permission on the image. */
  write?: boolean;
  /** Submits an aio request (which starts with the next command that is not one). */
  aio?: boolean;
  /** Runs with no image open (qemu-io's CMD_NOFILE_OK and global commands). */
  nofile?: boolean;
  help?: string;
}

/** A command as its module declares it: the option table, and what it does with what the table parsed. */
export interface IoCommandDef<F extends OptionDecls> extends CommandInfo {
  /** Without a table, the command reads no option (qemu-io calls no getopt): every word is an operand. */
  options?: OptionTable<F>;
  run(ctx: IoContext, p: ParsedCommand<F>): Promise<number>;
}

/** A command as the command table holds it. */
export interface IoCommand extends CommandInfo {
  /** Parses `argv` (name first) by the command's option table and runs it: 0 or a negative errno. */
  invoke(ctx: IoContext, argv: readonly string[]): Promise<number>;
}

export function ioCommand<F extends OptionDecls = Record<string, never>>(def: IoCommandDef<F>): IoCommand {
  const { options, run, ...info } = def;
  return {
    ...info,
    async invoke(ctx, argv) {
      if (options) {
        const p = parseCommand(ctx, info, argv, options);
        return typeof p === "number" ? p : run(ctx, p);
      }
      const usage = (): number => {
        ctx.io.out(usageLine(info));
        return EINVAL;
      };
      return run(ctx, { opts: {}, given: [], operands: argv.slice(1), usage, refused: () => undefined });
    },
  };
}

/** strtol(arg, &end, 0) that must consume the whole argument: the value, or undefined. */
export function parseWholeLong(arg: string): number | undefined {
  const m = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(arg);
  if (arg === "") return 0;
  if (!m) return undefined;
  const t = m[2]!;
  const v = /^0[xX]/.test(t) ? parseInt(t.slice(2), 16) : t.length > 1 && t.startsWith("0") ? parseInt(t.slice(1), 8) : parseInt(t, 10);
  return m[1] === "-" ? -v : v;
}

/** parse_pattern: strtol(arg, &end, 0) in [0, 255] with nothing after. */
export function parsePattern(arg: string): number | undefined {
  const v = parseWholeLong(arg);
  return v !== undefined && v >= 0 && v <= 255 ? v : undefined;
}

/** cvtnum: a size with an optional suffix; undefined after printing qemu-io's complaint. */
export function size(ctx: IoContext, s: string): number | undefined {
  const r = ioNumber(s);
  if (!r.ok) {
    ctx.io.out(`${r.message}\n`);
    return undefined;
  }
  if (r.warning) ctx.io.err(`refcow: ${r.warning}\n`);
  return r.value;
}

/** A -P argument (parse_pattern): the byte, or undefined after printing qemu-io's complaint. */
export function pattern(ctx: IoContext, arg: string): number | undefined {
  const v = parsePattern(arg);
  if (v === undefined) ctx.io.out(`${arg} is not a valid pattern byte\n`);
  return v;
}

/** The `off len` operands (cvtnum each), or undefined after printing what is wrong with the first bad one. */
export function offsetAndLength(ctx: IoContext, operands: readonly string[]): { offset: number; count: number } | undefined {
  const offset = size(ctx, operands[0]!);
  if (offset === undefined) return undefined;
  const count = size(ctx, operands[1]!);
  if (count === undefined) return undefined;
  return { offset, count };
}

/** Requests on the VM state (-b) and compressed writes (-c) must be whole sectors: false after the message. */
export function sectorAligned(ctx: IoContext, offset: number, count: number): boolean {
  if (offset % 512) {
    ctx.io.out(`${offset} is not a sector-aligned value for 'offset'\n`);
    return false;
  }
  if (count % 512) {
    ctx.io.out(`${count} is not a sector-aligned value for 'count'\n`);
    return false;
  }
  return true;
}

/** blk_check_byte_request: the request must lie inside the disk. */
export function inRange(target: IoTarget, offset: number, count: number): boolean {
  return offset <= target.size && target.size - offset >= count;
}

/**
 * Runs a synchronous request and times it. Waiting for it lets aio completions through, as qemu-io's event
 * loop does while it waits: they are printed before the request's own report.
 */
export async function timed<T>(ctx: IoContext, fn: () => T | Promise<T>): Promise<{ value: T; t: Elapsed }> {
  const start = process.hrtime.bigint();
  try {
    const value = await fn();
    return { value, t: elapsedSince(start) };
  } finally {
    await ctx.aio.drain(ctx.io);
  }
}

/** One line on stderr for what qemu-io has and refcow lacks; the command's status. */
export function unsupported(ctx: IoContext, what: string): number {
  ctx.io.err(`refcow: qemu-io command "${what}" is not supported by refcow\n`);
  return ENOTSUP_STATUS;
}

export const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
