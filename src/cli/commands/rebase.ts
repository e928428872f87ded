/**
 * refcow rebase -u — qemu-img rebase's unsafe mode: the image's header names another backing file (a path
 * or an http(s) URL) and format, or none with -b ""; no data is read or copied, the new backing file is not
 * opened. Used to point an overlay at a base that moved (a local file now served over HTTP, say) with the
 * same contents. The safe mode (copying what differs) is not implemented.
 */
import { hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { NodeFile, Qcow2Image } from "../engine.js";
import { CliError, messageOf } from "../errors.js";
import { errnoText, formatForOpen, formatProblem, openImage, parseFormat } from "../open.js";
import { HELP_LONG, ioOf, oneFilename, parseCommandArgs } from "./common.js";

export async function rebaseCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs("rebase", argv, { short: "hqub:F:f:t:T:pU", long: [HELP_LONG] }, io);
  if (!parsed) return 0;
  const filename = oneFilename(parsed);
  const backing = lastValue(parsed, "b");
  const backingFmt = lastValue(parsed, "F");
  if (!hasFlag(parsed, "u")) throw new CliError("rebase: only the unsafe mode (-u) is implemented: it changes the backing file's name and copies nothing");
  if (backing === undefined) throw new CliError("Must specify backing file (-b) or use -u");
  if (backing !== "" && backingFmt === undefined) throw new CliError(`Could not change the backing file to '${backing}': backing format must be specified`);
  if (backingFmt !== undefined && !parseFormat(backingFmt)) throw new CliError(`Could not change the backing file to '${backing}': ${formatProblem(backingFmt)}`);
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  // Checked like any open (missing file, not qcow2, corrupt header); the chain is not opened (-u).
  const probe = openImage({ path: filename, format, readOnly: true, noBacking: true });
  const isQcow2 = probe.disk instanceof Qcow2Image;
  probe.disk.close();
  if (!isQcow2) throw new CliError(`Could not change the backing file to '${backing}': '${filename}' is not a qcow2 image`);
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
  return 0;
}
