/**
 * refcow compare — qemu-img compare (qemu-img.c img_compare, QEMU 7.2). Walks both images' block status
 * side by side: ranges that are zero in both are skipped, ranges allocated in both are compared, a range
 * allocated in one only must read as zeroes. Mismatches are reported at 512-byte sector granularity
 * ("Content mismatch at offset N!"). When the sizes differ the common part is compared, then the tail of
 * the larger image must be zero ("Warning: Image size mismatch!"); -s makes a size or allocation
 * difference a mismatch. Exit status: 0 identical, 1 different, 2 open error, 3 status error, 4 read error.
 */
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import type { MapExtent } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { type Disk, formatForOpen, openImage, type OpenedImage, parseCacheMode } from "../open.js";
import { FORCE_SHARE_LONG, HELP_LONG, ioOf, parseCommandArgs } from "./common.js";

const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;

/** Exit codes of qemu-img compare. */
export const COMPARE_EXIT = { identical: 0, different: 1, openError: 2, statusError: 3, readError: 4 } as const;

/** Walks a sorted extent list by offset. */
class ExtentCursor {
  private i = 0;
  constructor(private readonly extents: readonly MapExtent[]) {}

  /** The extent containing `offset`, or undefined past the last one. */
  at(offset: number): MapExtent | undefined {
    while (this.i < this.extents.length && this.extents[this.i]!.start + this.extents[this.i]!.length <= offset) this.i++;
    const e = this.extents[this.i];
    return e && e.start <= offset ? e : undefined;
  }
}

/** The BDRV_BLOCK_* flags of an extent, for strict mode's comparison. */
function statusFlags(e: MapExtent): number {
  return (e.data ? 0x01 : 0) | (e.zero ? 0x02 : 0) | (e.offset !== undefined ? 0x04 : 0) | (e.present ? 0x10 : 0);
}

/** Index of the first 512-byte sector (counted from the start of the buffers) where they differ, or -1. */
export function firstDifferentSector(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i += SECTOR) {
    const end = Math.min(i + SECTOR, a.length);
    for (let j = i; j < end; j++) if (a[j] !== b[j]) return i;
  }
  return -1;
}

/** find_nonzero: start of the first 512-byte sector holding a non-zero byte, or -1. */
export function firstNonZeroSector(a: Uint8Array): number {
  for (let i = 0; i < a.length; i += SECTOR) {
    const end = Math.min(i + SECTOR, a.length);
    for (let j = i; j < end; j++) if (a[j] !== 0) return i;
  }
  return -1;
}

class CompareStop {
  constructor(readonly code: number) {}
}

