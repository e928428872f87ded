/** qemu-io's commands on the image as a whole: map, alloc, length, info, truncate. */
import { messageOf } from "../errors.js";
import { cvtstr } from "../human-size.js";
import { EINVAL, EIO_STATUS, ioCommand, size, sum, timed, unsupported } from "./command.js";
import type { AllocationRuns } from "./context.js";
import { oneOfNames, value } from "./getopt.js";

export const allocCmd = ioCommand({
  name: "alloc",
  altname: "a",
  args: "offset [count]",
  oneline: "checks if offset is allocated in the file",
  argmin: 1,
  argmax: 2,
  async run(ctx, p) {
    const offset = size(ctx, p.operands[0]!);
    if (offset === undefined) return EINVAL;
    let count = 512;
    if (p.operands.length === 2) {
      const n = size(ctx, p.operands[1]!);
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
});

export const mapCmd = ioCommand({
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
});

export const lengthCmd = ioCommand({
  name: "length",
  altname: "l",
  oneline: "gets the length of the current file",
  argmin: 0,
  argmax: 0,
  async run(ctx) {
    ctx.io.out(`${cvtstr(ctx.target.size)}\n`);
    return 0;
  },
});

export const infoCmd = ioCommand({
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
});

/** QEMU's PreallocMode names. */
const PREALLOC_MODES = new Set(["off", "metadata", "falloc", "full"]);

export const truncateCmd = ioCommand({
  name: "truncate",
  altname: "t",
  args: "[-m prealloc_mode] off",
  oneline: "truncates the current file at the given offset",
  argmin: 1,
  argmax: 3,
  write: true,
  options: {
    options: { m: value(oneOfNames(PREALLOC_MODES, (v) => `Invalid preallocation mode '${v}'`)) },
    // Only the first operand counts (qemu-io ignores the rest).
    operands: { min: 1 },
  },
  async run(ctx, p) {
    const prealloc = p.opts.m ?? "off";
    const newSize = size(ctx, p.operands[0]!);
    if (newSize === undefined) return EINVAL;
    if (prealloc !== "off" && newSize < ctx.target.size) {
      ctx.io.err("refcow: Preallocation can't be used for shrinking an image\n");
      return EINVAL;
    }
    if (prealloc !== "off" && newSize > ctx.target.size) return unsupported(ctx, `truncate -m ${prealloc}`);
    try {
      await timed(ctx, () => ctx.target.resize(newSize));
    } catch (e) {
      ctx.io.err(`refcow: ${messageOf(e)}\n`);
      return EIO_STATUS;
    }
    return 0;
  },
});
