/** refcow map — qemu-img map: where each range of the virtual disk comes from, human or JSON. */
import { lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import { CliError } from "../errors.js";
import { clipExtents, renderMap } from "../map-output.js";
import { formatForOpen, openImage } from "../open.js";
import { imgNumber } from "../sizes.js";
import { closing, FORCE_SHARE_LONG, HELP_LONG, ioOf, OUTPUT_LONG, oneFilename, outputFormat, parseCommandArgs } from "./common.js";

export async function mapCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs(
    "map",
    argv,
    {
      short: "f:hU",
      long: [
        HELP_LONG,
        OUTPUT_LONG,
        FORCE_SHARE_LONG,
        { name: "start-offset", arg: true, key: "s" },
        { name: "max-length", arg: true, key: "l" },
      ],
    },
    io,
  );
  if (!parsed) return 0;
  const output = outputFormat(parsed);
  let startOffset = 0;
  let maxLength: number | undefined;
  const s = lastValue(parsed, "s");
  if (s !== undefined) {
    const r = imgNumber("start offset", s);
    if (!r.ok) throw new CliError(r.message);
    startOffset = Number(r.value);
  }
  const l = lastValue(parsed, "l");
  if (l !== undefined) {
    const r = imgNumber("max length", l);
    if (!r.ok) throw new CliError(r.message);
    maxLength = Number(r.value);
  }
  const filename = oneFilename(parsed);
  const format = formatForOpen(lastValue(parsed, "f"), filename);
  const opened = openImage({ path: filename, format, readOnly: true });
  return closing(opened.disk, filename, () => {
    const size = opened.disk.size;
    const end = maxLength === undefined ? size : Math.min(size, startOffset + maxLength);
    const entries = clipExtents(opened.disk.map(), startOffset, end, (depth) => opened.layers[depth]);
    const rendered = renderMap(entries, output, startOffset);
    io.out(rendered.text);
    if (rendered.error) throw new CliError(rendered.error);
    return 0;
  });
}
