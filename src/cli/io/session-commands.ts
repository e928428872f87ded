/** qemu-io's commands on the session: open, close, reopen; sleep, sigraise, abort, quit. */
import { messageOf } from "../errors.js";
import { EINVAL, EIO_STATUS, ENOTSUP_STATUS, ioCommand, parseWholeLong, size, timed, unsupported } from "./command.js";
import type { IoContext, IoFileOptions } from "./context.js";
import { flag, oneOfNames, text, value, values } from "./getopt.js";

/** bdrv_parse_cache_mode's names. */
const CACHE_MODES = new Set(["none", "off", "writeback", "writethrough", "directsync", "unsafe"]);
/** bdrv_parse_discard_flags's names. */
const DISCARD_MODES = new Set(["off", "ignore", "on", "unmap"]);
/** bdrv_parse_aio's names (QEMU built with io_uring). */
const AIO_MODES = new Set(["threads", "native", "io_uring"]);

const cacheMode = oneOfNames(CACHE_MODES, (v) => `Invalid cache option: ${v}`);

export const closeCmd = ioCommand({
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
});

/** open -o: the driver option; anything else is refused with one line. */
function openFormat(ctx: IoContext, options: readonly string[]): { format?: "qcow2" | "raw" } | undefined {
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

/**
 * open: qemu-io's order — the options (a bad -t, -d or -i value ends it there), the operand count, whether an
 * image is open already, a missing path, then the open itself (-U refused without -r). -k, -i, -d and -U
 * choose nothing here; -C and -o other than driver= are refcow's refusals, just before it would open.
 */
export const openCmd = ioCommand({
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
  options: {
    options: {
      s: flag(),
      n: flag(),
      C: flag(),
      r: flag(),
      o: values(text),
      k: flag(),
      t: value(cacheMode),
      d: value(oneOfNames(DISCARD_MODES, (v) => `Invalid discard option: ${v}`)),
      U: flag(),
      i: value(oneOfNames(AIO_MODES, (v) => `Invalid aio option: ${v}`)),
    },
    operands: { min: 0, max: 1 },
  },
  async run(ctx, p) {
    if (!ctx.files) return unsupported(ctx, "open");
    if (!ctx.closed) {
      ctx.io.err("refcow: file open already, try 'help close'\n");
      return EINVAL;
    }
    const path = p.operands[0];
    if (path === undefined) {
      ctx.io.err("refcow: can't open: Must specify either driver or file\n");
      return EINVAL;
    }
    if (p.opts.C) return unsupported(ctx, "open -C");
    const f = openFormat(ctx, p.opts.o ?? []);
    if (!f) return ENOTSUP_STATUS;
    // -n is -t none: the last of them counts.
    const cache = p.given.filter((g) => g.letter === "n" || g.letter === "t").at(-1);
    const opts: IoFileOptions = {
      readOnly: p.opts.r === true,
      snapshot: p.opts.s === true,
      ...(cache && { cache: cache.letter === "n" ? "none" : (cache.value as string) }),
      ...f,
    };
    if (p.opts.U && !opts.readOnly) {
      ctx.io.err(`refcow: can't open device ${path}: force-share=on can only be used with read-only images\n`);
      return EINVAL;
    }
    try {
      ctx.target = await ctx.files.open(path, opts);
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      return EINVAL;
    }
    ctx.closed = false;
    return 0;
  },
});

export const reopenCmd = ioCommand({
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
  options: {
    options: { c: value(cacheMode), o: values(text), r: flag(), w: flag() },
    oneOf: { letters: "rw", say: { err: "Only one -r/-w option may be given" } },
    operands: { min: 0, max: 0 },
  },
  async run(ctx, p) {
    if (!ctx.files) return unsupported(ctx, "reopen");
    if (p.opts.o) return unsupported(ctx, `reopen -o ${p.opts.o[0]}`);
    const opts: { readOnly?: boolean; cache?: string } = {};
    if (p.opts.c !== undefined) opts.cache = p.opts.c;
    if (p.opts.r || p.opts.w) opts.readOnly = p.opts.r === true;
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
});

export const sleepCmd = ioCommand({
  name: "sleep",
  oneline: "waits for the given value in milliseconds",
  argmin: 1,
  argmax: 1,
  nofile: true,
  async run(ctx, p) {
    const ms = parseWholeLong(p.operands[0]!);
    if (ms === undefined || ms < 0) {
      ctx.io.out(`${p.operands[0]} is not a valid number\n`);
      return EINVAL;
    }
    await timed(ctx, () => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    return 0;
  },
});

/** NSIG on Linux: signal numbers above it are refused. */
const NSIG = 65;

/**
 * sigraise and abort end the process as a crash does: nothing is flushed or closed, the worker serving the
 * image dies with it, and the image is left as a power cut would leave it (what the next open repairs, or
 * replays, under each scheme). Output already written stays written (stdout and stderr are synchronous on
 * Linux for files and pipes).
 */
export const sigraiseCmd = ioCommand({
  name: "sigraise",
  args: "signal",
  oneline: "raises a signal",
  argmin: 1,
  argmax: 1,
  nofile: true,
  help:
    "\n raises the given signal\n\n Example:\n 'sigraise 15' - raises SIGTERM\n\n" +
    ' Invokes raise(signal), where "signal" is the mandatory integer argument\n given to sigraise.\n\n',
  async run(ctx, p) {
    const sig = size(ctx, p.operands[0]!);
    if (sig === undefined) return EINVAL;
    if (sig > NSIG) {
      ctx.io.out(`signal argument '${p.operands[0]}' is too large to be a valid signal\n`);
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
});

export const abortCmd = ioCommand({
  name: "abort",
  oneline: "simulate a program crash using abort(3)",
  argmin: 0,
  argmax: 0,
  nofile: true,
  async run() {
    process.abort();
  },
});

export const quitCmd = ioCommand({
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
});
