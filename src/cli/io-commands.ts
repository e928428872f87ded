/**
 * qemu-io's command interpreter (qemu-io-cmds.c, QEMU 7.2) for the commands refcow implements: read, readv,
 * write, writev, aio_read, aio_write, aio_flush, discard, flush, alloc, map, truncate, length, info, sleep,
 * sigraise, abort, help, quit. Same syntax, same validation order, same messages on the same streams (per-command results
 * and failures on stdout, "command not found" / argument-count errors, getopt complaints and error_report
 * messages on stderr), and the same status: a command fails with non-zero, which makes the whole run exit 1
 * — including a `read -P` pattern mismatch (qemu-io 7.2 does the same); an aio request's completion never
 * does. The rest of qemu-io's commands and options (UNSUPPORTED below) fail with one line naming them.
 */
import { type OptionSpec, type ParsedArgs, parseArgs } from "./args.js";
import type { CliIo } from "./command.js";
import { UsageError, messageOf } from "./errors.js";
import { cvtstr } from "./human-size.js";
import type { AioRequests } from "./io-aio.js";
import { dumpBuffer, type Elapsed, elapsedSince, printReport } from "./io-report.js";
import { ioNumber } from "./sizes.js";

/** What the commands run against: an open image, served in-process or by a worker. */
export interface IoTarget {
  /** Virtual size now (truncate changes it). */
  readonly size: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Uint8Array | Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): void | Promise<void>;
  writeZeroes(offset: number, length: number, opts: { unmap: boolean }): void | Promise<void>;
  discard(offset: number, length: number): void | Promise<void>;
  flush(): void | Promise<void>;
  /** Which parts of the range the image allocates itself, as merged runs that stop at the end of the disk. */
  allocation(offset: number, length: number): AllocationRuns | Promise<AllocationRuns>;
  /** Changes the virtual size (truncate). */
  resize(size: number): void | Promise<void>;
  /** The active layer's VM-state area (read -b / write -b); absent where the format has none (raw). */
  readVmState?(pos: number, length: number): Uint8Array | Promise<Uint8Array>;
  writeVmState?(pos: number, data: Uint8Array): void | Promise<void>;
  /** Requests accepted and not yet completed (a worker-served image: queued or in the ring). */
  inFlight?(): number;
  /** For `info`: "format name", "cluster size", "vm state offset", and the format-specific block. */
  describe(): { formatName: string; clusterSize: number; vmStateOffset: number; specific?: string };
}

type AllocationRuns = readonly { allocated: boolean; length: number }[];

/** BDRV_REQUEST_MAX_BYTES: INT_MAX rounded down to a sector. */
export const REQUEST_MAX_BYTES = 2147483136;
const EIO = "Input/output error";
const ENOTSUP = "Operation not supported";

interface IoCommand {
  name: string;
  altname?: string;
  args?: string;
  oneline: string;
  argmin: number;
  /** -1: no maximum. */
  argmax: number;
  /** Needs write permission on the image. */
  write?: boolean;
  /** Submits an aio request (which starts with the next command that is not one). */
  aio?: boolean;
  /** Runs with no image open (qemu-io's CMD_NOFILE_OK and global commands). */
  nofile?: boolean;
  help?: string;
  run(ctx: IoContext, argv: string[]): Promise<number>;
}

export interface IoContext {
  /** The open image (only meaningful while `closed` is not set). */
  target: IoTarget;
  io: CliIo;
  /** Set by `quit`: stop running commands. */
  quit: boolean;
  /** aio_read / aio_write requests in flight or not yet reported. */
  aio: AioRequests;
  /** Set by `close`: no image is open until `open`. */
  closed?: boolean;
  /** Opening and closing the session's image (`open`, `close`); without it those commands are refused. */
  files?: IoFiles;
}

/** What `open` asks for: its options, as the command line's. */
export interface IoFileOptions {
  readOnly: boolean;
  snapshot: boolean;
  /** -t / -n, as given. */
  cache?: string;
  /** -o driver=. */
  format?: "qcow2" | "raw";
}

export interface IoFiles {
  /** Opens an image; rejects with the reason QEMU's "can't open device" line gives. */
  open(path: string, opts: IoFileOptions): Promise<IoTarget>;
  /** Closes the open image. */
  close(): Promise<void>;
  /** Closes and opens the image again with other options (reopen); rejects with the line to print. */
  reopen(opts: { readOnly?: boolean; cache?: string }): Promise<IoTarget>;
  /** Whether an image is open (a failed reopen that could not restore the old one leaves none). */
  isOpen(): boolean;
}

const EINVAL = -22;
const EIO_STATUS = -5;
const ENOTSUP_STATUS = -95;

function usageLine(cmd: IoCommand): string {
  return `${cmd.name} ${cmd.args !== undefined ? `${cmd.args} ` : ""}-- ${cmd.oneline}\n`;
}

/** getopt for a qemu-io command; prints glibc's complaint + the usage line like qemu-io on a bad option. */
function getopt(ctx: IoContext, cmd: IoCommand, argv: string[], spec: OptionSpec): ParsedArgs | undefined {
  try {
    return parseArgs(argv.slice(1), spec);
  } catch (e) {
    if (e instanceof UsageError) {
      const m = /option '(-[^']*)'/.exec(e.message);
      const word = m?.[1] ?? "";
      const known = new Set(spec.short.replace(/:/g, ""));
      const bad = [...word.slice(1)].find((c) => !known.has(c)) ?? word.slice(-1);
      if (e.message.startsWith("missing argument")) ctx.io.err(`${argv[0]}: option requires an argument -- '${word.slice(-1)}'\n`);
      else ctx.io.err(`${argv[0]}: invalid option -- '${bad}'\n`);
      ctx.io.out(usageLine(cmd));
      return undefined;
    }
    throw e;
  }
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

