/**
 * SlotChunkCache: a persistent, bounded cache of remote objects' chunks in two files reached by synchronous
 * random access (the browser's OPFS sync access handles, opened by opfs-chunk-cache.ts; any handle with the
 * same methods elsewhere). Every object shares one pool of slots, least recently used reused first.
 *
 * Data file: slot s holds one chunk's payload at s * slotSize (a shorter last chunk leaves its slot's
 * tail unused). Its size is at most slotCount * slotSize: that, plus the index, is the cache's bound.
 *
 * Index file, big-endian:
 *   header, 64 bytes at 0
 *     0   4  magic "RCX1"
 *     4   4  version (1)
 *     8   4  slot size (= the chunk size of every object cached here)
 *    12   4  slot count
 *    16  44  zero
 *    60   4  CRC-32C of bytes 0-59
 *   entry of slot s, 64 bytes at 64 + 64 * s
 *     0   4  state: 1 = holds a chunk; anything else (0 after a reset or eviction) = free
 *     4   4  payload length (1 to slot size)
 *     8   8  object key: CRC-32C, then FNV-1a 32, of the UTF-8 of chunkKeyText(url, validator, chunk size)
 *    16   8  chunk index (float64, an integer)
 *    24   8  last use (float64, a counter: larger is more recent)
 *    32   4  CRC-32C of bytes 8-23 then the payload (so an entry moved or renamed does not match)
 *    36  24  zero
 *    60   4  CRC-32C of bytes 0-59
 * An entry is written only after its payload is written and flushed; a slot about to be reused first has
 * its entry freed and flushed. So a crash leaves either a complete chunk or a free slot; a payload torn
 * anyway (storage that reorders) or changed fails its CRC, an entry torn fails its own, and either reads
 * as absent (and the slot is freed). A header that does not match (another slot size, damage) resets the
 * cache; another slot count keeps the entries that still fit.
 *
 * The 64-bit object key is a hash, not a secret: two cached object versions colliding on it would share
 * chunks, which for URLs not chosen to collide does not happen in practice.
 */
import { IoError } from "./block-file.js";
import { chunkKeyText, type SyncChunkStore } from "./chunk-store.js";
import { crc32c } from "./crc32c.js";
import type { SyncAccessHandle } from "./opfs-file.js";

const MAGIC = 0x52435831; // "RCX1"
const VERSION = 1;
const HEADER = 64;
const ENTRY = 64;
const USED = 1;

/** The default bound: 1 GiB of chunks, as Node's chunk folder (disk-chunk-store.ts). */
export const DEFAULT_SLOT_CACHE_BYTES = 2 ** 30;

export interface SlotChunkCacheOptions {
  /** The chunk size of the objects cached (others are not cached). */
  slotSize: number;
  /** Bytes of chunks kept at most (at least one slot). */
  maxBytes?: number;
}

interface Entry {
  key: string;
  index: number;
  length: number;
  crc: number;
  used: number;
}

export interface SlotChunkCacheStats {
  hits: number;
  /** Entries found damaged (torn or changed payload, wrong length) and dropped. */
  dropped: number;
  puts: number;
  evictions: number;
}

