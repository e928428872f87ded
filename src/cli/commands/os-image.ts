/**
 * refcow os-image — writes the demo OS disk (guest-images/build-os.sh: syslinux, Debian's i386 kernel,
 * busybox root file system on ext4) into a new image that `refcow boot` boots: qcow2 through refcow's
 * engine (default) or raw, sparse either way.
 */
import { hasFlag, lastValue, parseArgs } from "../args.js";
import { type CliIo, processIo } from "../command.js";
import { CliError, messageOf, UsageError } from "../errors.js";
import { parseSize } from "../sizes.js";
import { ensureOsImage, readOsManifest, writeOsImage } from "../../guest/os-image.js";
import { OS_IMAGE_USAGE, OS_IMAGE_HELP } from "./os-image-help.js";

const LONG = [
  { name: "help", arg: false, key: "h" },
  { name: "format", arg: true, key: "f" },
  { name: "size", arg: true },
];

export async function osImageCommand(argv: string[], io0?: CliIo): Promise<number> {
  const io = io0 ?? processIo;
  const parsed = parseArgs(argv, { short: "hf:", long: LONG });
  if (hasFlag(parsed, "h")) {
    io.out(`usage: refcow ${OS_IMAGE_USAGE}\n${OS_IMAGE_HELP}`);
    return 0;
  }
  if (parsed.operands.length !== 1) throw new UsageError("Expecting one image file name");
  const dest = parsed.operands[0]!;
  const format = lastValue(parsed, "f") ?? "qcow2";
  if (format !== "qcow2" && format !== "raw") throw new UsageError(`-f must be qcow2 or raw, got '${format}'`);
  let size: number | undefined;
  const sizeArg = lastValue(parsed, "size");
  if (sizeArg !== undefined) {
    const p = parseSize(sizeArg);
    if (!p.ok || p.value <= 0n || p.value > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`invalid --size '${sizeArg}'`);
    size = Number(p.value);
  }
  let paths;
  try {
    paths = await ensureOsImage({ onProgress: (m) => io.err(`${m}\n`) });
  } catch (e) {
    throw new CliError(`os-image: the demo OS disk could not be built (run 'bash guest-images/build-os.sh' to see why): ${messageOf(e).split("\n")[0]}`);
  }
  const manifest = readOsManifest(paths);
  if (size !== undefined && size < manifest.size) throw new CliError(`os-image: --size must be at least the OS disk's ${manifest.size / 2 ** 20} MiB`);
  io.err(`writing ${dest} (${format}): demo OS, kernel ${manifest.kernelRelease}...\n`);
  try {
    const r = writeOsImage(paths.image, dest, { format, size });
    io.err(`${dest}: ${r.size} bytes virtual, ${(r.dataBytes / 2 ** 20).toFixed(1)} MiB of data\n`);
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw new CliError(`os-image: ${messageOf(e)}`);
  }
  return 0;
}