function num(ctx: IoContext, s: string): number | undefined {
  const r = ioNumber(s);
  if (!r.ok) {
    ctx.io.out(`${r.message}\n`);
    return undefined;
  }
  if (r.warning) ctx.io.err(`refcow: ${r.warning}\n`);
  return r.value;
}

/** A -P argument (parse_pattern): the byte, or undefined after printing qemu-io's complaint. */
function patternArg(ctx: IoContext, arg: string): number | undefined {
  const v = parsePattern(arg);
  if (v === undefined) ctx.io.out(`${arg} is not a valid pattern byte\n`);
  return v;
}

/** The `off len` operands (cvtnum each), or undefined after printing what is wrong with the first bad one. */
function offsetAndLength(ctx: IoContext, operands: readonly string[]): { offset: number; count: number } | undefined {
  const offset = num(ctx, operands[0]!);
  if (offset === undefined) return undefined;
  const count = num(ctx, operands[1]!);
  if (count === undefined) return undefined;
  return { offset, count };
}

/** Requests on the VM state (-b) and compressed writes (-c) must be whole sectors: false after the message. */
function sectorAligned(ctx: IoContext, offset: number, count: number): boolean {
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
function inRange(target: IoTarget, offset: number, count: number): boolean {
  return offset <= target.size && target.size - offset >= count;
}

/**
 * Runs a synchronous request and times it. Waiting for it lets aio completions through, as qemu-io's event
 * loop does while it waits: they are printed before the request's own report.
 */
async function timed<T>(ctx: IoContext, fn: () => T | Promise<T>): Promise<{ value: T; t: Elapsed }> {
  const start = process.hrtime.bigint();
  try {
    const value = await fn();
    return { value, t: elapsedSince(start) };
  } finally {
    await ctx.aio.drain(ctx.io);
  }
}

/** One line on stderr for what qemu-io has and refcow lacks; the command's status. */
function unsupported(ctx: IoContext, what: string): number {
  ctx.io.err(`refcow: qemu-io command "${what}" is not supported by refcow\n`);
  return ENOTSUP_STATUS;
}

const readCmd: IoCommand = {
  name: "read",
  altname: "r",
  args: "[-abCqv] [-P pattern [-s off] [-l len]] off len",
  oneline: "reads a number of bytes at a specified offset",
  argmin: 2,
  argmax: -1,
  help:
    "\n reads a range of bytes from the given offset\n\n Example:\n" +
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n\n" +
    " Reads a segment of the currently open file, optionally dumping it to the\n" +
    " standard output stream (with -v option) for subsequent inspection.\n" +
    " -b, -- read from the VM state rather than the virtual disk\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -l, -- length for pattern verification (only with -P)\n" +
    " -p, -- ignored for backwards compatibility\n" +
    " -P, -- use a pattern to verify read data\n" +
    " -q, -- quiet mode, do not show I/O statistics\n" +
    " -s, -- start offset for pattern verification (only with -P)\n" +
    " -v, -- dump buffer to standard output\n\n",
  async run(ctx, argv) {
    const p = getopt(ctx, this, argv, { short: "bCl:pP:qs:v" });
    if (!p) return EINVAL;
    let bflag = false, Cflag = false, qflag = false, vflag = false, Pflag = false, lflag = false, sflag = false;
    let pattern = 0;
    let patternOffset = 0;
    let patternCount = 0;
    for (const o of p.options) {
      switch (o.key) {
        case "b": bflag = true; break;
        case "C": Cflag = true; break;
        case "l": {
          lflag = true;
          const n = num(ctx, o.value!);
          if (n === undefined) return EINVAL;
          patternCount = n;
          break;
        }
        case "p": break;
        case "P": {
          Pflag = true;
          const v = patternArg(ctx, o.value!);
          if (v === undefined) return EINVAL;
          pattern = v;
          break;
        }
        case "q": qflag = true; break;
        case "s": {
          sflag = true;
          const n = num(ctx, o.value!);
          if (n === undefined) return EINVAL;
          patternOffset = n;
          break;
        }
        case "v": vflag = true; break;
      }
    }
    if (p.operands.length !== 2) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count } = operands;
    if (count > REQUEST_MAX_BYTES) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    if (!Pflag && (lflag || sflag)) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    if (!lflag) patternCount = count - patternOffset;
    if (patternCount < 0 || patternCount + patternOffset > count) {
      ctx.io.out("pattern verification range exceeds end of read data\n");
      return EINVAL;
    }
    if (bflag && !sectorAligned(ctx, offset, count)) return EINVAL;
    if (!bflag && !inRange(ctx.target, offset, count)) {
      ctx.io.out(`read failed: ${EIO}\n`);
      return -5;
    }
    const target = ctx.target;
    if (bflag && !target.readVmState) {
      ctx.io.out(`read failed: ${ENOTSUP}\n`);
      return ENOTSUP_STATUS;
    }
    let buf: Uint8Array;
    let t;
    try {
      ({ value: buf, t } = await timed(ctx, () => (bflag ? target.readVmState!(offset, count) : target.read(offset, count))));
    } catch (e) {
      ctx.io.out(`read failed: ${messageOf(e)}\n`);
      return -5;
    }
    let ret = 0;
    if (Pflag) {
      for (let i = patternOffset; i < patternOffset + patternCount; i++) {
        if (buf[i] !== pattern) {
          ctx.io.out(`Pattern verification failed at offset ${offset + patternOffset}, ${patternCount} bytes\n`);
          ret = EINVAL;
          break;
        }
      }
    }
    if (qflag) return ret;
    if (vflag) ctx.io.out(dumpBuffer(buf, offset));
    ctx.io.out(printReport("read", t, offset, count, count, 1, Cflag));
    return ret;
  },
};

