/**
 * Bringing a disk image into the origin private file system, a chunk at a time (never whole in memory; any
 * size — offsets are plain numbers, exact to 2^53):
 *
 *  - a qcow2 image (starts with "QFI\xfb") is copied byte for byte (the engine checks it when it opens);
 *  - anything else is taken as a raw disk and written through the engine into a new qcow2 image of the same
 *    virtual size, as `qemu-img convert -O qcow2` does: blocks of zeroes are skipped, so the image holds only
 *    the data. The page's machine then has snapshots (savevm needs qcow2) and the download is qcow2.
 *
 * Images of other formats QEMU knows are refused by their magic rather than booted as garbage.
 */
import type { WebImageHost } from "../worker/web-host.js";
import { removeFile, writeStream } from "./opfs-store.js";

/** Formats refused by their first bytes (QEMU's probes): name, magic. */
const OTHER_FORMATS: Array<[string, string]> = [
  ["VMDK", "KDMV"],
  ["VDI", "<<< "],
  ["VHDX", "vhdxfile"],
  ["VHD", "conectix"],
  ["QED", "QED\0"],
];

/** Raw import: the engine gets the data in requests of up to this size. */
const BLOCK = 1 << 20;
/** A run of zeroes this long (aligned) is not written. */
const ZERO_GRAIN = 64 * 1024;
/** Writes in flight during a raw import. */
const IN_FLIGHT = 8;

export type ImportedFormat = "qcow2" | "raw";

export interface ImportProgress {
  /** Bytes of the source read so far. */
  done: number;
  total: number;
}

export async function sniffFormat(source: Blob): Promise<ImportedFormat> {
  const head = new Uint8Array(await source.slice(0, 8).arrayBuffer());
  if (head.length >= 4 && head[0] === 0x51 && head[1] === 0x46 && head[2] === 0x49 && head[3] === 0xfb) return "qcow2";
  const text = String.fromCharCode(...head);
  for (const [name, magic] of OTHER_FORMATS) {
    if (text.startsWith(magic)) throw new Error(`this is a ${name} image: convert it to qcow2 or raw first (qemu-img convert -O qcow2)`);
  }
  return "raw";
}

/** Writes `source` into OPFS as qcow2 image `name` (replacing it); returns the format it came in. */
export async function importImage(host: WebImageHost, source: Blob, name: string, onProgress?: (p: ImportProgress) => void): Promise<ImportedFormat> {
  const format = await sniffFormat(source);
  const total = source.size;
  if (format === "qcow2") {
    await writeStream(name, source.stream(), (done) => onProgress?.({ done, total }));
    return format;
  }
  if (total === 0 || total % 512 !== 0) throw new Error(`a raw disk must be whole 512-byte sectors; this file is ${total} bytes`);
  await host.create(name, { size: total });
  try {
    await importRaw(host, source, name, onProgress);
  } catch (e) {
    await removeFile(name).catch(() => undefined);
    throw e;
  }
  return format;
}

async function importRaw(host: WebImageHost, source: Blob, name: string, onProgress?: (p: ImportProgress) => void): Promise<void> {
  const total = source.size;
  // unsafe: no flush per write; the one flush at the end and the clean close make it durable.
  const client = await host.open(name, { scheme: "eager", cache: "unsafe" });
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  const submit = (offset: number, data: Uint8Array) => {
    // The client copies `data` before write() returns: the block buffer is reused at once.
    const p: Promise<void> = client.write(offset, data).then(
      () => void inFlight.delete(p),
      (e: unknown) => {
        inFlight.delete(p);
        failure ??= e;
      },
    );
    inFlight.add(p);
  };
  try {
    const block = new Uint8Array(BLOCK);
    let fill = 0;
    let blockStart = 0;
    const writeBlock = async (length: number) => {
      for (let at = 0; at < length; ) {
        // A run of grains holding data is one write; zero grains are left unallocated.
        while (at < length && isZero(block, at, Math.min(ZERO_GRAIN, length - at))) at += ZERO_GRAIN;
        let end = at;
        while (end < length && !isZero(block, end, Math.min(ZERO_GRAIN, length - end))) end += ZERO_GRAIN;
        end = Math.min(end, length);
        if (end > at) submit(blockStart + at, block.subarray(at, end));
        at = end;
      }
      while (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
      if (failure) throw failure;
      blockStart += length;
      onProgress?.({ done: blockStart, total });
    };
    const reader = source.stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (let used = 0; used < value.length; ) {
        const n = Math.min(value.length - used, BLOCK - fill);
        block.set(value.subarray(used, used + n), fill);
        fill += n;
        used += n;
        if (fill === BLOCK) {
          await writeBlock(fill);
          fill = 0;
        }
      }
    }
    if (fill > 0) await writeBlock(fill);
    await Promise.all(inFlight);
    if (failure) throw failure;
    if (blockStart !== total) throw new Error(`read ${blockStart} bytes of a ${total}-byte file`);
    await client.flush();
  } finally {
    await Promise.all(inFlight);
    await client.close();
  }
}

/** True when `length` bytes of `buf` from `at` are all zero. */
function isZero(buf: Uint8Array, at: number, length: number): boolean {
  let i = at;
  const end = at + length;
  // Word at a time where aligned (the block buffer's grains are).
  if (i % 4 === 0) {
    const words = new Uint32Array(buf.buffer, buf.byteOffset + i, Math.floor(length / 4));
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i += words.length * 4;
  }
  for (; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}
