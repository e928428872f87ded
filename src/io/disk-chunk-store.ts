/**
 * A persistent chunk store in a folder (Node): the chunks of remote objects, kept across runs, bounded,
 * least recently used evicted first.
 *
 * Layout:
 *   <cacheDir>/<key>/<index>.chunk        one chunk of one object version
 *   <cacheDir>/<key>/<index>.chunk.tmp-*  a chunk being written (never read; removed when stale)
 * where <key> is the first 40 hex digits of SHA-256("<url>\n<validator>\n<chunkSize>") (chunk-store.ts): another version of
 * the object (a new ETag, Last-Modified or size) has another key, so it never meets the old chunks.
 *
 * A chunk file, byte by byte (big-endian):
 *   0   4   magic "RCC1"
 *   4   4   payload length
 *   8   32  SHA-256 of the payload
 *   40  …   payload
 * It is written to a temporary name and renamed into place, so a crash leaves either no chunk or a whole
 * one; the checksum also catches a chunk torn by the storage itself (a power cut before the data reached
 * the disk). A chunk that fails either check reads as absent and is deleted.
 *
 * Recency is the file's mtime (set on every hit). When the folder grows past `maxBytes` it is scanned and
 * the oldest chunks (of any object) deleted until it holds at most 90% of the bound.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { chunkKeyText, type ChunkStore } from "./chunk-store.js";

const MAGIC = 0x52434331; // "RCC1"
const HEADER = 40;
/** Temporary files older than this are left over from a killed writer. */
const STALE_TMP_MS = 60_000;

export const DEFAULT_CACHE_BYTES = 2 ** 30;

/**
 * `$REFCOW_HTTP_CACHE` (the CLI's --cache-dir sets it, so worker threads and child processes see it too;
 * "off": no persistent cache), else `$XDG_CACHE_HOME/refcow/http`, else `~/.cache/refcow/http`.
 */
export function defaultCacheDir(): string | undefined {
  const chosen = process.env.REFCOW_HTTP_CACHE;
  if (chosen === "off") return undefined;
  if (chosen) return path.resolve(chosen);
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".cache"), "refcow", "http");
}

export function chunkStoreKey(url: string, validator: string, chunkSize: number): string {
  return createHash("sha256").update(chunkKeyText(url, validator, chunkSize)).digest("hex").slice(0, 40);
}

/** Encodes a chunk file (header + payload). */
export function encodeChunkFile(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC);
  view.setUint32(4, data.length);
  out.set(createHash("sha256").update(data).digest(), 8);
  out.set(data, HEADER);
  return out;
}

/** The payload of a chunk file, or undefined when it is not a whole, intact chunk of `length` bytes. */
export function decodeChunkFile(file: Uint8Array, length: number): Uint8Array | undefined {
  if (file.length !== HEADER + length) return undefined;
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (view.getUint32(0) !== MAGIC || view.getUint32(4) !== length) return undefined;
  const payload = file.subarray(HEADER);
  const sum = createHash("sha256").update(payload).digest();
  for (let i = 0; i < 32; i++) if (sum[i] !== file[8 + i]) return undefined;
  return payload;
}

export class DiskChunkStore implements ChunkStore {
  private readonly dir: string;
  private total: number | undefined;
  private evicting: Promise<void> | undefined;

  constructor(
    private readonly root: string,
    key: string,
    private readonly maxBytes = DEFAULT_CACHE_BYTES,
  ) {
    this.dir = path.join(root, key);
  }

  async get(index: number, length: number): Promise<Uint8Array | undefined> {
    const file = this.chunkPath(index);
    let bytes: Uint8Array;
    try {
      bytes = await fsp.readFile(file);
    } catch {
      return undefined;
    }
    const payload = decodeChunkFile(bytes, length);
    if (!payload) {
      await fsp.rm(file, { force: true }).catch(() => undefined);
      return undefined;
    }
    const now = new Date();
    await fsp.utimes(file, now, now).catch(() => undefined);
    return payload;
  }

  async put(index: number, data: Uint8Array): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    const file = this.chunkPath(index);
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    const encoded = encodeChunkFile(data);
    try {
      await fsp.writeFile(tmp, encoded);
      await fsp.rename(tmp, file);
    } catch (e) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    this.total = (this.total ?? (await this.usage())) + encoded.length;
    if (this.total > this.maxBytes) {
      this.evicting ??= this.evict().finally(() => (this.evicting = undefined));
      await this.evicting;
    }
  }

  private chunkPath(index: number): string {
    return path.join(this.dir, `${index}.chunk`);
  }

  /** Every chunk file under the root with its size and last use; stale temporary files are removed. */
  private async scan(): Promise<{ file: string; size: number; used: number }[]> {
    const out: { file: string; size: number; used: number }[] = [];
    let keys: string[];
    try {
      keys = await fsp.readdir(this.root);
    } catch {
      return out;
    }
    const now = Date.now();
    for (const key of keys) {
      let names: string[];
      try {
        names = await fsp.readdir(path.join(this.root, key));
      } catch {
        continue;
      }
      for (const name of names) {
        const file = path.join(this.root, key, name);
        const st = await fsp.stat(file).catch(() => undefined);
        if (!st) continue;
        if (name.includes(".tmp-")) {
          if (now - st.mtimeMs > STALE_TMP_MS) await fsp.rm(file, { force: true }).catch(() => undefined);
        } else if (name.endsWith(".chunk")) out.push({ file, size: st.size, used: st.mtimeMs });
      }
    }
    return out;
  }

  private async usage(): Promise<number> {
    return (await this.scan()).reduce((n, f) => n + f.size, 0);
  }

  private async evict(): Promise<void> {
    const files = (await this.scan()).sort((a, b) => a.used - b.used);
    let total = files.reduce((n, f) => n + f.size, 0);
    for (const f of files) {
      if (total <= this.maxBytes * 0.9) break;
      await fsp.rm(f.file, { force: true }).catch(() => undefined);
      total -= f.size;
    }
    this.total = total;
  }
}
