/**
 * `qemu-img check` output (qemu-img.c dump_human_image_check, dump_json_image_check, img_check; QEMU 7.2)
 * and its exit codes: 0 clean, 1 check not completed, 2 corruptions, 3 leaks only, 63 no check for this
 * format. The JSON is the QAPI ImageCheck struct; optional counters are omitted when zero.
 */
import { fixed } from "./printf.js";
import { QDict, toJson } from "./qobject.js";

export interface ImageCheckData {
  filename: string;
  format: string;
  checkErrors: number;
  imageEndOffset: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
}

export const CHECK_EXIT = { clean: 0, failed: 1, corruptions: 2, leaks: 3, unsupported: 63 } as const;

export function checkHuman(c: ImageCheckData): string {
  let out = "";
  if (!(c.corruptions || c.leaks || c.checkErrors)) {
    out += "No errors were found on the image.\n";
  } else {
    if (c.corruptions) {
      out += `\n${c.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (c.leaks) {
      out += `\n${c.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (c.checkErrors) {
      out += `\n${c.checkErrors} internal errors have occurred during the check.\n`;
    }
  }
  if (c.totalClusters !== 0 && c.allocatedClusters !== 0) {
    out +=
      `${c.allocatedClusters}/${c.totalClusters} = ${fixed((c.allocatedClusters * 100.0) / c.totalClusters, 2)}% allocated, ` +
      `${fixed((c.fragmentedClusters * 100.0) / c.allocatedClusters, 2)}% fragmented, ` +
      `${fixed((c.compressedClusters * 100.0) / c.allocatedClusters, 2)}% compressed clusters\n`;
  }
  if (c.imageEndOffset) out += `Image end offset: ${c.imageEndOffset}\n`;
  return out;
}

export function checkToQDict(c: ImageCheckData): QDict {
  const nz = (n: number): number | undefined => (n !== 0 ? n : undefined);
  return new QDict()
    .put("filename", c.filename)
    .put("format", c.format)
    .put("check-errors", c.checkErrors)
    .putOptional("image-end-offset", nz(c.imageEndOffset))
    .putOptional("corruptions", nz(c.corruptions))
    .putOptional("leaks", nz(c.leaks))
    .putOptional("corruptions-fixed", nz(c.corruptionsFixed))
    .putOptional("leaks-fixed", nz(c.leaksFixed))
    .putOptional("total-clusters", nz(c.totalClusters))
    .putOptional("allocated-clusters", nz(c.allocatedClusters))
    .putOptional("fragmented-clusters", nz(c.fragmentedClusters))
    .putOptional("compressed-clusters", nz(c.compressedClusters));
}

export function checkJson(c: ImageCheckData): string {
  return `${toJson(checkToQDict(c))}\n`;
}

/** Printed (human output only) when a repair fixed something, before the second check. */
export function repairBanner(leaksFixed: number, corruptionsFixed: number): string {
  return (
    "The following inconsistencies were found and repaired:\n\n" +
    `    ${leaksFixed} leaked clusters\n` +
    `    ${corruptionsFixed} corruptions\n\n` +
    "Double checking the fixed image now...\n"
  );
}

/** The exit code for a completed check (img_check: check errors, then corruptions, then leaks). */
export function checkExitCode(c: ImageCheckData): number {
  if (c.checkErrors) return CHECK_EXIT.failed;
  if (c.corruptions) return CHECK_EXIT.corruptions;
  if (c.leaks) return CHECK_EXIT.leaks;
  return CHECK_EXIT.clean;
}