export async function compareCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "compare",
    argv,
    { short: "hf:F:T:pqsU", long: [HELP_LONG, FORCE_SHARE_LONG, { name: "image-opts", arg: false }] },
    io,
  );
  if (!parsed) return 0;
  if (hasFlag(parsed, "image-opts")) throw new CliError("--image-opts is not supported by refcow");
  if (parsed.operands.length !== 2) throw new UsageError("Expecting two image file names");
  const quiet = hasFlag(parsed, "q");
  const strict = hasFlag(parsed, "s");
  const srcCache = lastValue(parsed, "T");
  if (srcCache !== undefined) parseCacheMode(srcCache, "source cache");
  const [name1, name2] = parsed.operands as [string, string];
  const say = (s: string): void => {
    if (!quiet) io.out(s);
  };

  let img1: OpenedImage | undefined;
  let img2: OpenedImage | undefined;
  try {
    try {
      img1 = openImage({ path: name1, format: formatForOpen(lastValue(parsed, "f"), name1), readOnly: true });
      img2 = openImage({ path: name2, format: formatForOpen(lastValue(parsed, "F"), name2), readOnly: true });
    } catch (e) {
      io.err(`refcow: ${messageOf(e)}\n`);
      return COMPARE_EXIT.openError;
    }
    const d1 = img1.disk;
    const d2 = img2.disk;
    const size1 = d1.size;
    const size2 = d2.size;
    if (strict && size1 !== size2) {
      say("Strict mode: Image size mismatch!\n");
      return COMPARE_EXIT.different;
    }
    const read = (d: Disk, name: string, offset: number, len: number): Uint8Array => {
      const buf = new Uint8Array(len);
      try {
        d.readInto(buf, offset);
      } catch (e) {
        io.err(`refcow: Error while reading offset ${offset} of ${name}: ${messageOf(e)}\n`);
        throw new CompareStop(COMPARE_EXIT.readError);
      }
      return buf;
    };
    const extents = (d: Disk, name: string): MapExtent[] => {
      try {
        return d.map();
      } catch (e) {
        io.err(`refcow: Sector allocation test failed for ${name}: ${messageOf(e)}\n`);
        throw new CompareStop(COMPARE_EXIT.statusError);
      }
    };
    /** check_empty_sectors over [offset, offset + len) of one image. */
    const mustBeZero = (d: Disk, name: string, offset: number, len: number): void => {
      const buf = read(d, name, offset, len);
      const idx = firstNonZeroSector(buf);
      if (idx >= 0) {
        say(`Content mismatch at offset ${offset + idx}!\n`);
        throw new CompareStop(COMPARE_EXIT.different);
      }
    };

    try {
      const c1 = new ExtentCursor(extents(d1, name1));
      const c2 = new ExtentCursor(extents(d2, name2));
      const total = Math.min(size1, size2);
      let offset = 0;
      while (offset < total) {
        const e1 = c1.at(offset);
        const e2 = c2.at(offset);
        if (!e1 || !e2) {
          io.err(`refcow: Sector allocation test failed for ${!e1 ? name1 : name2}\n`);
          return COMPARE_EXIT.statusError;
        }
        let chunk = Math.min(e1.start + e1.length, e2.start + e2.length, total) - offset;
        if (strict && statusFlags(e1) !== statusFlags(e2)) {
          say(`Strict mode: Offset ${offset} block status mismatch!\n`);
          return COMPARE_EXIT.different;
        }
        if (e1.zero && e2.zero) {
          // nothing to compare
        } else if (e1.present === e2.present) {
          if (e1.present) {
            chunk = Math.min(chunk, IO_BUF_SIZE);
            const b1 = read(d1, name1, offset, chunk);
            const b2 = read(d2, name2, offset, chunk);
            const idx = firstDifferentSector(b1, b2);
            if (idx >= 0) {
              say(`Content mismatch at offset ${offset + idx}!\n`);
              return COMPARE_EXIT.different;
            }
          }
        } else {
          chunk = Math.min(chunk, IO_BUF_SIZE);
          if (e1.present) mustBeZero(d1, name1, offset, chunk);
          else mustBeZero(d2, name2, offset, chunk);
        }
        offset += chunk;
      }
      if (size1 !== size2) {
        say("Warning: Image size mismatch!\n");
        const [dOver, nameOver, cOver, sizeOver] = size1 > size2 ? [d1, name1, c1, size1] : [d2, name2, c2, size2];
        while (offset < sizeOver) {
          const e = cOver.at(offset);
          if (!e) {
            io.err(`refcow: Sector allocation test failed for ${nameOver}\n`);
            return COMPARE_EXIT.statusError;
          }
          let chunk = Math.min(e.start + e.length, sizeOver) - offset;
          if (e.present && !e.zero) {
            chunk = Math.min(chunk, IO_BUF_SIZE);
            mustBeZero(dOver, nameOver, offset, chunk);
          }
          offset += chunk;
        }
      }
    } catch (e) {
      if (e instanceof CompareStop) return e.code;
      throw e;
    }
    say("Images are identical.\n");
    return COMPARE_EXIT.identical;
  } finally {
    img1?.disk.close();
    img2?.disk.close();
  }
}
