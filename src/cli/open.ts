/**
 * Opening images for the commands, with qemu-img's error wording:
 *   Could not open 'x': Could not open 'x': No such file or directory
 *   Could not open 'ov.qcow2': Could not open backing file: Could not open 'base.qcow2': No such file or directory
 *   Could not open 'r.raw': Image is not in qcow2 format
 *
 * Backing files are resolved as QEMU does (bdrv_make_absolute_filename): a relative name is taken relative
 * to the directory part of the name the image was opened by, by plain string concatenation, so
 * "sub/ov.qcow2" naming "base.qcow2" opens "sub/base.qcow2". The name of each layer is kept for the human
 * `map` output ("File" column).
 */
import * as fs from "node:fs";
import { CliError, messageOf } from "./errors.js";
import { ALLOC_POLICIES, type AllocPolicyName, type BlockFile, type CacheMode, type ImageOpenOptions, isHttpUrl, openLayerFile, probeFileFormat, Qcow2Image, RawDisk, remoteWriteRefusal, resolveBackingName, type SchemeOptionValues } from "./engine.js";

export type FormatName = "qcow2" | "raw";
export type Disk = Qcow2Image | RawDisk;

/** Cache modes as qemu-img / qemu-io spell them (-t), mapped onto the engine's three. */
export function parseCacheMode(s: string, what = "cache"): CacheMode {
  switch (s) {
    case "writeback":
    case "none": // O_DIRECT on the host; write-back semantics towards the guest
    case "off":
      return "writeback";
    case "writethrough":
    case "directsync":
      return "writethrough";
    case "unsafe":
      return "unsafe";
    default:
      throw new CliError(`Invalid ${what} option: ${s}`);
  }
}

/** --alloc: the allocation policy for an image opened for writing (undefined: the engine's default, first-fit). */
export function parseAllocPolicy(s: string | undefined): AllocPolicyName | undefined {
  if (s === undefined) return undefined;
  if ((ALLOC_POLICIES as readonly string[]).includes(s)) return s as AllocPolicyName;
  throw new CliError(`Invalid --alloc option: ${s} (expecting ${ALLOC_POLICIES.join(" or ")})`);
}

/** -f / -F: the formats refcow reads and writes. */
export function parseFormat(s: string | undefined): FormatName | undefined {
  if (s === undefined) return undefined;
  if (s === "qcow2" || s === "raw") return s;
  return undefined;
}

/** QEMU formats refcow does not implement (named in errors so the user knows the format exists). */
const OTHER_QEMU_FORMATS = new Set(["bochs", "cloop", "dmg", "luks", "parallels", "qcow", "qed", "vdi", "vhdx", "vmdk", "vpc", "vvfat"]);

/** The reason a -f value cannot be used, in the words qemu-img would use for an unknown one. */
export function formatProblem(s: string): string {
  return OTHER_QEMU_FORMATS.has(s) ? `Format '${s}' is not supported by refcow (only qcow2 and raw)` : `Unknown driver '${s}'`;
}

/** -f for a command that opens `path`: the format, undefined to probe, or a CliError "Could not open...". */
export function formatForOpen(fmt: string | undefined, path: string): FormatName | undefined {
  if (fmt === undefined) return undefined;
  const f = parseFormat(fmt);
  if (!f) throw new CliError(`Could not open '${path}': ${formatProblem(fmt)}`);
  return f;
}

/** bdrv_make_absolute_filename: `name` relative to the directory part of `imagePath` (a path or a URL). */
export const fullBackingName = resolveBackingName;

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: "No such file or directory",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  EISDIR: "Is a directory",
  ENOTDIR: "Not a directory",
  EROFS: "Read-only file system",
  ENOSPC: "No space left on device",
  EIO: "Input/output error",
  ELOOP: "Too many levels of symbolic links",
  ENAMETOOLONG: "File name too long",
};

/** The strerror text for a failed fs call, or undefined when the error carries no errno. */
export function errnoText(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code ? (ERRNO_TEXT[code] ?? code) : undefined;
}

/**
 * Checks that `path` can be opened (read-only or read-write) and returns QEMU's "Could not open 'x': ..."
 * reason when it cannot.
 */
function accessProblem(path: string, readOnly: boolean): string | undefined {
  try {
    const st = fs.statSync(path);
    if (!st.isFile() && !st.isBlockDevice()) return `'file' driver requires '${path}' to be a regular file`;
    fs.accessSync(path, readOnly ? fs.constants.R_OK : fs.constants.R_OK | fs.constants.W_OK);
    return undefined;
  } catch (e) {
    return errnoText(e) ?? messageOf(e);
  }
}

