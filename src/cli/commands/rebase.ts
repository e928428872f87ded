/**
 * refcow rebase — qemu-img rebase. The image's header comes to name another backing file (a path or an
 * http(s) URL) and format, or none with -b "".
 *
 * Safe mode (the default): the guest's view of the image does not change. Every range the image does not
 * map itself (read through the old backing chain) is compared with the same range of the new backing file
 * (zeroes past its end, or with -b ""); where they differ, the old chain's bytes are written into the image.
 * Then the header names the new backing file. Both chains are only read, so either may be remote. A crash
 * before the header changes leaves the image naming the old backing file with some of its bytes copied in:
 * the same guest view.
 *
 * An image with a record of the remote versions it was made over (`IMAGE.remote.json`, open/remote-pin.ts)
 * gets the new chain's versions recorded in safe mode; -u leaves the record as it is.
 *
 * Unsafe mode (-u): only the header changes; nothing is read or copied and the new backing file is not
 * opened. Used to point an overlay at a base that moved (a local file now served over HTTP, say) with the
 * same contents.
 */
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import * as fs from "node:fs";
import type { HttpObject } from "../../io/http-object.js";
import { NodeFile, openImagePath, pinPath, Qcow2Image, resolveBackingName, writePin } from "../engine.js";
import { CliError, messageOf } from "../errors.js";
import { type Disk, errnoText, formatForOpen, formatProblem, openImage, parseFormat } from "../open.js";
import { HELP_LONG, ioOf, oneFilename, parseCommandArgs } from "./common.js";

/** Bytes compared at a time, and the granularity of the copies. */
const STEP = 1 << 20;
const PIECE = 4096;

export async function rebaseCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs("rebase", argv, { short: "hqub:F:f:t:T:pU", long: [HELP_LONG] }, io);
  if (!parsed) return 0;
  const filename = oneFilename(parsed);
  const backing = lastValue(parsed, "b");
  const backingFmt = lastValue(parsed, "F");
  if (backing === undefined) throw new CliError("Must specify backing file (-b) or use -u");
  if (backing !== "" && backingFmt === undefined) throw new CliError(`Could not change the backing file to '${backing}': backing format must be specified`);
  if (backingFmt !== undefined && !parseFormat(backingFmt)) throw new CliError(`Could not change the backing file to '${backing}': ${formatProblem(backingFmt)}`);
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  // Checked like any open (missing file, not qcow2, corrupt header); the chain is not opened yet.
  const probe = openImage({ path: filename, format, readOnly: true, noBacking: true });
  const isQcow2 = probe.disk instanceof Qcow2Image;
  probe.disk.close();
  if (!isQcow2) throw new CliError(`Could not change the backing file to '${backing}': '${filename}' is not a qcow2 image`);
  const safe = !hasFlag(parsed, "u");
  if (safe) copyDifferences(filename, backing, backingFmt);
  let file: NodeFile;
  try {
    file = NodeFile.open(filename, {});
  } catch (e) {
    throw new CliError(`Could not open '${filename}': ${errnoText(e) ?? messageOf(e)}`);
  }
  try {
    const img = Qcow2Image.open(file, { noBacking: true });
    try {
      img.setBackingName(backing, backing === "" ? undefined : backingFmt);
    } finally {
      img.close();
    }
  } catch (e) {
    throw new CliError(`Could not change the backing file to '${backing}': ${messageOf(e)}`);
  } finally {
    file.close();
  }
  if (safe && fs.existsSync(pinPath(filename))) repin(filename, backing, backingFmt);
  return 0;
}

/** Records the versions of the new chain's remote layers (none left: the record goes). */
function repin(filename: string, backing: string, backingFmt: string | undefined): void {
  const remotes: HttpObject[] = [];
  if (backing !== "") {
    const path = resolveBackingName(filename, backing);
    openImagePath(path, { readOnly: true, format: parseFormat(backingFmt!), onRemoteLayer: (o) => remotes.push(o) }).close();
  }
  if (remotes.length > 0) writePin(filename, remotes);
  else fs.rmSync(pinPath(filename), { force: true });
}

/** Safe mode's copy: what the image reads through its old chain and the new backing file would change. */
function copyDifferences(filename: string, backing: string, backingFmt: string | undefined): void {
  const image = openImage({ path: filename, format: "qcow2", readOnly: false }).disk as Qcow2Image;
  let next: Disk | undefined;
  try {
    if (backing !== "") {
      const path = resolveBackingName(filename, backing);
      try {
        next = openImage({ path, format: parseFormat(backingFmt!), readOnly: true }).disk;
      } catch (e) {
        throw new CliError(`Could not open new backing file '${path}': ${messageOf(e).replace(/^Could not open '[^']*': /, "")}`);
      }
    }
    for (let offset = 0; offset < image.size; offset += STEP) {
      const length = Math.min(STEP, image.size - offset);
      let at = offset;
      for (const run of image.allocation(offset, length)) {
        if (!run.allocated) copyRun(image, next, at, run.length);
        at += run.length;
      }
    }
    image.flush();
  } finally {
    next?.close();
    image.close();
  }
}

/** Copies into `image` the pieces of [offset, offset + length) where the old chain and `next` differ. */
function copyRun(image: Qcow2Image, next: Disk | undefined, offset: number, length: number): void {
  const old = image.read(offset, length);
  const now = new Uint8Array(length);
  const inside = next ? Math.max(0, Math.min(length, next.size - offset)) : 0;
  if (inside > 0) now.set(next!.read(offset, inside));
  let start = -1;
  for (let p = 0; p < length; p += PIECE) {
    const differs = !sameBytes(old, now, p, Math.min(length, p + PIECE));
    if (differs && start < 0) start = p;
    if (!differs && start >= 0) {
      image.write(offset + start, old.subarray(start, p));
      start = -1;
    }
  }
  if (start >= 0) image.write(offset + start, old.subarray(start));
}

function sameBytes(a: Uint8Array, b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return false;
  return true;
}