/** qemu_io_alloc_from_file: the file's bytes, repeated to fill `len`. */
async function bufferFromFile(ctx: IoContext, name: string, len: number): Promise<Uint8Array | undefined> {
  const fs = await import("node:fs");
  let data: Uint8Array;
  try {
    const fd = fs.openSync(name, "r");
    try {
      data = new Uint8Array(len);
      let got = 0;
      while (got < len) {
        const n = fs.readSync(fd, data, got, len - got, null);
        if (n === 0) break;
        got += n;
      }
      if (got === 0) {
        ctx.io.err(`${name}: file is empty\n`);
        return undefined;
      }
      for (let i = got; i < len; i += got) data.copyWithin(i, 0, Math.min(got, len - i));
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    ctx.io.err(`${name}: ${code === "ENOENT" ? "No such file or directory" : messageOf(e)}\n`);
    return undefined;
  }
  return data;
}

const writeCmd: IoCommand = {
  name: "write",
  altname: "w",
  args: "[-bcCfnquz] [-P pattern | -s source_file] off len",
  oneline: "writes a number of bytes at a specified offset",
  argmin: 2,
  argmax: -1,
  write: true,
  help:
    "\n writes a range of bytes from the given offset\n\n Example:\n" +
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n\n" +
    " Writes into a segment of the currently open file, using a buffer\n" +
    " filled with a set pattern (0xcdcdcdcd).\n" +
    " -b, -- write to the VM state rather than the virtual disk\n" +
    " -c, -- write compressed data with blk_write_compressed\n" +
    " -f, -- use Force Unit Access semantics\n" +
    " -n, -- with -z, don't allow slow fallback\n" +
    " -p, -- ignored for backwards compatibility\n" +
    " -P, -- use different pattern to fill file\n" +
    " -s, -- use a pattern file to fill the write buffer\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -q, -- quiet mode, do not show I/O statistics\n" +
    " -u, -- with -z, allow unmapping\n" +
    " -z, -- write zeroes using blk_co_pwrite_zeroes\n\n",
  async run(ctx, argv) {
    const p = getopt(ctx, this, argv, { short: "bcCfnpP:qs:uz" });
    if (!p) return EINVAL;
    let bflag = false, cflag = false, Cflag = false, fua = false, noFallback = false, Pflag = false;
    let qflag = false, sflag = false, unmap = false, zflag = false;
    let pattern = 0xcd;
    let sourceFile = "";
    for (const o of p.options) {
      switch (o.key) {
        case "b": bflag = true; break;
        case "c": cflag = true; break;
        case "C": Cflag = true; break;
        case "f": fua = true; break;
        case "n": noFallback = true; break;
        case "p": break;
        case "P": {
          Pflag = true;
          const v = patternArg(ctx, o.value!);
          if (v === undefined) return EINVAL;
          pattern = v;
          break;
        }
        case "q": qflag = true; break;
        case "s": sflag = true; sourceFile = o.value!; break;
        case "u": unmap = true; break;
        case "z": zflag = true; break;
      }
    }
    if (p.operands.length !== 2) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    if (bflag && zflag) {
      ctx.io.out("-b and -z cannot be specified at the same time\n");
      return EINVAL;
    }
    if (fua && (bflag || cflag)) {
      ctx.io.out("-f and -b or -c cannot be specified at the same time\n");
      return EINVAL;
    }
    if (noFallback && !zflag) {
      ctx.io.out("-n requires -z to be specified\n");
      return EINVAL;
    }
    if (unmap && !zflag) {
      ctx.io.out("-u requires -z to be specified\n");
      return EINVAL;
    }
    if (Number(zflag) + Number(Pflag) + Number(sflag) > 1) {
      ctx.io.out("Only one of -z, -P, and -s can be specified at the same time\n");
      return EINVAL;
    }
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count } = operands;
    if (count > REQUEST_MAX_BYTES && !noFallback) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES} without -n, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    if ((bflag || cflag) && !sectorAligned(ctx, offset, count)) return EINVAL;
    let buf: Uint8Array | undefined;
    if (!zflag) {
      if (sflag) {
        buf = await bufferFromFile(ctx, sourceFile, count);
        if (!buf) return EINVAL;
      } else {
        buf = new Uint8Array(count).fill(pattern);
      }
    }
    // qemu-io's precedence: -b (VM state), then -z, then -c.
    const target = ctx.target;
    if (bflag && !target.writeVmState) {
      ctx.io.out(`write failed: ${ENOTSUP}\n`);
      return ENOTSUP_STATUS;
    }
    if (!bflag && !zflag && cflag) return unsupported(ctx, "write -c");
    if (!bflag && !inRange(target, offset, count)) {
      ctx.io.out(`write failed: ${EIO}\n`);
      return -5;
    }
    let t;
    try {
      ({ t } = await timed(ctx, async () => {
        if (bflag) await target.writeVmState!(offset, buf!);
        else if (zflag) await target.writeZeroes(offset, count, { unmap });
        else await target.write(offset, buf!);
        if (fua) await ctx.target.flush();
      }));
    } catch (e) {
      ctx.io.out(`write failed: ${messageOf(e)}\n`);
      return -5;
    }
    if (qflag) return 0;
    ctx.io.out(printReport("wrote", t, offset, count, count, 1, Cflag));
    return 0;
  },
};

