/**
 * The virtual size and cluster size of a qcow2 image file, read from its header without opening the image
 * (no lock, no worker): what `refcow boot` and the guest sessions need before they serve it.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { parseHeader, QCOW_MAGIC } from "../format/header.js";
import { SCHEME_CATALOG } from "../schemes/index.js";

/**
 * Cluster size and virtual size of an existing qcow2 image (a clear error for anything else). `why`, when
 * given, is added to the error for a file that is not qcow2 at all.
 */
export function probeQcow2(file: string, why?: string): { clusterSize: number; size: number } {
  const fd = openSync(file, "r");
  try {
    const fileSize = fstatSync(fd).size;
    const first = Buffer.alloc(Math.min(512, fileSize));
    readSync(fd, first, 0, first.length, 0);
    if (first.length < 72 || first.readUInt32BE(0) !== QCOW_MAGIC) throw new Error(`'${file}' is not a qcow2 image${why ? ` (${why})` : ""}`);
    const bits = first.readUInt32BE(20);
    let buf: Uint8Array = first;
    if (bits >= 9 && bits <= 21) {
      buf = Buffer.alloc(Math.min(2 ** bits, fileSize));
      readSync(fd, buf, 0, buf.length, 0);
    }
    const h = parseHeader(buf, fileSize, SCHEME_CATALOG.knownIncompatible);
    return { clusterSize: 2 ** h.clusterBits, size: h.size };
  } finally {
    closeSync(fd);
  }
}
