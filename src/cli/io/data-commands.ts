/** qemu-io's synchronous data commands on one range: read, write (-z, -b, -s, -f), discard, flush. */
import * as fs from "node:fs";
import { messageOf } from "../errors.js";
import {
  EINVAL,
  EIO,
  EIO_STATUS,
  ENOTSUP,
  ENOTSUP_STATUS,
  inRange,
  ioCommand,
  offsetAndLength,
  pattern,
  REQUEST_MAX_BYTES,
  sectorAligned,
  size,
  timed,
  unsupported,
} from "./command.js";
import type { IoContext } from "./context.js";
import { atMostOne, flag, needs, notWith, text, value } from "./getopt.js";
import { dumpBuffer, printReport } from "./report.js";

export const readCmd = ioCommand({
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
  options: {
    options: { b: flag(), C: flag(), l: value(size), p: flag(), P: value(pattern), q: flag(), s: value(size), v: flag() },
    operands: { min: 2, max: 2 },
    // qemu-io checks this one after converting off and len.
    operandRules: [needs("ls", "P", "usage")],
  },
  async run(ctx, p) {
    const { b: fromVmState, C: machine, q: quiet, v: dump } = p.opts;
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count } = operands;
    if (count > REQUEST_MAX_BYTES) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    const refused = p.refused();
    if (refused !== undefined) return refused;
    const patternOffset = p.opts.s ?? 0;
    const patternCount = p.opts.l ?? count - patternOffset;
    if (patternCount < 0 || patternCount + patternOffset > count) {
      ctx.io.out("pattern verification range exceeds end of read data\n");
      return EINVAL;
    }
    if (fromVmState && !sectorAligned(ctx, offset, count)) return EINVAL;
    if (!fromVmState && !inRange(ctx.target, offset, count)) {
      ctx.io.out(`read failed: ${EIO}\n`);
      return EIO_STATUS;
    }
    const target = ctx.target;
    if (fromVmState && !target.readVmState) {
      ctx.io.out(`read failed: ${ENOTSUP}\n`);
      return ENOTSUP_STATUS;
    }
    let buf: Uint8Array;
    let t;
    try {
      ({ value: buf, t } = await timed(ctx, () => (fromVmState ? target.readVmState!(offset, count) : target.read(offset, count))));
    } catch (e) {
      ctx.io.out(`read failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    let ret = 0;
    if (p.opts.P !== undefined) {
      for (let i = patternOffset; i < patternOffset + patternCount; i++) {
        if (buf[i] !== p.opts.P) {
          ctx.io.out(`Pattern verification failed at offset ${offset + patternOffset}, ${patternCount} bytes\n`);
          ret = EINVAL;
          break;
        }
      }
    }
    if (quiet) return ret;
    if (dump) ctx.io.out(dumpBuffer(buf, offset));
    ctx.io.out(printReport("read", t, offset, count, count, 1, machine === true));
    return ret;
  },
});

/** qemu_io_alloc_from_file: the file's bytes, repeated to fill `len`. */
function bufferFromFile(ctx: IoContext, name: string, len: number): Uint8Array | undefined {
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

export const writeCmd = ioCommand({
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
  options: {
    options: { b: flag(), c: flag(), C: flag(), f: flag(), n: flag(), p: flag(), P: value(pattern), q: flag(), s: value(text), u: flag(), z: flag() },
    operands: { min: 2, max: 2 },
    rules: [
      notWith("b", "z", { out: "-b and -z cannot be specified at the same time" }),
      notWith("f", "bc", { out: "-f and -b or -c cannot be specified at the same time" }),
      needs("n", "z", { out: "-n requires -z to be specified" }),
      needs("u", "z", { out: "-u requires -z to be specified" }),
      atMostOne("zPs", { out: "Only one of -z, -P, and -s can be specified at the same time" }),
    ],
  },
  async run(ctx, p) {
    const { b: toVmState, c: compressed, f: fua, n: noFallback, z: zeroes } = p.opts;
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count } = operands;
    if (count > REQUEST_MAX_BYTES && !noFallback) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES} without -n, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    if ((toVmState || compressed) && !sectorAligned(ctx, offset, count)) return EINVAL;
    let buf: Uint8Array | undefined;
    if (!zeroes) {
      buf = p.opts.s !== undefined ? bufferFromFile(ctx, p.opts.s, count) : new Uint8Array(count).fill(p.opts.P ?? 0xcd);
      if (!buf) return EINVAL;
    }
    // qemu-io's precedence: -b (VM state), then -z, then -c.
    const target = ctx.target;
    if (toVmState && !target.writeVmState) {
      ctx.io.out(`write failed: ${ENOTSUP}\n`);
      return ENOTSUP_STATUS;
    }
    if (!toVmState && !zeroes && compressed) return unsupported(ctx, "write -c");
    if (!toVmState && !inRange(target, offset, count)) {
      ctx.io.out(`write failed: ${EIO}\n`);
      return EIO_STATUS;
    }
    let t;
    try {
      ({ t } = await timed(ctx, async () => {
        if (toVmState) await target.writeVmState!(offset, buf!);
        else if (zeroes) await target.writeZeroes(offset, count, { unmap: p.opts.u === true });
        else await target.write(offset, buf!);
        if (fua) await ctx.target.flush();
      }));
    } catch (e) {
      ctx.io.out(`write failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    if (p.opts.q) return 0;
    ctx.io.out(printReport("wrote", t, offset, count, count, 1, p.opts.C === true));
    return 0;
  },
});

export const discardCmd = ioCommand({
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
  options: { options: { C: flag(), q: flag() }, operands: { min: 2, max: 2 } },
  async run(ctx, p) {
    const operands = offsetAndLength(ctx, p.operands);
    if (!operands) return EINVAL;
    const { offset, count: bytes } = operands;
    if (bytes > REQUEST_MAX_BYTES) {
      ctx.io.out(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1]}\n`);
      return EINVAL;
    }
    if (!inRange(ctx.target, offset, bytes)) {
      ctx.io.out(`discard failed: ${EIO}\n`);
      return EIO_STATUS;
    }
    let t;
    try {
      ({ t } = await timed(ctx, () => ctx.target.discard(offset, bytes)));
    } catch (e) {
      ctx.io.out(`discard failed: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    if (!p.opts.q) ctx.io.out(printReport("discard", t, offset, bytes, bytes, 1, p.opts.C === true));
    return 0;
  },
});

export const flushCmd = ioCommand({
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
      return EIO_STATUS;
    }
  },
});
