/**
 * os.html's comparison mode: the same PC (DiskBootMachine: v86 build, firmware, RAM, screen, serial
 * console) booting a raw disk image that v86 serves with its own buffers instead of refcow, for the boot
 * benchmarks' browser cases (src/bench/*-browser.ts). URL parameters:
 *
 *   v86=file&file=NAME     the raw image NAME in OPFS as a File, v86's AsyncFileBuffer (`async: true`:
 *                          FileReader reads of the slices asked for)
 *   v86=buffer&file=NAME   the same File as v86's SyncFileBuffer (`async: false`: read whole into memory
 *                          before the CPU starts)
 *   v86=xhr&image=URL&size=BYTES[&chunk=BYTES]   v86's AsyncXHRBuffer on the URL (Range requests by
 *                          `fixed_chunk_size`, default 1 MiB); the size given so that v86 asks no HEAD
 *
 * v86 keeps the guest's writes in memory; nothing is written to the file.
 */
import { DiskBootMachine } from "../v86/disk-boot-machine.js";
import { v86OwnDisk, type V86OwnHda } from "../v86/v86-own-disk.js";

export type V86OwnMode = "file" | "buffer" | "xhr";

export interface V86OwnBootOptions {
  mode: V86OwnMode;
  /** OPFS name (file, buffer) or URL (xhr). */
  source: string;
  /** xhr: the image's size and v86's chunk. */
  size?: number;
  chunkBytes?: number;
  memoryMiB: number;
  firmware: { bios: ArrayBuffer; vgaBios: ArrayBuffer };
  wasmUrl: string;
  screen?: HTMLElement;
  onSerial?: (bytes: Uint8Array) => void;
}

export function parseV86OwnMode(value: string | null): V86OwnMode | undefined {
  if (value === null) return undefined;
  if (value === "file" || value === "buffer" || value === "xhr") return value;
  throw new Error(`v86=${value}: the page's v86 modes are file, buffer and xhr`);
}

/** Builds the machine on v86's own buffer; resolves once v86 has loaded (the CPU runs from then on). */
export async function bootV86Own(o: V86OwnBootOptions): Promise<DiskBootMachine> {
  const machine = new DiskBootMachine({
    disk: v86OwnDisk(await ownHda(o)),
    firmware: o.firmware,
    wasmPath: o.wasmUrl,
    memoryMiB: o.memoryMiB,
    onSerial: o.onSerial,
    v86Options: o.screen ? { screen_container: o.screen, disable_keyboard: false } : {},
  });
  await machine.loaded;
  return machine;
}

async function ownHda(o: V86OwnBootOptions): Promise<V86OwnHda> {
  if (o.mode === "xhr") {
    if (!o.size) throw new Error("v86=xhr needs size=BYTES (the image's size)");
    return { url: o.source, async: true, size: o.size, fixed_chunk_size: o.chunkBytes ?? 1 << 20 };
  }
  const dir = await navigator.storage.getDirectory();
  const file = await (await dir.getFileHandle(o.source)).getFile();
  // A File is one of v86's browser buffers, absent from its typings.
  return { buffer: file, async: o.mode === "file" } as unknown as V86OwnHda;
}
