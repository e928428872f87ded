/**
 * refcow create — qemu-img create: same options, same "Formatting ..." line, same checks in the same order
 * (option list, size operand, -o values, backing file, size, then the format's own validation after the
 * Formatting line).
 */
import * as fs from "node:fs";
import { allValues, hasFlag, lastValue } from "../args.js";
import type { CliIo } from "../command.js";
import {
  CreateOptionError,
  CreateOptionSet,
  formattingLine,
  isValidOptionList,
  optionsHelp,
  qcow2CreateOptions,
  wantsHelp,
} from "../create-options.js";
import { NodeFile, Qcow2Image } from "../engine.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { formatProblem, fullBackingName, openImage, parseFormat } from "../open.js";
import { imgNumber } from "../sizes.js";
import { HELP_LONG, ioOf, parseCommandArgs } from "./common.js";

function roundUp512(n: number): number {
  return Math.ceil(n / 512) * 512;
}

export async function createCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = ioOf(io0);
  const parsed = parseCommandArgs("create", argv, { short: "F:b:f:ho:qu", long: [HELP_LONG] }, io);
  if (!parsed) return 0;
  const fmtArg = lastValue(parsed, "f") ?? "raw";
  const quiet = hasFlag(parsed, "q");
  const unsafe = hasFlag(parsed, "u");
  const optionLists = allValues(parsed, "o");
  for (const list of optionLists) {
    if (!isValidOptionList(list)) throw new CliError(`Invalid option list: ${list}`);
  }
  const format = parseFormat(fmtArg);
  if (optionLists.some(wantsHelp)) {
    if (!format) throw new CliError(formatProblem(fmtArg).replace(/^Unknown driver/, "Unknown file format"));
    io.out(optionsHelp(format));
    return 0;
  }
  if (parsed.operands.length < 1) throw new UsageError("Expecting image file name");
  const filename = parsed.operands[0]!;
  let sizeArg: bigint | undefined;
  if (parsed.operands.length >= 2) {
    const r = imgNumber("image size", parsed.operands[1]!);
    if (!r.ok) throw new CliError(r.message);
    if (r.warning) io.err(`refcow: ${r.warning}\n`);
    sizeArg = r.value;
  }
  if (parsed.operands.length > 2) throw new UsageError(`Unexpected argument: ${parsed.operands[2]}`);

  // From here on qemu-img reports errors as "FILE: message" (bdrv_img_create).
  const fail = (msg: string): never => {
    throw new CliError(`${filename}: ${msg}`);
  };
  if (!format) return fail(formatProblem(fmtArg).replace(/^Unknown driver/, "Unknown file format"));
  const opts = new CreateOptionSet(format);
  try {
    for (const list of optionLists) opts.addList(list);
  } catch (e) {
    if (e instanceof CreateOptionError) fail(e.message);
    throw e;
  }
  if (sizeArg !== undefined) {
    if (opts.has("size")) fail("The image size must be specified only once");
    opts.set("size", sizeArg.toString());
  }
  const b = lastValue(parsed, "b");
  const bf = lastValue(parsed, "F");
  if (format === "raw" && (b !== undefined || bf !== undefined)) fail("Backing file not supported for file format 'raw'");
  if (b !== undefined) opts.set("backing_file", b);
  if (bf !== undefined) opts.set("backing_fmt", bf);

  const backingFile = opts.get("backing_file")?.value as string | undefined;
  const backingFmt = opts.get("backing_fmt")?.value as string | undefined;
  if (backingFile !== undefined) {
    if (!unsafe) {
      const full = fullBackingName(filename, backingFile);
      let detected: string;
      let backingSize: number;
      const f = parseFormat(backingFmt);
      if (backingFmt !== undefined && !f) fail(`${formatProblem(backingFmt)}; Could not open backing image.`);
      try {
        const opened = openImage({ path: full, format: f, readOnly: true, noBacking: true });
        detected = opened.format;
        backingSize = opened.disk.size;
        opened.disk.close();
      } catch (e) {
        const msg = messageOf(e).replace(`Could not open '${full}': `, "");
        return fail(`${msg}; Could not open backing image.`);
      }
      if (backingFmt === undefined) fail(`Backing file specified without backing format; Detected format of ${detected}.`);
      if (!opts.has("size")) opts.set("size", String(backingSize));
    } else if (backingFmt === undefined) {
      fail("Backing file specified without backing format");
    }
  }
  if (!opts.has("size")) fail("Image creation needs a size parameter");

  if (!quiet) io.out(formattingLine(filename, opts));

  const sizeValue = opts.get("size")!.value as bigint;
  const size = roundUp512(Number(sizeValue));
  if (format === "raw") {
    if (sizeValue > BigInt(Number.MAX_SAFE_INTEGER)) fail("The image size is too large for file format 'raw'");
    try {
      const fd = fs.openSync(filename, "w");
      try {
        fs.ftruncateSync(fd, size);
      } finally {
        fs.closeSync(fd);
      }
    } catch (e) {
      fail(messageOf(e));
    }
    return 0;
  }
  let createOpts;
  try {
    createOpts = qcow2CreateOptions(opts, size);
    if (createOpts.backingFormat !== undefined && createOpts.backingFile === undefined) {
      throw new CreateOptionError("Backing format cannot be used without backing file");
    }
  } catch (e) {
    return fail(messageOf(e));
  }
  let file;
  try {
    file = NodeFile.open(filename, { create: true });
  } catch (e) {
    return fail(`Could not create '${filename}': ${messageOf(e)}`);
  }
  try {
    Qcow2Image.create(file, createOpts);
  } catch (e) {
    fail(messageOf(e));
  } finally {
    file.close();
  }
  return 0;
}
