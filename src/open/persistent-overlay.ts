/**
 * A kept qcow2 overlay over an image (a local file or an http(s) URL): created on first use — a plain
 * qcow2 naming the image as its backing file, which qemu-img opens too — and reused after. The image is
 * only read; the guest's writes stay in the overlay.
 *
 * Reuse checks the overlay still belongs to the image: it must be qcow2 and name that image as its backing
 * file, and a remote image must be the version the overlay was made over (remote-pin.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { RequestError } from "../engine/errors.js";
import { HttpFile, type HttpFileOptions } from "../io/http-file.js";
import { type HttpObject, isHttpUrl } from "../io/http-object.js";
import { NodeFile } from "../io/node-file.js";
import { type ImageFormat, openImagePath, openLayerFile, probeFileFormat, resolveBackingName } from "./open-path.js";
import { Qcow2Image } from "./qcow2.js";
import { checkPin, writePin } from "./remote-pin.js";

export interface KeptOverlay {
  overlay: string;
  /** True when this call made it. */
  created: boolean;
  /** The image's format and virtual size (the overlay's size). */
  format: ImageFormat;
  size: number;
}

/** The name an overlay stores for `image`: a URL as given, a local path made absolute. */
export function backingNameFor(image: string): string {
  return isHttpUrl(image) ? image : path.resolve(image);
}

/** The format and virtual size of an image (without its backing chain), and its pinned version when remote. */
export function describeImage(image: string, http?: HttpFileOptions): { format: ImageFormat; size: number; object?: HttpObject } {
  const file = openLayerFile(image, { readOnly: true, http });
  try {
    const format = probeFileFormat(file);
    let size = file.size();
    if (format === "qcow2") size = Qcow2Image.open(file, { readOnly: true, noBacking: true }).size;
    return { format, size, object: file instanceof HttpFile ? file.object : undefined };
  } finally {
    file.close();
  }
}

/** Makes `overlay` over `image` unless it exists, and checks an existing one belongs to `image`. */
export function ensureOverlay(image: string, overlay: string, http?: HttpFileOptions): KeptOverlay {
  const wanted = backingNameFor(image);
  if (fs.existsSync(overlay)) {
    const opened = openImagePath(overlay, { readOnly: true, noBacking: true });
    try {
      if (!(opened instanceof Qcow2Image)) throw new RequestError(`the overlay ${overlay} is not a qcow2 image`);
      const info = opened.info();
      const named = info.backingFile === undefined ? undefined : resolveBackingName(overlay, info.backingFile);
      if (named === undefined || backingNameFor(named) !== wanted) {
        throw new RequestError(`the overlay ${overlay} is over ${named ?? "no backing file"}, not ${wanted}: give another overlay file, or remove this one to start afresh`);
      }
      if (isHttpUrl(wanted)) {
        const remote = HttpFile.open(wanted, http);
        try {
          checkPin(overlay, remote.object);
        } finally {
          remote.close();
        }
      }
      return { overlay, created: false, format: (info.backingFormat as ImageFormat | undefined) ?? "raw", size: opened.size };
    } finally {
      opened.close();
    }
  }
  const { format, size } = describeImage(wanted, http);
  // The versions of every remote layer of the chain (its backing first), recorded with the overlay.
  const remotes: HttpObject[] = [];
  if (isHttpUrl(wanted)) openImagePath(wanted, { readOnly: true, http, onRemoteLayer: (o) => remotes.push(o) }).close();
  // Made under a temporary name and renamed: a crash never leaves a half-made overlay to be reused.
  const tmp = `${overlay}.tmp-${process.pid}`;
  const file = NodeFile.open(tmp, { create: true });
  try {
    Qcow2Image.create(file, { size, backingFile: wanted, backingFormat: format });
    file.flush();
  } finally {
    file.close();
  }
  if (remotes.length > 0) writePin(overlay, remotes);
  fs.renameSync(tmp, overlay);
  return { overlay, created: true, format, size };
}