const discardCmd: IoCommand = {
  name: "discard",
  altname: "d",
  args: "[-Cq] off len",
  oneline: "discards a number of bytes at a specified offset",
  argmin: 2,
  argmax: -1,
  write: true,
  help:
    "\n discards a range of bytes from the given offset\n\n Example:\n" +
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n\n" +
    " Discards a segment of the currently open file.\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -q, -- quiet mode, do not show I/O statistics\n\n",
  async run(ctx, argv) {
    const p = getopt(ctx, this, argv, { short: "Cq" });
    if (!p) return EINVAL;
    const Cflag = p.options.some((o) => o.key === "C");
    const qflag = p.options.some((o) => o.key === "q");
    if (p.operands.length !== 2) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count: bytes } = operands;
    if (bytes > REQUEST_MAX_BYTES) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    if (!inRange(ctx.target, offset, bytes)) {
      ctx.io.out(`discard failed: ${EIO}\n`);
      return -5;
    }
    let t;
    try {
      ({ t } = await timed(ctx, () => ctx.target.discard(offset, bytes)));
    } catch (e) {
      ctx.io.out(`discard failed: ${messageOf(e)}\n`);
      return -5;
    }
    if (!qflag) ctx.io.out(printReport("discard", t, offset, bytes, bytes, 1, Cflag));
    return 0;
  },
};

const flushCmd: IoCommand = {
  name: "flush",
  altname: "f",
  oneline: "flush all in-core file state to disk",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    try {
      await timed(ctx, () => ctx.target.flush());
      return 0;
    } catch (e) {
      ctx.io.err(`refcow: flush failed: ${messageOf(e)}\n`);
      return -5;
    }
  },
};

const lengthCmd: IoCommand = {
  name: "length",
  altname: "l",
  oneline: "gets the length of the current file",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    ctx.io.out(`${cvtstr(ctx.target.size)}\n`);
    return 0;
  },
};

const infoCmd: IoCommand = {
  name: "info",
  altname: "i",
  oneline: "prints information about the current file",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    const d = ctx.target.describe();
    ctx.io.out(`format name: ${d.formatName}\ncluster size: ${cvtstr(d.clusterSize)}\nvm state offset: ${cvtstr(d.vmStateOffset)}\n`);
    if (d.specific) ctx.io.out(`Format specific information:\n${d.specific}`);
    return 0;
  },
};

/**
 * create_iovec: the lengths of a vectored request (cvtnum each, each and their sum at most
 * BDRV_REQUEST_MAX_BYTES), or undefined after printing what is wrong.
 */