/** The 64-bit object key, as 16 hex digits. */
export function slotObjectKey(url: string, validator: string, chunkSize: number): string {
  const text = new TextEncoder().encode(chunkKeyText(url, validator, chunkSize));
  let fnv = 0x811c9dc5;
  for (const b of text) fnv = Math.imul(fnv ^ b, 0x01000193) >>> 0;
  return hex8(crc32c(text)) + hex8(fnv);
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

export class SlotChunkCache {
  readonly slotSize: number;
  readonly slotCount: number;
  readonly stats: SlotChunkCacheStats = { hits: 0, dropped: 0, puts: 0, evictions: 0 };
  /** Slot → its entry (free slots absent). */
  private readonly slots = new Map<number, Entry>();
  /** "<object key>:<chunk index>" → slot. */
  private readonly where = new Map<string, number>();
  private clock = 0;
  private closed = false;

  constructor(
    private readonly data: SyncAccessHandle,
    private readonly index: SyncAccessHandle,
    opts: SlotChunkCacheOptions,
  ) {
    const { slotSize } = opts;
    if (!Number.isSafeInteger(slotSize) || slotSize < 512 || slotSize > 2 ** 30) throw new RangeError(`invalid slot size ${slotSize}`);
    const maxBytes = opts.maxBytes ?? DEFAULT_SLOT_CACHE_BYTES;
    this.slotSize = slotSize;
    this.slotCount = Math.floor(maxBytes / slotSize);
    if (this.slotCount < 1) throw new RangeError(`a chunk cache of ${maxBytes} bytes holds no ${slotSize}-byte chunk`);
    if (this.slotCount > 2 ** 24) throw new RangeError(`a chunk cache of ${this.slotCount} slots is too large (at most 2^24)`);
    this.load();
  }

  /** The store of one object version (undefined when its chunk size is not this cache's). */
  forObject(url: string, validator: string, chunkSize: number): SyncChunkStore | undefined {
    if (chunkSize !== this.slotSize) return undefined;
    const key = slotObjectKey(url, validator, chunkSize);
    return {
      get: (index, length) => this.get(key, index, length),
      put: (index, data) => this.put(key, index, data),
      has: (index) => this.where.has(`${key}:${index}`),
    };
  }

  /** Bytes of chunks held. */
  bytesHeld(): number {
    let n = 0;
    for (const e of this.slots.values()) n += e.length;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.index.flush();
      this.data.flush();
    } finally {
      this.index.close();
      this.data.close();
    }
  }

  get(key: string, index: number, length: number): Uint8Array | undefined {
    this.checkOpen();
    const slot = this.where.get(`${key}:${index}`);
    if (slot === undefined) return undefined;
    const entry = this.slots.get(slot)!;
    const buf = new Uint8Array(length);
    if (entry.length !== length || readFully(this.data, buf, slot * this.slotSize) !== length || payloadCrc(key, index, buf) !== entry.crc) {
      this.stats.dropped++;
      this.free(slot);
      return undefined;
    }
    this.stats.hits++;
    entry.used = ++this.clock;
    // Recency only: not flushed (a lost update costs an earlier eviction, a torn one a re-fetch).
    this.writeEntry(slot, entry);
    return buf;
  }

  put(key: string, index: number, payload: Uint8Array): void {
    this.checkOpen();
    if (payload.length < 1 || payload.length > this.slotSize) throw new RangeError(`a chunk of ${payload.length} bytes does not fit a ${this.slotSize}-byte slot`);
    const name = `${key}:${index}`;
    const held = this.where.get(name);
    if (held !== undefined) {
      // The same version's chunk: the bytes are the same; only its recency changes.
      const entry = this.slots.get(held)!;
      entry.used = ++this.clock;
      this.writeEntry(held, entry);
      return;
    }
    const slot = this.pickSlot();
    if (this.slots.has(slot)) {
      this.stats.evictions++;
      this.free(slot);
      this.index.flush();
    }
    writeFully(this.data, payload, slot * this.slotSize);
    this.data.flush();
    const entry: Entry = { key, index, length: payload.length, crc: payloadCrc(key, index, payload), used: ++this.clock };
    this.writeEntry(slot, entry);
    this.index.flush();
    this.slots.set(slot, entry);
    this.where.set(name, slot);
    this.stats.puts++;
  }

  /** A free slot, else the least recently used one. */
  private pickSlot(): number {
    if (this.slots.size < this.slotCount) {
      for (let s = 0; s < this.slotCount; s++) if (!this.slots.has(s)) return s;
    }
    let oldest = -1;
    let used = Infinity;
    for (const [s, e] of this.slots) {
      if (e.used < used) {
        used = e.used;
        oldest = s;
      }
    }
    return oldest;
  }

  private free(slot: number): void {
    const entry = this.slots.get(slot);
    if (entry) this.where.delete(`${entry.key}:${entry.index}`);
    this.slots.delete(slot);
    writeFully(this.index, new Uint8Array(ENTRY), HEADER + slot * ENTRY);
  }

  private writeEntry(slot: number, e: Entry): void {
    const bytes = new Uint8Array(ENTRY);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, USED);
    view.setUint32(4, e.length);
    view.setUint32(8, parseInt(e.key.slice(0, 8), 16));
    view.setUint32(12, parseInt(e.key.slice(8), 16));
    view.setFloat64(16, e.index);
    view.setFloat64(24, e.used);
    view.setUint32(32, e.crc);
    view.setUint32(60, crc32c(bytes.subarray(0, 60)));
    writeFully(this.index, bytes, HEADER + slot * ENTRY);
  }

  /** Reads the index (resetting it when its header does not match) and keeps the entries that pass. */
  private load(): void {
    const header = new Uint8Array(HEADER);
    const view = new DataView(header.buffer);
    const haveHeader = readFully(this.index, header, 0) === HEADER && view.getUint32(60) === crc32c(header.subarray(0, 60));
    const usable = haveHeader && view.getUint32(0) === MAGIC && view.getUint32(4) === VERSION && view.getUint32(8) === this.slotSize;
    const keptSlots = usable ? Math.min(view.getUint32(12), this.slotCount) : 0;
    if (!usable || view.getUint32(12) !== this.slotCount) {
      // Entries beyond the slots kept go first, then the header names the new count.
      this.index.truncate(HEADER + keptSlots * ENTRY);
      this.index.truncate(HEADER + this.slotCount * ENTRY);
      header.fill(0);
      view.setUint32(0, MAGIC);
      view.setUint32(4, VERSION);
      view.setUint32(8, this.slotSize);
      view.setUint32(12, this.slotCount);
      view.setUint32(60, crc32c(header.subarray(0, 60)));
      writeFully(this.index, header, 0);
      this.index.flush();
      if (this.data.getSize() > this.slotCount * this.slotSize) this.data.truncate(this.slotCount * this.slotSize);
    }
    const entries = new Uint8Array(keptSlots * ENTRY);
    readFully(this.index, entries, HEADER);
    const ev = new DataView(entries.buffer);
    // Slots whose entry is not kept but not blank either: blanked, so that no stale entry ever names a slot
    // whose payload is being rewritten.
    const stale: number[] = [];
    for (let s = 0; s < keptSlots; s++) {
      const at = s * ENTRY;
      if (ev.getUint32(at) !== USED) {
        if (entries.subarray(at, at + ENTRY).some((b) => b !== 0)) stale.push(s);
        continue;
      }
      const length = ev.getUint32(at + 4);
      const index = ev.getFloat64(at + 16);
      const used = ev.getFloat64(at + 24);
      const valid =
        ev.getUint32(at + 60) === crc32c(entries.subarray(at, at + 60)) &&
        length >= 1 &&
        length <= this.slotSize &&
        Number.isSafeInteger(index) &&
        index >= 0 &&
        Number.isFinite(used);
      if (!valid) {
        this.stats.dropped++;
        stale.push(s);
        continue;
      }
      const entry: Entry = { key: hex8(ev.getUint32(at + 8)) + hex8(ev.getUint32(at + 12)), index, length, crc: ev.getUint32(at + 32), used };
      const name = `${entry.key}:${index}`;
      const other = this.where.get(name);
      if (other !== undefined && this.slots.get(other)!.used >= used) {
        stale.push(s);
        continue;
      }
      if (other !== undefined) {
        this.slots.delete(other);
        stale.push(other);
      }
      this.slots.set(s, entry);
      this.where.set(name, s);
      this.clock = Math.max(this.clock, used);
    }
    for (const s of stale) writeFully(this.index, new Uint8Array(ENTRY), HEADER + s * ENTRY);
    if (stale.length > 0) this.index.flush();
  }

  private checkOpen(): void {
    if (this.closed) throw new IoError("the chunk cache is closed", "EBADF");
  }
}

/** The entry's payload checksum: over the object key and chunk index (as in the entry), then the payload. */
function payloadCrc(key: string, index: number, payload: Uint8Array): number {
  const identity = new DataView(new ArrayBuffer(16));
  identity.setUint32(0, parseInt(key.slice(0, 8), 16));
  identity.setUint32(4, parseInt(key.slice(8), 16));
  identity.setFloat64(8, index);
  return crc32c(payload, crc32c(new Uint8Array(identity.buffer)));
}

/** Reads until `buf` is full or the file ends; returns the bytes read. */
function readFully(h: SyncAccessHandle, buf: Uint8Array, at: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = h.read(buf.subarray(done), { at: at + done });
    if (n <= 0) break;
    done += n;
  }
  return done;
}

function writeFully(h: SyncAccessHandle, data: Uint8Array, at: number): void {
  let done = 0;
  while (done < data.length) {
    const n = h.write(data.subarray(done), { at: at + done });
    if (n <= 0) throw new IoError(`chunk cache: a write at ${at + done} made no progress`, "EIO");
    done += n;
  }
}
