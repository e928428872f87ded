/**
 * Opening images by path or http(s) URL: format probing, raw files, and backing chains resolved relative to
 * the image that names them (as QEMU does). A URL opens read-only through the HTTP file (io/http-file.ts).
 */
import * as fs from "node:fs";
import type { BlockFile } from "../io/block-file.js";
import { NodeFile } from "../io/node-file.js";
import { HttpFile, type HttpFileOptions } from "../io/http-file.js";
import { type HttpObject, isHttpUrl } from "../io/http-object.js";
import { checkPin } from "./remote-pin.js";
import type { CompactOptions, CompactResult } from "../engine/tools/compact.js";
import { ImageFormatError, RequestError } from "../engine/errors.js";
import { compactImage, Qcow2Image, type LibraryOpenOptions } from "./qcow2.js";
import { type ImageFormat, probeFileFormat, RawDisk, resolveBackingName } from "./raw-disk.js";

export { type ImageFormat, probeFileFormat, RawDisk, resolveBackingName };

/** qcow2 when the file starts with qcow2's magic, raw otherwise. */
export function probeFormat(file: string): ImageFormat {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.alloc(4);
    const n = fs.readSync(fd, buf, 0, 4, 0);
    return n === 4 && buf.readUInt32BE(0) === 0x514649fb ? "qcow2" : "raw";
  } finally {
    fs.closeSync(fd);
  }
}

/** The one-line refusal of a writable open of a URL. */
export function remoteWriteRefusal(url: string): string {
  return `Could not open '${url}': a remote image is read-only; open it read-only, or write into a local overlay (refcow create -f qcow2 -b ${url} -F <format> overlay.qcow2)`;
}

/**
 * The file under an image layer: a local file, or by http(s) URL a remote one (read-only: a writable open
 * is refused; a remote layer under a local overlay `pinnedBy` must be the version the overlay was made
 * over, remote-pin.ts). Missing local files get QEMU's wording.
 */
export function openLayerFile(name: string, opts: { readOnly: boolean; http?: HttpFileOptions; pinnedBy?: string; onRemote?: (object: HttpObject) => void }): BlockFile {
  if (isHttpUrl(name)) {
    if (!opts.readOnly) throw new RequestError(remoteWriteRefusal(name));
    const file = HttpFile.open(name, opts.http);
    try {
      if (opts.pinnedBy !== undefined) checkPin(opts.pinnedBy, file.object);
      opts.onRemote?.(file.object);
    } catch (e) {
      file.close();
      throw e;
    }
    return file;
  }
  if (!fs.existsSync(name)) throw new RequestError(`Could not open '${name}': No such file or directory`);
  return NodeFile.open(name, { readOnly: opts.readOnly });
}

export type OpenedImage = Qcow2Image | RawDisk;

const MAX_CHAIN = 64;

export interface PathOpenOptions extends LibraryOpenOptions {
  format?: ImageFormat;
  /**
   * Wraps the top image's file before the engine opens it: the file itself is then opened read-only and
   * the engine opens the wrapper read-write (a private copy-on-write view, see io/overlay-file.ts).
   */
  wrapFile?: (file: BlockFile) => BlockFile;
  /** Options of the layers opened by http(s) URL (chunk size, cache folder...). */
  http?: HttpFileOptions;
  /** The nearest local image above this one in the chain, whose record pins remote layers (set by the chain walk). */
  pinnedBy?: string;
  /** Called with each remote layer's pinned version as it opens, top first. */
  onRemoteLayer?: (object: HttpObject) => void;
}

/**
 * Opens an image (qcow2 or raw, probed unless given) by path or http(s) URL, with its backing chain opened
 * read-only. A URL opens only read-only (or wrapped: the wrapper takes the writes).
 */
export function openImagePath(file: string, opts: PathOpenOptions = {}, depth = 0): OpenedImage {
  if (depth > MAX_CHAIN) throw new ImageFormatError(`backing chain deeper than ${MAX_CHAIN} images (loop?)`);
  const baseFile = openLayerFile(file, {
    readOnly: !!opts.readOnly || opts.wrapFile !== undefined,
    http: opts.http,
    pinnedBy: opts.pinnedBy,
    onRemote: opts.onRemoteLayer,
  });
  const bf = opts.wrapFile ? opts.wrapFile(baseFile) : baseFile;
  try {
    const format = opts.format ?? probeFileFormat(baseFile);
    if (format === "raw") return new RawDisk(bf, opts.cache);
    const { wrapFile, format: _format, http, pinnedBy, onRemoteLayer, ...engineOpts } = opts;
    return Qcow2Image.open(bf, {
      ...engineOpts,
      readOnly: wrapFile ? false : opts.readOnly,
      openBacking:
        opts.openBacking ??
        ((name, fmt) => {
          const resolved = resolveBackingName(file, name);
          if (fmt && fmt !== "qcow2" && fmt !== "raw") throw new ImageFormatError(`unsupported backing file format '${fmt}'`);
          const under = { pinnedBy: isHttpUrl(file) ? pinnedBy : file, onRemoteLayer };
          return openImagePath(resolved, { readOnly: true, format: fmt as ImageFormat | undefined, cache: opts.cache, http, ...under }, depth + 1);
        }),
    });
  } catch (e) {
    bf.close();
    throw e;
  }
}

/** Compacts the qcow2 image file at `file` (see compact.ts); it must not be open anywhere else. */
export function compactImagePath(file: string, opts: Omit<CompactOptions, "schemes"> = {}): CompactResult {
  if (!fs.existsSync(file)) throw new RequestError(`Could not open '${file}': No such file or directory`);
  const bf = NodeFile.open(file, { readOnly: opts.readOnly });
  try {
    return compactImage(bf, opts);
  } finally {
    bf.close();
  }
}

/** Creates a qcow2 image file at `file` (overwriting it). */
export function createImagePath(file: string, opts: Parameters<typeof Qcow2Image.create>[1]): void {
  const bf = NodeFile.open(file, { create: true });
  try {
    Qcow2Image.create(bf, opts);
  } finally {
    bf.close();
  }
}