function iovecLengths(ctx: IoContext, args: readonly string[]): number[] | undefined {
  const sizes: number[] = [];
  let total = 0;
  for (const arg of args) {
    const len = num(ctx, arg);
    if (len === undefined) return undefined;
    if (len > REQUEST_MAX_BYTES) {
      ctx.io.out(`Argument '${arg}' exceeds maximum size ${REQUEST_MAX_BYTES}\n`);
      return undefined;
    }
    if (total > REQUEST_MAX_BYTES - len) {
      ctx.io.out(`The total number of bytes exceed the maximum size ${REQUEST_MAX_BYTES}\n`);
      return undefined;
    }
    sizes.push(len);
    total += len;
  }
  return sizes;
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** Whether every byte is `pattern`. */
function allPattern(buf: Uint8Array, pattern: number): boolean {
  for (const b of buf) if (b !== pattern) return false;
  return true;
}

/** The options and operands of a vectored command (readv, writev, aio_*); undefined after the complaint. */
interface VectorOptions {
  /** The options without an argument that were given. */
  flags: Set<string>;
  pattern: number;
  patternGiven: boolean;
  operands: string[];
}

function vectorOptions(ctx: IoContext, cmd: IoCommand, argv: string[], spec: string, pattern: number): VectorOptions | undefined {
  const p = getopt(ctx, cmd, argv, { short: spec });
  if (!p) return undefined;
  const flags = new Set<string>();
  let patternGiven = false;
  for (const o of p.options) {
    if (o.key !== "P") {
      flags.add(o.key);
      continue;
    }
    const v = patternArg(ctx, o.value!);
    if (v === undefined) return undefined;
    pattern = v;
    patternGiven = true;
  }
  if (p.operands.length < 2) {
    ctx.io.out(usageLine(cmd));
    return undefined;
  }
  return { flags, pattern, patternGiven, operands: p.operands };
}

/** `off len [len..]`: the offset and the lengths' sum, or undefined after the complaint. */
function vectorRange(ctx: IoContext, operands: readonly string[]): { offset: number; count: number } | undefined {
  const offset = num(ctx, operands[0]!);
  if (offset === undefined) return undefined;
  const sizes = iovecLengths(ctx, operands.slice(1));
  if (!sizes) return undefined;
  return { offset, count: sum(sizes) };
}

/** What a vectored read prints once its data is in (-P check, -v dump, report), and whether -P failed. */
function readOutput(o: VectorOptions, buf: Uint8Array, offset: number, t: Elapsed): { text: string; mismatch: boolean } {
  const mismatch = o.patternGiven && !allPattern(buf, o.pattern);
  let text = mismatch ? `Pattern verification failed at offset ${offset}, ${buf.length} bytes\n` : "";
  if (o.flags.has("q")) return { text, mismatch };
  if (o.flags.has("v")) text += dumpBuffer(buf, offset);
  return { text: text + printReport("read", t, offset, buf.length, buf.length, 1, o.flags.has("C")), mismatch };
}

/**
 * The buffers of a vectored request lie back to back in one allocation (as qemu-io's do), and the request
 * goes to the image as one request over their total length.
 */
/**
 * Whether getopt, going through `argv` in order, meets -i before any option it would complain about: the
 * aio commands act on -i as soon as getopt returns it (GNU getopt also finds options after operands).
 */
function injectsInvalid(argv: readonly string[], spec: string): boolean {
  for (let i = 1; i < argv.length; i++) {
    const w = argv[i]!;
    if (w === "--") return false;
    if (!w.startsWith("-") || w === "-") continue;
    for (let j = 1; j < w.length; j++) {
      const c = w[j]!;
      const at = spec.indexOf(c);
      if (at < 0 || c === ":") return false;
      if (c === "i") return true;
      if (spec[at + 1] === ":") {
        const value = j === w.length - 1 ? argv[++i] : w.slice(j + 1);
        // A bad -P value stops getopt's caller first; a missing one is getopt's complaint.
        if (value === undefined || (c === "P" && parsePattern(value) === undefined)) return false;
        break;
      }
    }
  }
  return false;
}

const readvCmd: IoCommand = {
  name: "readv",
  args: "[-Cqv] [-P pattern] off len [len..]",
  oneline: "reads a number of bytes at a specified offset",
  argmin: 2,
  argmax: -1,
  help:
    "\n reads a range of bytes from the given offset into multiple buffers\n\n Example:\n" +
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n\n" +
    " Reads a segment of the currently open file, optionally dumping it to the\n" +
    " standard output stream (with -v option) for subsequent inspection.\n" +
    " Uses multiple iovec buffers if more than one byte range is specified.\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -P, -- use a pattern to verify read data\n" +
    " -v, -- dump buffer to standard output\n" +
    " -q, -- quiet mode, do not show I/O statistics\n\n",
  async run(ctx, argv) {
    const o = vectorOptions(ctx, this, argv, "CP:qv", 0);
    const r = o && vectorRange(ctx, o.operands);
    if (!o || !r) return EINVAL;
    if (!inRange(ctx.target, r.offset, r.count)) {
      ctx.io.out(`readv failed: ${EIO}\n`);
      return EIO_STATUS;
    }
    let buf: Uint8Array;
    let t;
    try {
      ({ value: buf, t } = await timed(ctx, () => ctx.target.read(r.offset, r.count)));
    } catch (e) {
      ctx.io.out(`readv failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    const { text, mismatch } = readOutput(o, buf, r.offset, t);
    ctx.io.out(text);
    return mismatch ? EINVAL : 0;
  },
};

const writevCmd: IoCommand = {
  name: "writev",
  args: "[-Cfq] [-P pattern] off len [len..]",
  oneline: "writes a number of bytes at a specified offset",
  argmin: 2,
  argmax: -1,
  write: true,
  help:
    "\n writes a range of bytes from the given offset source from multiple buffers\n\n Example:\n" +
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n\n" +
    " Writes into a segment of the currently open file, using a buffer\n" +
    " filled with a set pattern (0xcdcdcdcd).\n" +
    " -P, -- use different pattern to fill file\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -f, -- use Force Unit Access semantics\n" +
    " -q, -- quiet mode, do not show I/O statistics\n\n",
  async run(ctx, argv) {
    const o = vectorOptions(ctx, this, argv, "CfqP:", 0xcd);
    const r = o && vectorRange(ctx, o.operands);
    if (!o || !r) return EINVAL;
    if (!inRange(ctx.target, r.offset, r.count)) {
      ctx.io.out(`writev failed: ${EIO}\n`);
      return EIO_STATUS;
    }
    const buf = new Uint8Array(r.count).fill(o.pattern);
    let t;
    try {
      ({ t } = await timed(ctx, async () => {
        await ctx.target.write(r.offset, buf);
        if (o.flags.has("f")) await ctx.target.flush();
      }));
    } catch (e) {
      ctx.io.out(`writev failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    if (!o.flags.has("q")) ctx.io.out(printReport("wrote", t, r.offset, r.count, r.count, 1, o.flags.has("C")));
    return 0;
  },
};

const aioReadCmd: IoCommand = {
  name: "aio_read",
  args: "[-Ciqv] [-P pattern] off len [len..]",
  oneline: "asynchronously reads a number of bytes",
  argmin: 2,
  argmax: -1,
  aio: true,
  help:
    "\n asynchronously reads a range of bytes from the given offset\n\n Example:\n" +
    " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n\n" +
    " Reads a segment of the currently open file, optionally dumping it to the\n" +
    " standard output stream (with -v option) for subsequent inspection.\n" +
    " The read is performed asynchronously and the aio_flush command must be\n" +
    " used to ensure all outstanding aio requests have been completed.\n" +
    " Note that due to its asynchronous nature, this command will be\n" +
    " considered successful once the request is submitted, independently\n" +
    " of potential I/O errors or pattern mismatches.\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -P, -- use a pattern to verify read data\n" +
    " -i, -- treat request as invalid, for exercising stats\n" +
    " -v, -- dump buffer to standard output\n" +
    " -q, -- quiet mode, do not show I/O statistics\n\n",
  async run(ctx, argv) {
    if (injectsInvalid(argv, "CP:iqv")) {
      ctx.io.out("injecting invalid read request\n");
      return 0;
    }
    const o = vectorOptions(ctx, this, argv, "CP:iqv", 0);
    const r = o && vectorRange(ctx, o.operands);
    if (!o || !r) return EINVAL;
    const target = ctx.target;
    const start = process.hrtime.bigint();
    ctx.aio.submit(async () => {
      let buf: Uint8Array;
      try {
        if (!inRange(target, r.offset, r.count)) throw new Error(EIO);
        buf = await target.read(r.offset, r.count);
      } catch (e) {
        return `readv failed: ${messageOf(e)}\n`;
      }
      return readOutput(o, buf, r.offset, elapsedSince(start)).text;
    });
    return 0;
  },
};

const aioWriteCmd: IoCommand = {
  name: "aio_write",
  args: "[-Cfiquz] [-P pattern] off len [len..]",
  oneline: "asynchronously writes a number of bytes",
  argmin: 2,
  argmax: -1,
  write: true,
  aio: true,
  help:
    "\n asynchronously writes a range of bytes from the given offset source\n from multiple buffers\n\n Example:\n" +
    " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n\n" +
    " Writes into a segment of the currently open file, using a buffer\n" +
    " filled with a set pattern (0xcdcdcdcd).\n" +
    " The write is performed asynchronously and the aio_flush command must be\n" +
    " used to ensure all outstanding aio requests have been completed.\n" +
    " Note that due to its asynchronous nature, this command will be\n" +
    " considered successful once the request is submitted, independently\n" +
    " of potential I/O errors or pattern mismatches.\n" +
    " -P, -- use different pattern to fill file\n" +
    " -C, -- report statistics in a machine parsable format\n" +
    " -f, -- use Force Unit Access semantics\n" +
    " -i, -- treat request as invalid, for exercising stats\n" +
    " -q, -- quiet mode, do not show I/O statistics\n" +
    " -u, -- with -z, allow unmapping\n" +
    " -z, -- write zeroes using blk_aio_pwrite_zeroes\n\n",
  async run(ctx, argv) {
    if (injectsInvalid(argv, "CfiqP:uz")) {
      ctx.io.out("injecting invalid write request\n");
      return 0;
    }
    const o = vectorOptions(ctx, this, argv, "CfiqP:uz", 0xcd);
    if (!o) return EINVAL;
    const zflag = o.flags.has("z");
    if (zflag && o.operands.length !== 2) {
      ctx.io.out("-z supports only a single length parameter\n");
      return EINVAL;
    }
    if (o.flags.has("u") && !zflag) {
      ctx.io.out("-u requires -z to be specified\n");
      return EINVAL;
    }
    // qemu-io 7.2 never sets the flag its "-z and -P" check tests: -z -P writes zeroes, and so does this.
    let r: { offset: number; count: number } | undefined;
    if (zflag) {
      const offset = num(ctx, o.operands[0]!);
      const count = offset === undefined ? undefined : num(ctx, o.operands[1]!);
      if (offset !== undefined && count !== undefined) r = { offset, count };
    } else {
      r = vectorRange(ctx, o.operands);
    }
    if (!r) return EINVAL;
    const { offset, count } = r;
    const buf = zflag ? undefined : new Uint8Array(count).fill(o.pattern);
    const target = ctx.target;
    // qemu-io 7.2 starts the clock only for a write with data: a -z report times from the clock's origin.
    const start = zflag ? 0n : process.hrtime.bigint();
    ctx.aio.submit(async () => {
      try {
        if (count > REQUEST_MAX_BYTES || !inRange(target, offset, count)) throw new Error(EIO);
        if (buf) await target.write(offset, buf);
        else await target.writeZeroes(offset, count, { unmap: o.flags.has("u") });
        if (o.flags.has("f")) await target.flush();
      } catch (e) {
        return `aio_write failed: ${messageOf(e)}\n`;
      }
      return o.flags.has("q") ? "" : printReport("wrote", elapsedSince(start), offset, count, count, 1, o.flags.has("C"));
    });
    return 0;
  },
};

const aioFlushCmd: IoCommand = {
  name: "aio_flush",
  oneline: "completes all outstanding aio requests",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    await ctx.aio.drain(ctx.io);
    return 0;
  },
};

const allocCmd: IoCommand = {
  name: "alloc",
  altname: "a",
  args: "offset [count]",
  oneline: "checks if offset is allocated in the file",
  argmin: 1,
  argmax: 2,
  async run(ctx, argv) {
    const offset = num(ctx, argv[1]!);
    if (offset === undefined) return EINVAL;
    let count = 512;
    if (argv.length === 3) {
      const n = num(ctx, argv[2]!);
      if (n === undefined) return EINVAL;
      count = n;
    }
    let runs: AllocationRuns;
    try {
      ({ value: runs } = await timed(ctx, () => ctx.target.allocation(offset, count)));
    } catch (e) {
      ctx.io.out(`is_allocated failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    const allocated = sum(runs.filter((r) => r.allocated).map((r) => r.length));
    // The runs stop at the end of the disk; the count shrinks to what they cover, as in qemu-io.
    count = Math.min(count, sum(runs.map((r) => r.length)));
    ctx.io.out(`${allocated}/${count} bytes allocated at offset ${cvtstr(offset)}\n`);
    return 0;
  },
};

const mapCmd: IoCommand = {
  name: "map",
  args: "",
  oneline: "prints the allocated areas of a file",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    let runs: AllocationRuns;
    try {
      ({ value: runs } = await timed(ctx, () => ctx.target.allocation(0, ctx.target.size)));
    } catch (e) {
      ctx.io.err(`refcow: Failed to get allocation status: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    let offset = 0;
    for (const r of runs) {
      const state = r.allocated ? "    allocated" : "not allocated";
      ctx.io.out(`${cvtstr(r.length)} (0x${r.length.toString(16)}) bytes ${state} at offset ${cvtstr(offset)} (0x${offset.toString(16)})\n`);
      offset += r.length;
    }
    return 0;
  },
};

/** QEMU's PreallocMode names. */
const PREALLOC_MODES = new Set(["off", "metadata", "falloc", "full"]);

const truncateCmd: IoCommand = {
  name: "truncate",
  altname: "t",
  args: "[-m prealloc_mode] off",
  oneline: "truncates the current file at the given offset",
  argmin: 1,
  argmax: 3,
  write: true,
  async run(ctx, argv) {
    const p = getopt(ctx, this, argv, { short: "m:" });
    if (!p) return EINVAL;
    let prealloc = "off";
    for (const o of p.options) {
      if (!PREALLOC_MODES.has(o.value!)) {
        ctx.io.err(`refcow: Invalid preallocation mode '${o.value}'\n`);
        return EINVAL;
      }
      prealloc = o.value!;
    }
    if (p.operands.length < 1) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    // Only the first operand counts (qemu-io ignores the rest).
    const size = num(ctx, p.operands[0]!);
    if (size === undefined) return EINVAL;
    if (prealloc !== "off" && size < ctx.target.size) {
      ctx.io.err("refcow: Preallocation can't be used for shrinking an image\n");
      return EINVAL;
    }
    if (prealloc !== "off" && size > ctx.target.size) return unsupported(ctx, `truncate -m ${prealloc}`);
    try {
      await timed(ctx, () => ctx.target.resize(size));
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    return 0;
  },
};

const sleepCmd: IoCommand = {
  name: "sleep",
  oneline: "waits for the given value in milliseconds",
  argmin: 1,
  argmax: 1,
  nofile: true,
  async run(ctx, argv) {
    const ms = parseWholeLong(argv[1]!);
    if (ms === undefined || ms < 0) {
      ctx.io.out(`${argv[1]} is not a valid number\n`);
      return EINVAL;
    }
    await timed(ctx, () => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    return 0;
  },
};

const closeCmd: IoCommand = {
  name: "close",
  altname: "c",
  oneline: "close the current open file",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    if (!ctx.files) return unsupported(ctx, "close");
    // Closing drains the requests in flight: their completions print first.
    await ctx.aio.drain(ctx.io);
    try {
      await ctx.files.close();
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      return EIO_STATUS;
    } finally {
      ctx.closed = true;
    }
    return 0;
  },
};

/** open -o: the driver option; anything else is refused with one line. */
function openFormat(ctx: IoContext, options: string[]): { format?: "qcow2" | "raw" } | undefined {
  let format: "qcow2" | "raw" | undefined;
  for (const list of options) {
    for (const item of list.split(",")) {
      const [key, value] = item.split("=", 2) as [string, string | undefined];
      if (key === "driver" && (value === "qcow2" || value === "raw")) format = value;
      else {
        unsupported(ctx, `open -o ${item}`);
        return undefined;
      }
    }
  }
  return { format };
}

const openCmd: IoCommand = {
  name: "open",
  altname: "o",
  args: "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
  oneline: "open the file specified by path",
  argmin: 1,
  argmax: -1,
  nofile: true,
  help:
    "\n opens a new file in the requested mode\n\n Example:\n" +
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n\n" +
    " Opens a file for subsequent use by all of the other qemu-io commands.\n" +
    " -r, -- open file read-only\n" +
    " -s, -- use snapshot file\n" +
    " -C, -- use copy-on-read\n" +
    " -n, -- disable host cache, short for -t none\n" +
    " -U, -- force shared permissions\n" +
    " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n" +
    " -i, -- use AIO mode (threads, native or io_uring)\n" +
    " -t, -- use the given cache mode for the image\n" +
    " -d, -- use the given discard mode for the image\n" +
    " -o, -- options to be given to the block driver\n\n",
  async run(ctx, argv) {
    if (!ctx.files) return unsupported(ctx, "open");
    if (!ctx.closed) {
      ctx.io.err("refcow: file open already, try 'help close'\n");
      return EINVAL;
    }
    const p = getopt(ctx, this, argv, { short: "snCro:kt:d:Ui:" });
    if (!p) return EINVAL;
    const opts: IoFileOptions = { readOnly: false, snapshot: false };
    const driverOptions: string[] = [];
    for (const o of p.options) {
      if (o.key === "r") opts.readOnly = true;
      else if (o.key === "s") opts.snapshot = true;
      else if (o.key === "n") opts.cache = "none";
      else if (o.key === "t") opts.cache = o.value!;
      else if (o.key === "o") driverOptions.push(o.value!);
      else if (o.key === "C") return unsupported(ctx, "open -C");
      // -k, -i (AIO mode), -U (shared permissions, read-only only), -d (discard mode): nothing to choose here.
    }
    const f = openFormat(ctx, driverOptions);
    if (!f) return ENOTSUP_STATUS;
    if (p.operands.length === 0) {
      ctx.io.err("refcow: can't open: Must specify either driver or file\n");
      return EINVAL;
    }
    if (p.operands.length !== 1) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    const path = p.operands[0]!;
    if (p.options.some((o) => o.key === "U") && !opts.readOnly) {
      ctx.io.err(`refcow: can't open device ${path}: force-share=on can only be used with read-only images\n`);
      return EINVAL;
    }
    try {
      ctx.target = await ctx.files.open(path, { ...opts, ...f });
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      return EINVAL;
    }
    ctx.closed = false;
    return 0;
  },
};

const reopenCmd: IoCommand = {
  name: "reopen",
  args: "[(-r|-w)] [-c cache] [-o options]",
  oneline: "reopens an image with new options",
  argmin: 0,
  argmax: -1,
  help:
    "\n Changes the open options of an already opened image\n\n Example:\n" +
    " 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image\n\n" +
    " -r, -- Reopen the image read-only\n" +
    " -w, -- Reopen the image read-write\n" +
    " -c, -- Change the cache mode to the given value\n" +
    " -o, -- Changes block driver options (cf. 'open' command)\n\n",
  async run(ctx, argv) {
    if (!ctx.files) return unsupported(ctx, "reopen");
    const p = getopt(ctx, this, argv, { short: "c:o:rw" });
    if (!p) return EINVAL;
    const opts: { readOnly?: boolean; cache?: string } = {};
    for (const o of p.options) {
      if (o.key === "c") {
        if (!CACHE_MODES.has(o.value!)) {
          ctx.io.err(`refcow: Invalid cache option: ${o.value}\n`);
          return EINVAL;
        }
        opts.cache = o.value!;
      } else if (o.key === "o") {
        return unsupported(ctx, `reopen -o ${o.value}`);
      } else {
        if (opts.readOnly !== undefined) {
          ctx.io.err("refcow: Only one -r/-w option may be given\n");
          return EINVAL;
        }
        opts.readOnly = o.key === "r";
      }
    }
    if (p.operands.length) {
      ctx.io.out(usageLine(this));
      return EINVAL;
    }
    // A reopen drains the requests in flight.
    await ctx.aio.drain(ctx.io);
    try {
      ctx.target = await ctx.files.reopen(opts);
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      if (!ctx.files.isOpen()) ctx.closed = true;
      return EINVAL;
    }
    return 0;
  },
};

/** bdrv_parse_cache_mode's names. */
const CACHE_MODES = new Set(["none", "off", "writeback", "writethrough", "directsync", "unsafe"]);

/** NSIG on Linux: signal numbers above it are refused. */
const NSIG = 65;

/**
 * sigraise and abort end the process as a crash does: nothing is flushed or closed, the worker serving the
 * image dies with it, and the image is left as a power cut would leave it (what the next open repairs, or
 * replays, under each scheme). Output already written stays written (stdout and stderr are synchronous on
 * Linux for files and pipes).
 */
const sigraiseCmd: IoCommand = {
  name: "sigraise",
  args: "signal",
  oneline: "raises a signal",
  argmin: 1,
  argmax: 1,
  nofile: true,
  help:
    "\n raises the given signal\n\n Example:\n 'sigraise 15' - raises SIGTERM\n\n" +
    ' Invokes raise(signal), where "signal" is the mandatory integer argument\n given to sigraise.\n\n',
  async run(ctx, argv) {
    const sig = num(ctx, argv[1]!);
    if (sig === undefined) return EINVAL;
    if (sig > NSIG) {
      ctx.io.out(`signal argument '${argv[1]}' is too large to be a valid signal\n`);
      return EINVAL;
    }
    try {
      process.kill(process.pid, sig);
    } catch {
      // raise() of a number that is no signal fails and qemu-io ignores it.
    }
    // A signal whose default action ends the process is delivered at the next turn of the event loop.
    await new Promise<void>((resolve) => setImmediate(resolve));
    return 0;
  },
};

const abortCmd: IoCommand = {
  name: "abort",
  oneline: "simulate a program crash using abort(3)",
  argmin: 0,
  argmax: 0,
  nofile: true,
  async run() {
    process.abort();
  },
};

/**
 * qemu-io 7.2's commands that refcow does not have: the block layer's debugging hooks (blkdebug
 * breakpoints).
 */
export const UNSUPPORTED_COMMANDS: readonly string[] = ["break", "remove_break", "resume", "wait_break"];

const quitCmd: IoCommand = {
  name: "quit",
  altname: "q",
  oneline: "exit the program",
  argmin: 0,
  argmax: 0,
  nofile: true,
  async run(ctx) {
    ctx.quit = true;
    return 0;
  },
};

const helpCmd: IoCommand = {
  name: "help",
  altname: "?",
  args: "[command]",
  oneline: "help for one or all commands",
  argmin: 0,
  argmax: 1,
  nofile: true,
  async run(ctx, argv) {
    if (argv.length === 1) {
      for (const c of [...COMMANDS].sort((a, b) => a.name.localeCompare(b.name))) ctx.io.out(usageLine(c));
      ctx.io.out("\nUse 'help commandname' for extended help.\n");
      return 0;
    }
    const c = findCommand(argv[1]!);
    if (!c && UNSUPPORTED_COMMANDS.includes(argv[1]!)) return unsupported(ctx, argv[1]!);
    if (!c) {
      ctx.io.out(`command ${argv[1]} not found\n`);
      return EINVAL;
    }
    ctx.io.out(usageLine(c));
    if (c.help) ctx.io.out(c.help);
    return 0;
  },
};

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
    let expected: string;
    if (cmd.argmax === 0) expected = "0 arguments";
    else if (cmd.argmax === cmd.argmin) expected = `${cmd.argmin} arguments`;
    else if (cmd.argmax === -1) expected = `at least ${cmd.argmin} arguments`;
    else expected = `between ${cmd.argmin} and ${cmd.argmax} arguments`;
    ctx.io.err(`bad argument count ${n} to ${argv[0]}, expected ${expected}\n`);
    return EINVAL;
  }
  if (cmd.write && ctx.target.readOnly) {
    ctx.io.err("refcow: Block node is read-only\n");
    return -1;
  }
  return cmd.run(ctx, argv);
}
