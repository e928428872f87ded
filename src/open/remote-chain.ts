/**
 * Opening a backing chain of remote images, read-only, with no Node API: the browser's worker opens the
 * backing files of an OPFS overlay this way (Node's open-path.ts opens local files and URLs alike). Each
 * layer's file comes from `openFile` (the browser's: http-file-web.ts); relative backing names resolve
 * against the URL of the image naming them, as QEMU resolves them.
 */
import type { BlockFile } from "../io/block-file.js";
import { ImageFormatError } from "../engine/errors.js";
import type { CacheMode } from "../engine/types.js";
import { isHttpUrl } from "../io/http-object.js";
import { Qcow2Image } from "./qcow2.js";
import { type ImageFormat, probeFileFormat, RawDisk, resolveBackingName } from "./raw-disk.js";

const MAX_CHAIN = 64;

export function openRemoteChain(url: string, openFile: (url: string) => BlockFile, opts: { format?: string; cache?: CacheMode } = {}, depth = 0): Qcow2Image | RawDisk {
  if (depth > MAX_CHAIN) throw new ImageFormatError(`backing chain deeper than ${MAX_CHAIN} images (loop?)`);
  if (!isHttpUrl(url)) throw new ImageFormatError(`backing file '${url}' is not an http(s) URL: only remote backing files can be opened here`);
  if (opts.format !== undefined && opts.format !== "qcow2" && opts.format !== "raw") throw new ImageFormatError(`unsupported backing file format '${opts.format}'`);
  const file = openFile(url);
  try {
    const format = (opts.format as ImageFormat | undefined) ?? probeFileFormat(file);
    if (format === "raw") return new RawDisk(file, opts.cache);
    return Qcow2Image.open(file, {
      readOnly: true,
      cache: opts.cache,
      openBacking: (name, fmt) => openRemoteChain(resolveBackingName(url, name), openFile, { format: fmt, cache: opts.cache }, depth + 1),
    });
  } catch (e) {
    file.close();
    throw e;
  }
}
