/**
 * refcow bitmap — qemu-img bitmap: persistent dirty bitmaps of a qcow2 image.
 *
 *   bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file
 *          [-F source_fmt]] [-g granularity] [--disabled] [-f fmt] filename bitmap
 *
 * The operations run in the order given, on one open of the image; the first that fails ends the command
 * ("Operation add on bitmap b0 failed: ...", exit 1) and what the earlier ones did is kept, as qemu-img keeps
 * it. `--add --disable` adds a disabled bitmap, as in qemu-img; `--disabled` (refcow's) makes every --add of
 * the call add a disabled one.
 */
import { lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { Qcow2Image } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { formatForOpen, openImage } from "../open.js";
import { imgNumber } from "../sizes.js";
import { closing, HELP_LONG, ioOf, parseCommandArgs } from "./common.js";

type Action = { op: "add" | "remove" | "clear" | "enable" | "disable" } | { op: "merge"; source: string };

export async function bitmapCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "bitmap",
    argv,
    {
      short: "hb:f:F:g:",
      long: [
        HELP_LONG,
        { name: "add", arg: false },
        { name: "remove", arg: false },
        { name: "clear", arg: false },
        { name: "enable", arg: false },
        { name: "disable", arg: false },
        { name: "disabled", arg: false },
        { name: "merge", arg: true },
        { name: "object", arg: true },
        { name: "image-opts", arg: false },
      ],
    },
    io,
  );
  if (!parsed) return 0;
  const actions: Action[] = [];
  let addDisabled = false;
  for (const o of parsed.options) {
    if (o.key === "merge") actions.push({ op: "merge", source: o.value! });
    else if (o.key === "add" || o.key === "remove" || o.key === "clear" || o.key === "enable" || o.key === "disable") actions.push({ op: o.key });
    else if (o.key === "disabled") addDisabled = true;
    else if (o.key === "object") throw new CliError("--object is not supported by refcow");
    else if (o.key === "image-opts") throw new CliError("--image-opts is not supported by refcow");
  }
  const granularityText = lastValue(parsed, "g");
  let granularity: number | undefined;
  if (granularityText !== undefined) {
    const n = imgNumber("granularity", granularityText);
    if (!n.ok) throw new CliError(n.message);
    if (n.warning) io.err(`refcow: ${n.warning}\n`);
    // 0 asks for the default, as in qemu-img.
    granularity = n.value === 0n ? undefined : Number(n.value);
  }
  const srcFile = lastValue(parsed, "b");
  const srcFormat = lastValue(parsed, "F");
  // qemu-img's checks, in its order.
  if (!actions.length) throw new CliError("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
  const adds = actions.some((a) => a.op === "add");
  if (granularityText !== undefined && !adds) throw new CliError("granularity only supported with --add");
  if (srcFormat !== undefined && srcFile === undefined) throw new CliError("-F only supported with -b");
  if (srcFile !== undefined && !actions.some((a) => a.op === "merge")) throw new CliError("Merge bitmap source file only supported with --merge");
  if (parsed.operands.length !== 2) throw new UsageError("Expecting filename and bitmap name");
  const [filename, name] = parsed.operands as [string, string];

  const opened = openImage({ path: filename, format: formatForOpen(lastValue(parsed, "f"), filename), readOnly: false });
  const img = opened.disk;
  return closing(img, filename, () => {
    const source = srcFile === undefined ? undefined : openImage({ path: srcFile, format: formatForOpen(srcFormat, srcFile), readOnly: true, noBacking: true }).disk;
    return closing(source ?? { close: () => {} }, srcFile ?? "", () => {
      for (const a of actions) {
        try {
          if (!(img instanceof Qcow2Image)) {
            if (a.op === "add") throw new Error(`Can't store persistent bitmaps to '${filename}': Operation not supported`);
            throw new Error(`Dirty bitmap '${a.op === "merge" ? a.source : name}' not found`);
          }
          switch (a.op) {
            case "add":
              img.bitmapAdd(name, { granularity, disabled: addDisabled });
              break;
            case "remove":
              img.bitmapRemove(name);
              break;
            case "clear":
              img.bitmapClear(name);
              break;
            case "enable":
              img.bitmapEnable(name);
              break;
            case "disable":
              img.bitmapDisable(name);
              break;
            case "merge":
              if (source !== undefined && !(source instanceof Qcow2Image)) throw new Error(`Dirty bitmap '${a.source}' not found`);
              img.bitmapMerge(name, a.source, source);
              break;
          }
        } catch (e) {
          // QEMU's two-line messages (an inconsistent bitmap and its hint) stay two lines.
          const text = e instanceof Error && !/^(TypeError|RangeError|ReferenceError)$/.test(e.name) ? e.message : messageOf(e);
          throw new CliError(`Operation ${a.op} on bitmap ${name} failed: ${text}`);
        }
      }
      return 0;
    });
  });
}
