/**
 * The page's records of which version of a remote image each OPFS overlay was made over (the record and its
 * check: open/pin-record.ts, the same as Node's `<overlay>.remote.json`). Kept in a directory of the origin
 * private file system, out of the image list:
 *
 *   <OPFS root>/refcow-remote-pins/<overlay file name>.json
 *
 * The page writes one when it makes an overlay and drops it with the overlay; the engine's worker reads it
 * before opening the overlay and refuses another version of the backing URL (web-worker.ts). Works in the
 * page and in a worker (asynchronous OPFS calls only).
 */
import { parsePinRecord, type PinRecord, pinRecordText } from "../open/pin-record.js";

export const PIN_DIR = "refcow-remote-pins";

interface Dir {
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<Dir>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<{
    getFile(): Promise<Blob>;
    createWritable(): Promise<{ write(data: string): Promise<void>; close(): Promise<void> }>;
  }>;
  removeEntry(name: string): Promise<void>;
}

async function pinDir(create: boolean): Promise<Dir | undefined> {
  const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<Dir> } } }).navigator?.storage;
  if (typeof storage?.getDirectory !== "function") return undefined;
  try {
    return await (await storage.getDirectory()).getDirectoryHandle(PIN_DIR, { create });
  } catch {
    return undefined;
  }
}

function pinName(overlay: string): string {
  return `${overlay}.json`;
}

/** Records the versions of the remote layers `overlay` is made over (its backing file first). */
export async function writeOverlayPin(overlay: string, layers: PinRecord[]): Promise<void> {
  const dir = await pinDir(true);
  if (!dir) throw new Error("the origin private file system is not available");
  const w = await (await dir.getFileHandle(pinName(overlay), { create: true })).createWritable();
  await w.write(pinRecordText(layers));
  await w.close();
}

/** The records of `overlay` (its backing file first), or undefined when it has none; a damaged one is an error naming it. */
export async function readOverlayPin(overlay: string, forUrl: string): Promise<PinRecord[] | undefined> {
  const dir = await pinDir(false);
  let text: string;
  try {
    text = await (await (await dir!.getFileHandle(pinName(overlay))).getFile()).text();
  } catch {
    return undefined;
  }
  return parsePinRecord(text, `${PIN_DIR}/${pinName(overlay)} (origin private file system)`, forUrl);
}

export async function removeOverlayPin(overlay: string): Promise<void> {
  await (await pinDir(false))?.removeEntry(pinName(overlay)).catch(() => undefined);
}
