/**
 * qemu-io's asynchronous commands: aio_read and aio_write submit a request and return at once (its report
 * comes when it completes, and its failure never fails the command), aio_flush waits for them all.
 */
import { messageOf } from "../errors.js";
import { EINVAL, EIO, inRange, ioCommand, pattern, REQUEST_MAX_BYTES, size } from "./command.js";
import { endsCommand, flag, needs, value } from "./getopt.js";
import { elapsedSince, printReport } from "./report.js";
import { readOutput, vectorRange } from "./vector-commands.js";

export const aioReadCmd = ioCommand({
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
  options: {
    options: { C: flag(), P: value(pattern), i: endsCommand("injecting invalid read request", 0), q: flag(), v: flag() },
    operands: { min: 2 },
  },
  async run(ctx, p) {
    const r = vectorRange(ctx, p.operands);
    if (!r) return EINVAL;
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
      return readOutput(p.opts, buf, r.offset, elapsedSince(start)).text;
    });
    return 0;
  },
});

export const aioWriteCmd = ioCommand({
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
  options: {
    options: { C: flag(), f: flag(), i: endsCommand("injecting invalid write request", 0), q: flag(), P: value(pattern), u: flag(), z: flag() },
    operands: { min: 2 },
    // qemu-io 7.2 never sets the flag its "-z and -P" check tests: -z -P writes zeroes, and so does this.
    rules: [
      { broken: (given, operands) => given("z") && operands.length !== 2, say: { out: "-z supports only a single length parameter" } },
      needs("u", "z", { out: "-u requires -z to be specified" }),
    ],
  },
  async run(ctx, p) {
    const zeroes = p.opts.z === true;
    let r: { offset: number; count: number } | undefined;
    if (zeroes) {
      const offset = size(ctx, p.operands[0]!);
      const count = offset === undefined ? undefined : size(ctx, p.operands[1]!);
      if (offset !== undefined && count !== undefined) r = { offset, count };
    } else {
      r = vectorRange(ctx, p.operands);
    }
    if (!r) return EINVAL;
    const { offset, count } = r;
    const buf = zeroes ? undefined : new Uint8Array(count).fill(p.opts.P ?? 0xcd);
    const target = ctx.target;
    // qemu-io 7.2 starts the clock only for a write with data: a -z report times from the clock's origin.
    const start = zeroes ? 0n : process.hrtime.bigint();
    ctx.aio.submit(async () => {
      try {
        if (count > REQUEST_MAX_BYTES || !inRange(target, offset, count)) throw new Error(EIO);
        if (buf) await target.write(offset, buf);
        else await target.writeZeroes(offset, count, { unmap: p.opts.u === true });
        if (p.opts.f) await target.flush();
      } catch (e) {
        return `aio_write failed: ${messageOf(e)}\n`;
      }
      return p.opts.q ? "" : printReport("wrote", elapsedSince(start), offset, count, count, 1, p.opts.C === true);
    });
    return 0;
  },
});

export const aioFlushCmd = ioCommand({
  name: "aio_flush",
  oneline: "completes all outstanding aio requests",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    await ctx.aio.drain(ctx.io);
    return 0;
  },
});
