/**
 * The version of a remote backing file an overlay was made over, kept beside the overlay so that a changed
 * object is refused instead of read under writes made against its old bytes. The record and its check are
 * pin-record.ts's (the page keeps the same record in OPFS).
 *
 * `<overlay>.remote.json`: written when refcow makes the overlay (boot --overlay, openV86Disk's overlay);
 * checked whenever refcow opens that overlay's backing file by URL. An overlay without one (made by
 * qemu-img, say) is not checked.
 */
import * as fs from "node:fs";
import type { HttpObject } from "../io/http-object.js";
import { RequestError } from "../engine/errors.js";
import { parsePinRecord, pinRecordText, pinRefusal } from "./pin-record.js";

export function pinPath(overlay: string): string {
  return `${overlay}.remote.json`;
}

/** Records the versions of the remote layers `overlay` is made over: its backing file first, then deeper ones. */
export function writePin(overlay: string, objects: HttpObject[]): void {
  fs.writeFileSync(pinPath(overlay), pinRecordText(objects));
}

/** Refuses `object` (a remote layer under `overlay`) when it is not the version the overlay was made over. */
export function checkPin(overlay: string, object: HttpObject): void {
  let text: string;
  try {
    text = fs.readFileSync(pinPath(overlay), "utf8");
  } catch {
    return;
  }
  const refusal = pinRefusal(parsePinRecord(text, pinPath(overlay), object.url), object, overlay);
  if (refusal) throw new RequestError(refusal);
}