/** An open from the command line: the open options (ImageOpenOptions, scheme options validated by the registry) and the CLI's own. */
export interface OpenRequest extends Omit<ImageOpenOptions, "order"> {
  path: string;
  /** -f; probed when absent. */
  format?: FormatName;
  readOnly: boolean;
  /** Do not open the backing chain (qemu-img info). */
  noBacking?: boolean;
  /** Open for check / repair: corrupt images allowed, no repair at open. */
  forCheck?: boolean;
  /**
   * Wraps the image file before the engine opens it (top layer only). The file itself is then opened
   * read-only and the engine opens the wrapper read-write: private copy-on-write views.
   */
  wrapFile?: (file: BlockFile) => BlockFile;
}

export interface OpenedImage {
  disk: Disk;
  format: FormatName;
  /** Name of the file at each depth of the chain: [path, backing, backing's backing...]. */
  layers: string[];
  /** True when the format was probed (not given with -f). */
  probed: boolean;
}

const MAX_CHAIN = 64;

function openLayer(req: OpenRequest, depth: number, layers: string[]): Disk {
  const { path } = req;
  const remote = isHttpUrl(path);
  // A remote layer is read-only; a wrapped one is only read (the wrapper takes the writes).
  if (remote && !req.readOnly && !req.wrapFile) throw new CliError(remoteWriteRefusal(path).replace(/^Could not open '[^']*': /, ""));
  const problem = remote ? undefined : accessProblem(path, req.readOnly);
  if (problem) throw new CliError(problem.startsWith("'file' driver") ? problem : `Could not open '${path}': ${problem}`);
  // Remote layers are pinned by the nearest local image above them (its record, open/remote-pin.ts).
  const pinnedBy = layers.slice(0, depth).reverse().find((name) => !isHttpUrl(name));
  const baseFile = openLayerFile(path, { readOnly: req.readOnly || req.wrapFile !== undefined, pinnedBy: remote ? pinnedBy : undefined });
  const file = req.wrapFile ? req.wrapFile(baseFile) : baseFile;
  let backingFailure: string | undefined;
  try {
    const probed = probeFileFormat(baseFile);
    const format = req.format ?? probed;
    if (format === "qcow2" && probed !== "qcow2") throw new CliError("Image is not in qcow2 format");
    layers[depth] = path;
    if (format === "raw") return new RawDisk(file);
    return Qcow2Image.open(file, {
      readOnly: req.wrapFile ? false : req.readOnly,
      cache: req.cache,
      scheme: req.scheme,
      schemeOptions: req.schemeOptions,
      alloc: req.alloc,
      noReflink: req.noReflink,
      noBacking: req.noBacking,
      forCheck: req.forCheck,
      noRepairOnOpen: req.readOnly || req.forCheck ? true : undefined,
      openBacking: req.noBacking
        ? undefined
        : (name, fmt) => {
            try {
              if (depth + 1 > MAX_CHAIN) throw new CliError(`Backing chain of '${layers[0]}' is longer than ${MAX_CHAIN} images`);
              const full = fullBackingName(path, name);
              const f = fmt === undefined ? undefined : parseFormat(fmt);
              if (fmt !== undefined && f === undefined) throw new CliError(formatProblem(fmt));
              return openLayer({ path: full, format: f, readOnly: true, cache: req.cache }, depth + 1, layers);
            } catch (e) {
              backingFailure = `Could not open backing file: ${messageOf(e)}`;
              throw new CliError(backingFailure);
            }
          },
    });
  } catch (e) {
    file.close();
    if (backingFailure) throw new CliError(backingFailure);
    throw e;
  }
}

/** Opens an image and (unless noBacking) its backing chain. Throws CliError "Could not open 'x': ...". */
export function openImage(req: OpenRequest): OpenedImage {
  const layers: string[] = [];
  try {
    const disk = openLayer(req, 0, layers);
    const format: FormatName = disk instanceof Qcow2Image ? "qcow2" : "raw";
    return { disk, format, layers, probed: req.format === undefined };
  } catch (e) {
    throw new CliError(`Could not open '${req.path}': ${messageOf(e)}`);
  }
}

/** QEMU's warning when a probed raw image is opened for writing (raw_open), shortened to its first line. */
export function probedRawWarning(opened: OpenedImage, readOnly: boolean): string | undefined {
  if (opened.format !== "raw" || !opened.probed || readOnly) return undefined;
  return `WARNING: Image format was not specified for '${opened.layers[0]}' and probing guessed raw.\n`;
}

/** Allocated size of the file (st_blocks * 512), what qemu-img reports as "disk size" / "actual-size". */
export function allocatedFileSize(path: string): number | undefined {
  try {
    const st = fs.statSync(path);
    return st.blocks * 512;
  } catch {
    return undefined;
  }
}
