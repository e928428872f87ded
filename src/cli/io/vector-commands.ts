/**
 * qemu-io's vectored commands, readv and writev, and what the aio commands share with them: the `off len
 * [len..]` operands (create_iovec's checks) and what a vectored read prints. The buffers of a vectored request
 * lie back to back in one allocation (as qemu-io's do), and the request goes to the image as one request over
 * their total length.
 */
import { messageOf } from "../errors.js";
import { EINVAL, EIO, EIO_STATUS, inRange, ioCommand, pattern, REQUEST_MAX_BYTES, size, sum, timed } from "./command.js";
import type { IoContext } from "./context.js";
import { flag, value } from "./getopt.js";
import { dumpBuffer, type Elapsed, printReport } from "./report.js";

/**
 * create_iovec: the lengths of a vectored request (cvtnum each, each and their sum at most
 * BDRV_REQUEST_MAX_BYTES), or undefined after printing what is wrong.
 */
function iovecLengths(ctx: IoContext, args: readonly string[]): number[] | undefined {
  const sizes: number[] = [];
  let total = 0;
  for (const arg of args) {
    const len = size(ctx, arg);
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

/** `off len [len..]`: the offset and the lengths' sum, or undefined after the complaint. */
export function vectorRange(ctx: IoContext, operands: readonly string[]): { offset: number; count: number } | undefined {
  const offset = size(ctx, operands[0]!);
  if (offset === undefined) return undefined;
  const sizes = iovecLengths(ctx, operands.slice(1));
  if (!sizes) return undefined;
  return { offset, count: sum(sizes) };
}

/** A synchronous vectored request's range: read from its operands and inside the disk, else the status after the complaint. */
function checkedRange(ctx: IoContext, op: string, operands: readonly string[]): { offset: number; count: number } | number {
  const r = vectorRange(ctx, operands);
  if (!r) return EINVAL;
  if (!inRange(ctx.target, r.offset, r.count)) {
    ctx.io.out(`${op} failed: ${EIO}\n`);
    return EIO_STATUS;
  }
  return r;
}

/** Whether every byte is `pattern`. */
function allPattern(buf: Uint8Array, pattern: number): boolean {
  for (const b of buf) if (b !== pattern) return false;
  return true;
}

/** The options of a vectored read (readv, aio_read) that shape what it prints. */
export interface ReadPrinting {
  /** -P: the byte every byte read must be. */
  P?: number;
  q?: true;
  v?: true;
  C?: true;
}

/** What a vectored read prints once its data is in (-P check, -v dump, report), and whether -P failed. */
export function readOutput(o: ReadPrinting, buf: Uint8Array, offset: number, t: Elapsed): { text: string; mismatch: boolean } {
  const mismatch = o.P !== undefined && !allPattern(buf, o.P);
  let text = mismatch ? `Pattern verification failed at offset ${offset}, ${buf.length} bytes\n` : "";
  if (o.q) return { text, mismatch };
  if (o.v) text += dumpBuffer(buf, offset);
  return { text: text + printReport("read", t, offset, buf.length, buf.length, 1, o.C === true), mismatch };
}

export const readvCmd = ioCommand({
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
  options: { options: { C: flag(), P: value(pattern), q: flag(), v: flag() }, operands: { min: 2 } },
  async run(ctx, p) {
    const r = checkedRange(ctx, "readv", p.operands);
    if (typeof r === "number") return r;
    let buf: Uint8Array;
    let t;
    try {
      ({ value: buf, t } = await timed(ctx, () => ctx.target.read(r.offset, r.count)));
    } catch (e) {
      ctx.io.out(`readv failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    const { text, mismatch } = readOutput(p.opts, buf, r.offset, t);
    ctx.io.out(text);
    return mismatch ? EINVAL : 0;
  },
});

export const writevCmd = ioCommand({
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
  options: { options: { C: flag(), f: flag(), q: flag(), P: value(pattern) }, operands: { min: 2 } },
  async run(ctx, p) {
    const r = checkedRange(ctx, "writev", p.operands);
    if (typeof r === "number") return r;
    const buf = new Uint8Array(r.count).fill(p.opts.P ?? 0xcd);
    let t;
    try {
      ({ t } = await timed(ctx, async () => {
        await ctx.target.write(r.offset, buf);
        if (p.opts.f) await ctx.target.flush();
      }));
    } catch (e) {
      ctx.io.out(`writev failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    if (!p.opts.q) ctx.io.out(printReport("wrote", t, r.offset, r.count, r.count, 1, p.opts.C === true));
    return 0;
  },
});
