/**
 * Persistent dirty bitmaps (QEMU's, format in src/format/bitmaps.ts): the state an open image keeps of them.
 *
 * Life of a bitmap, as QEMU 7.2 keeps them:
 *  - open: the header extension is trusted only with autoclear bit 0 set (a writer that did not know bitmaps
 *    cleared it; a writable open then drops the extension, whose clusters leak). The directory and the tables
 *    of consistent bitmaps are validated; a read-only open only reads them.
 *  - a writable open (not one for check or compaction) marks every consistent bitmap in-use on disk before any
 *    guest write, as QEMU does: autoclear bit cleared (header synced), directory rewritten in place, bit set
 *    again. From then on every guest write, write-zeroes and discard sets the bits it covers in each enabled
 *    (auto) bitmap, in memory. A process that dies leaves them in-use: inconsistent, kept, only removable.
 *  - a clean close stores them: data clusters and tables allocated through the scheme (like any metadata),
 *    a new directory, refcounts and all of it durable, then the header switches to it (bit 0 set, in-use
 *    clear), then the old directory and the replaced tables and data clusters are freed.
 * Bitmaps found in-use (inconsistent) are kept as they are on disk, their table untouched, until removed.
 */
import { ImageFormatError, RequestError } from "../../format/errors.js";
import { AUTOCLEAR_BITMAPS } from "../../format/features.js";
import { EXT_BITMAPS } from "../../format/header.js";
import {
  BITMAP_AUTO,
  BITMAP_IN_USE,
  BITMAP_TYPE_DIRTY_TRACKING,
  bitmapDataBytes,
  type BitmapDirectoryEntry,
  bitmapTableEntries,
  type BitmapTableEntry,
  checkBitmapName,
  directoryEntryBytes,
  MAX_BITMAP_DATA_BYTES,
  MAX_BITMAP_DIRECTORY_BYTES,
  MAX_BITMAP_TABLE_ENTRIES,
  MAX_BITMAPS,
  MAX_GRANULARITY_BITS,
  parseBitmapDirectory,
  parseBitmapsExtension,
  parseBitmapTable,
  serializeBitmapDirectory,
  serializeBitmapsExtension,
  serializeBitmapTable,
} from "../../format/bitmaps.js";
import type { ImageState } from "../image-state.js";
import type { BitmapInfo } from "../types.js";

/** One bitmap as this open knows it. */
interface Bitmap {
  name: string;
  granularityBits: number;
  /** The auto flag: records guest writes. */
  enabled: boolean;
  /** Found in-use at open: its contents are unusable; kept as it is on disk until removed. */
  inconsistent: boolean;
  /** Its table on disk (size 0: none yet, a bitmap added by this open). */
  tableOffset: number;
  tableSize: number;
  /** Bit n: disk bytes [n << granularityBits, (n + 1) << granularityBits). Loaded on first use. */
  bits: Uint8Array | null;
  /** Differs from what its table on disk holds (contents or size): rewritten at close. */
  changed: boolean;
}

/** One directory entry as the header's directory holds it (what info shows). */
export interface StoredBitmap {
  name: string;
  granularity: number;
  inUse: boolean;
  auto: boolean;
}

/** QEMU's wording for a bitmap that was not saved cleanly. */
function inconsistentError(name: string): RequestError {
  return new RequestError(`Bitmap '${name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk`);
}

export class PersistentBitmaps {
  private list: Bitmap[] = [];
  /** Enabled, consistent bitmaps while tracking: the ones a guest write sets bits in. */
  private recording: Bitmap[] = [];
  /** The directory as it is on disk (what info reports). */
  private stored: StoredBitmap[] = [];
  /** This open marked the bitmaps in-use and stores them at close. */
  private tracking = false;
  /** Where the trusted directory lies (the overlap checks guard it), or undefined. */
  directory: { offset: number; bytes: number } | undefined;

  constructor(private readonly img: ImageState) {}

  // ------------------------------------------------------------------------------------------------- open

  /** The bitmaps extension in the header, whether trusted or not. */
  private extension(): Uint8Array | undefined {
    return this.img.header.extensions.find((e) => e.type === EXT_BITMAPS)?.data;
  }

  /** Whether the header's bitmaps extension is to be trusted (v3, autoclear bit 0 set). */
  private consistentExtension(): boolean {
    const h = this.img.header;
    return h.version === 3 && (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && this.extension() !== undefined;
  }

  /**
   * Makes the header say what a writer that keeps bitmaps must (before a writable open writes anything): an
   * extension without bit 0 is dropped (its clusters leak, as in QEMU), bit 0 without an extension is
   * cleared. Returns whether the header changed.
   */
  normalizeHeader(): boolean {
    const h = this.img.header;
    const ext = this.extension();
    const bit = (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;
    if (ext && (!bit || h.version !== 3)) {
      h.extensions = h.extensions.filter((e) => e.type !== EXT_BITMAPS);
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
      this.directory = undefined;
      return true;
    }
    if (!ext && bit) {
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
      return true;
    }
    return false;
  }

  /** Reads and validates the directory (and the tables of consistent bitmaps); throws ImageFormatError. */
  load(): void {
    this.list = [];
    this.stored = [];
    this.directory = undefined;
    if (!this.consistentExtension()) return;
    const ext = parseBitmapsExtension(this.extension()!, this.img.clusterSize);
    this.directory = { offset: ext.directoryOffset, bytes: ext.directorySize };
    const fileSize = this.img.file.size();
    for (const e of this.readDirectory(fileSize)) {
      if (e.extraData.length) throw new ImageFormatError(`bitmap '${e.name}' has extra data, which is not supported`);
      const inUse = (e.flags & BITMAP_IN_USE) !== 0;
      const bm: Bitmap = {
        name: e.name,
        granularityBits: e.granularityBits,
        enabled: (e.flags & BITMAP_AUTO) !== 0,
        inconsistent: inUse,
        tableOffset: e.tableOffset,
        tableSize: e.tableSize,
        bits: null,
        changed: false,
      };
      this.checkInFile(e.tableOffset, e.tableSize * 8, fileSize, `bitmap '${e.name}' table`);
      if (!inUse) for (const t of this.readTable(bm)) if (t.offset) this.checkInFile(t.offset, this.img.clusterSize, fileSize, `bitmap '${e.name}' data cluster`);
      this.list.push(bm);
    }
    this.stored = this.list.map((b) => ({ name: b.name, granularity: 2 ** b.granularityBits, inUse: b.inconsistent, auto: b.enabled }));
  }

  private readDirectory(fileSize: number): BitmapDirectoryEntry[] {
    const img = this.img;
    const ext = parseBitmapsExtension(this.extension()!, img.clusterSize);
    this.checkInFile(ext.directoryOffset, ext.directorySize, fileSize, "bitmap directory");
    const buf = new Uint8Array(ext.directorySize);
    img.file.read(buf, ext.directoryOffset, "bitmap");
    return parseBitmapDirectory(buf, ext.count, { clusterSize: img.clusterSize, diskSize: img.size });
  }

  private checkInFile(offset: number, bytes: number, fileSize: number, what: string): void {
    if (offset + bytes > fileSize) throw new ImageFormatError(`${what} (offset 0x${offset.toString(16)}, ${bytes} bytes) lies past the end of the image (${fileSize} bytes)`);
  }

  private readTable(bm: { name: string; tableOffset: number; tableSize: number }): BitmapTableEntry[] {
    const buf = new Uint8Array(bm.tableSize * 8);
    this.img.file.read(buf, bm.tableOffset, "bitmap");
    return parseBitmapTable(buf, this.img.clusterSize, `bitmap '${bm.name}' table`);
  }

  /**
   * A writable open: marks each consistent bitmap in-use on disk (QEMU's in-place update: bit 0 cleared while
   * the directory is rewritten where it is, then set again), loads them, and records guest writes from now on.
   */
  startTracking(): void {
    const img = this.img;
    for (const bm of this.list) if (!bm.inconsistent) this.bitsOf(bm);
    if (this.list.some((b) => !b.inconsistent)) {
      const h = img.header;
      const ext = parseBitmapsExtension(this.extension()!, img.clusterSize);
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
      img.writeHeader();
      const dir = serializeBitmapDirectory(this.list.map((b) => this.entryOf(b, true)));
      if (dir.length !== ext.directorySize) throw new ImageFormatError("internal: bitmap directory changed size while marked in-use");
      img.file.write(dir, ext.directoryOffset, "bitmap");
      img.sync("bitmap");
      h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
      img.writeHeader();
      for (const s of this.stored) s.inUse = true;
    }
    this.tracking = true;
    this.refreshRecording();
  }

  private entryOf(bm: Bitmap, inUse: boolean): BitmapDirectoryEntry {
    return {
      tableOffset: bm.tableOffset,
      tableSize: bm.tableSize,
      flags: (inUse || bm.inconsistent ? BITMAP_IN_USE : 0) | (bm.enabled ? BITMAP_AUTO : 0),
      type: BITMAP_TYPE_DIRTY_TRACKING,
      granularityBits: bm.granularityBits,
      name: bm.name,
      extraData: new Uint8Array(0),
    };
  }

  /** A consistent bitmap's bits, read from its table on first use. */
  private bitsOf(bm: Bitmap): Uint8Array {
    if (bm.inconsistent) throw inconsistentError(bm.name);
    if (bm.bits) return bm.bits;
    const cs = this.img.clusterSize;
    const bytes = bitmapDataBytes(this.img.size, 2 ** bm.granularityBits);
    const bits = new Uint8Array(bytes);
    if (bm.tableSize) {
      const table = this.readTable(bm);
      table.forEach((t, i) => {
        const start = i * cs;
        const n = Math.min(cs, bytes - start);
        if (n <= 0) return;
        if (t.offset) {
          const buf = new Uint8Array(cs);
          this.img.file.read(buf, t.offset, "bitmap");
          bits.set(buf.subarray(0, n), start);
        } else if (t.allOnes) {
          bits.fill(0xff, start, start + n);
        }
      });
      clearTail(bits, Math.ceil(this.img.size / 2 ** bm.granularityBits));
    }
    bm.bits = bits;
    return bits;
  }

  private refreshRecording(): void {
    this.recording = this.tracking ? this.list.filter((b) => b.enabled && !b.inconsistent) : [];
  }

  // ------------------------------------------------------------------------------------------- guest writes

  /** A guest write, write-zeroes or discard of [offset, offset + length): every enabled bitmap records it. */
  record(offset: number, length: number): void {
    const list = this.recording;
    if (list.length === 0 || length <= 0) return;
    for (const bm of list) {
      const g = bm.granularityBits;
      const bits = bm.bits!;
      const first = Math.floor(offset / 2 ** g);
      const last = Math.floor((offset + length - 1) / 2 ** g);
      for (let n = first; n <= last; n++) {
        const byte = n >>> 3;
        const mask = 1 << (n & 7);
        if (!(bits[byte] & mask)) {
          bits[byte] |= mask;
          bm.changed = true;
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------- the API

  get count(): number {
    return this.list.length;
  }

  /** The directory as it is on disk. */
  storedList(): StoredBitmap[] {
    return this.stored.map((s) => ({ ...s }));
  }

  infos(): BitmapInfo[] {
    return this.list.map((b) => ({ name: b.name, granularity: 2 ** b.granularityBits, enabled: b.enabled, inUse: b.inconsistent }));
  }

  private find(name: string): Bitmap {
    const bm = this.list.find((b) => b.name === name);
    if (!bm) throw new RequestError(`Dirty bitmap '${name}' not found`);
    return bm;
  }

  private checkTracking(): void {
    if (!this.tracking) throw new RequestError("image is opened read-only");
  }

  /** QEMU's default: the cluster size, between 4 KiB and 64 KiB. */
  defaultGranularity(): number {
    return Math.min(65536, Math.max(4096, this.img.clusterSize));
  }

  add(name: string, opts: { granularity?: number; disabled?: boolean } = {}): void {
    this.checkTracking();
    const g = opts.granularity ?? this.defaultGranularity();
    if (this.list.some((b) => b.name === name)) throw new RequestError(`Bitmap already exists: ${name}`);
    if (!Number.isSafeInteger(g) || g < 512 || g >= 2 ** 32 || (g & (g - 1)) !== 0) throw new RequestError("Granularity must be power of 2 and at least 512");
    const cannot = (why: string) => new RequestError(`Can't make bitmap '${name}' persistent: ${why}`);
    if (this.img.header.version !== 3) throw cannot("Cannot store dirty bitmaps in qcow2 v2 files");
    const bits = Math.log2(g);
    if (bits > MAX_GRANULARITY_BITS) throw cannot(`Granularity exceeds maximum (${2 ** MAX_GRANULARITY_BITS} bytes)`);
    const bytes = bitmapDataBytes(this.img.size, g);
    if (bytes > MAX_BITMAP_DATA_BYTES || bytes > MAX_BITMAP_TABLE_ENTRIES * this.img.clusterSize) throw cannot("Too much space will be occupied by the bitmap. Use larger granularity");
    try {
      checkBitmapName(name);
    } catch (e) {
      throw cannot((e as Error).message);
    }
    if (this.list.length + 1 > MAX_BITMAPS) throw cannot("Maximum number of persistent bitmaps is already reached");
    const dirBytes = this.list.reduce((n, b) => n + directoryEntryBytes(b.name), directoryEntryBytes(name));
    if (dirBytes > MAX_BITMAP_DIRECTORY_BYTES) throw cannot("Not enough space in the bitmap directory");
    this.list.push({ name, granularityBits: bits, enabled: !opts.disabled, inconsistent: false, tableOffset: 0, tableSize: 0, bits: new Uint8Array(bytes), changed: true });
    this.refreshRecording();
  }

  remove(name: string): void {
    this.checkTracking();
    const bm = this.find(name);
    this.list = this.list.filter((b) => b !== bm);
    this.refreshRecording();
  }

  clear(name: string): void {
    this.checkTracking();
    const bm = this.find(name);
    const bits = this.bitsOf(bm);
    if (bits.some((b) => b !== 0)) {
      bits.fill(0);
      bm.changed = true;
    }
  }

  setEnabled(name: string, enabled: boolean): void {
    this.checkTracking();
    const bm = this.find(name);
    if (bm.inconsistent) throw inconsistentError(name);
    bm.enabled = enabled;
    this.refreshRecording();
  }

  /** Sets in `target` every bit dirty in `source` (of this image or of `from`, of the same disk size). */
  merge(target: string, source: string, from?: PersistentBitmaps): void {
    this.checkTracking();
    const dst = this.find(target);
    const srcSet = from ?? this;
    const src = srcSet.find(source);
    const dstBits = this.bitsOf(dst);
    const srcBits = srcSet.bitsOf(src);
    if (srcSet.img.size !== this.img.size) throw new RequestError("Bitmaps are incompatible and can't be merged");
    for (const run of srcSet.runs(src, srcBits, 0, srcSet.img.size)) {
      if (run.dirty) this.markRange(dst, dstBits, run.offset, run.length);
    }
  }

  private markRange(bm: Bitmap, bits: Uint8Array, offset: number, length: number): void {
    const g = 2 ** bm.granularityBits;
    for (let n = Math.floor(offset / g); n <= Math.floor((offset + length - 1) / g); n++) {
      const mask = 1 << (n & 7);
      if (!(bits[n >>> 3] & mask)) {
        bits[n >>> 3] |= mask;
        bm.changed = true;
      }
    }
  }

  /** Runs covering [offset, offset + length) exactly, adjacent equal runs merged; dirty per granularity chunk. */
  extents(name: string, offset: number, length: number): { length: number; dirty: boolean }[] {
    const bm = this.find(name);
    const bits = this.bitsOf(bm);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.img.size) {
      throw new RequestError(`invalid range: offset ${offset}, length ${length} (disk size ${this.img.size})`);
    }
    return this.runs(bm, bits, offset, length).map(({ length: l, dirty }) => ({ length: l, dirty }));
  }

  private runs(bm: Bitmap, bits: Uint8Array, offset: number, length: number): { offset: number; length: number; dirty: boolean }[] {
    const out: { offset: number; length: number; dirty: boolean }[] = [];
    const g = 2 ** bm.granularityBits;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const n = Math.floor(pos / g);
      const dirty = (bits[n >>> 3] & (1 << (n & 7))) !== 0;
      let next = Math.min(end, (n + 1) * g);
      // Whole zero or whole dirty bytes skip eight chunks at once.
      for (;;) {
        if (next >= end) break;
        const m = next / g;
        if ((m & 7) === 0 && bits[m >>> 3] === (dirty ? 0xff : 0)) {
          next = Math.min(end, (m + 8) * g);
          continue;
        }
        if (((bits[m >>> 3] & (1 << (m & 7))) !== 0) !== dirty) break;
        next = Math.min(end, (m + 1) * g);
      }
      const last = out[out.length - 1];
      if (last && last.dirty === dirty) last.length += next - pos;
      else out.push({ offset: pos, length: next - pos, dirty });
      pos = next;
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------- resize

  /** QEMU refuses to resize an image with an inconsistent bitmap (its size cannot be trusted). */
  checkResize(): void {
    const bm = this.list.find((b) => b.inconsistent);
    if (bm) throw inconsistentError(bm.name);
  }

  /** The disk is now `newSize` bytes: each bitmap follows (new chunks clean; chunks past the end dropped). */
  resized(newSize: number): void {
    for (const bm of this.list) {
      const old = this.bitsOf(bm);
      const bits = new Uint8Array(bitmapDataBytes(newSize, 2 ** bm.granularityBits));
      bits.set(old.subarray(0, Math.min(old.length, bits.length)));
      clearTail(bits, Math.ceil(newSize / 2 ** bm.granularityBits));
      bm.bits = bits;
      bm.changed = true;
    }
  }

  // -------------------------------------------------------------------------------------------- close

  /**
   * A clean close: stores the bitmaps and clears their in-use flags (see the top of this file). Needs the
   * scheme attached (clusters come from it) and everything else flushed.
   */
  store(): void {
    if (!this.tracking) return;
    this.tracking = false;
    this.recording = [];
    const img = this.img;
    const cs = img.clusterSize;
    const h = img.header;
    const oldExt = this.consistentExtension() ? parseBitmapsExtension(this.extension()!, cs) : null;
    // An image that had no bitmaps and has none now: nothing to write.
    if (!oldExt && !this.list.length) return;
    const kept = new Set(this.list.map((b) => b.name));
    // What the old directory referenced and the new one will not: freed once the header has switched.
    const drop: { name: string; tableOffset: number; tableSize: number }[] = [];
    if (oldExt) {
      for (const e of this.readDirectory(img.file.size())) {
        const bm = this.list.find((b) => b.name === e.name);
        if (!kept.has(e.name) || (bm && bm.changed && !bm.inconsistent)) drop.push(e);
      }
    }
    for (const bm of this.list) {
      if (bm.inconsistent || (!bm.changed && bm.tableSize)) continue;
      this.writeBitmap(bm);
    }
    let dirOffset = 0;
    let dirSize = 0;
    if (this.list.length) {
      const dir = serializeBitmapDirectory(this.list.map((b) => this.entryOf(b, false)));
      dirSize = dir.length;
      const clusters = Math.ceil(dirSize / cs);
      dirOffset = img.scheme.allocate(clusters, "meta");
      const buf = new Uint8Array(clusters * cs);
      buf.set(dir);
      img.file.write(buf, dirOffset, "bitmap");
    }
    // The new clusters' counts and contents are durable before the header points to them.
    img.flushMetadata();
    img.refcounts.cache.writeDirty();
    img.sync("bitmap");
    h.extensions = h.extensions.filter((e) => e.type !== EXT_BITMAPS);
    if (this.list.length) {
      h.extensions.unshift({ type: EXT_BITMAPS, data: serializeBitmapsExtension({ count: this.list.length, directorySize: dirSize, directoryOffset: dirOffset }) });
      h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
    } else {
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
    }
    img.writeHeader();
    this.directory = this.list.length ? { offset: dirOffset, bytes: dirSize } : undefined;
    // Nothing on disk references the old places any more.
    if (oldExt) for (let c = 0; c < Math.ceil(oldExt.directorySize / cs); c++) img.scheme.releaseNow(oldExt.directoryOffset / cs + c, "meta");
    for (const t of drop) this.freeTable(t);
    img.refcounts.cache.writeDirty();
    this.stored = this.list.map((b) => ({ name: b.name, granularity: 2 ** b.granularityBits, inUse: b.inconsistent, auto: b.enabled }));
  }

  /** Writes a bitmap's data clusters (all-zero ones get no cluster) and its table, in new clusters. */
  private writeBitmap(bm: Bitmap): void {
    const img = this.img;
    const cs = img.clusterSize;
    const bits = this.bitsOf(bm);
    const size = bitmapTableEntries(img.size, 2 ** bm.granularityBits, cs);
    const table: BitmapTableEntry[] = [];
    for (let i = 0; i < size; i++) {
      const chunk = bits.subarray(i * cs, Math.min(bits.length, (i + 1) * cs));
      if (!chunk.some((b) => b !== 0)) {
        table.push({ offset: 0, allOnes: false });
        continue;
      }
      const off = img.scheme.allocate(1, "meta");
      const buf = new Uint8Array(cs);
      buf.set(chunk);
      img.file.write(buf, off, "bitmap");
      table.push({ offset: off, allOnes: false });
    }
    const raw = serializeBitmapTable(table);
    const clusters = Math.ceil(raw.length / cs);
    const tableOffset = img.scheme.allocate(clusters, "meta");
    const buf = new Uint8Array(clusters * cs);
    buf.set(raw);
    img.file.write(buf, tableOffset, "bitmap");
    bm.tableOffset = tableOffset;
    bm.tableSize = size;
    bm.changed = false;
  }

  /** Frees a table and the data clusters it maps (no structure on disk references them any more). */
  private freeTable(t: { name: string; tableOffset: number; tableSize: number }): void {
    const img = this.img;
    const cs = img.clusterSize;
    let entries: BitmapTableEntry[];
    try {
      entries = this.readTable(t);
    } catch {
      // An inconsistent bitmap's unreadable table: what it maps is left to check (a leak at worst).
      entries = [];
    }
    for (const e of entries) if (e.offset) img.scheme.releaseNow(e.offset / cs, "meta");
    for (let c = 0; c < Math.ceil((t.tableSize * 8) / cs); c++) img.scheme.releaseNow(t.tableOffset / cs + c, "meta");
  }

  // -------------------------------------------------------------------------------------------- compaction

  /**
   * The bitmaps' structures as they are on disk (trusted extension only), raw, for a restructuring that moves
   * them: the directory and each table with its offset.
   */
  rawLayout(): { directory: { offset: number; raw: Uint8Array }; tables: { offset: number; raw: Uint8Array }[] } | undefined {
    if (!this.consistentExtension()) return undefined;
    const img = this.img;
    const ext = parseBitmapsExtension(this.extension()!, img.clusterSize);
    const raw = new Uint8Array(ext.directorySize);
    img.file.read(raw, ext.directoryOffset, "bitmap");
    const entries = parseBitmapDirectory(raw, ext.count, { clusterSize: img.clusterSize, diskSize: img.size });
    const tables = entries.map((e) => {
      const t = new Uint8Array(e.tableSize * 8);
      img.file.read(t, e.tableOffset, "bitmap");
      parseBitmapTable(t, img.clusterSize, `bitmap '${e.name}' table`);
      return { offset: e.tableOffset, raw: t };
    });
    return { directory: { offset: ext.directoryOffset, raw }, tables };
  }

  /** The header extension now says the directory lies at `offset` (a restructuring moved it; header not written). */
  directoryMoved(offset: number): void {
    const h = this.img.header;
    const i = h.extensions.findIndex((e) => e.type === EXT_BITMAPS);
    const ext = parseBitmapsExtension(h.extensions[i]!.data, this.img.clusterSize);
    h.extensions[i] = { type: EXT_BITMAPS, data: serializeBitmapsExtension({ ...ext, directoryOffset: offset }) };
    this.directory = { offset, bytes: ext.directorySize };
  }

  // -------------------------------------------------------------------------------------------- references

  /**
   * Every cluster the bitmaps on disk reference (as the header says, trusted only with bit 0): the directory,
   * each table, each data cluster. `problem` gets what cannot be read (the references behind it are unknown).
   */
  forEachReference(range: (offset: number, bytes: number) => void, cluster: (c: number) => void, problem: (message: string) => void): void {
    if (!this.consistentExtension()) return;
    const img = this.img;
    let dir: BitmapDirectoryEntry[];
    try {
      const ext = parseBitmapsExtension(this.extension()!, img.clusterSize);
      range(ext.directoryOffset, ext.directorySize);
      dir = this.readDirectory(Number.MAX_SAFE_INTEGER);
    } catch (e) {
      if (!(e instanceof ImageFormatError)) throw e;
      problem(`ERROR bitmap directory: ${e.message}`);
      return;
    }
    for (const e of dir) {
      range(e.tableOffset, e.tableSize * 8);
      try {
        for (const t of this.readTable(e)) if (t.offset) cluster(t.offset / img.clusterSize);
      } catch (err) {
        if (!(err instanceof ImageFormatError)) throw err;
        problem(`ERROR ${err.message}`);
      }
    }
  }
}

/** Zeroes the bits past `nbits` in the last byte (the spec wants unused tail bits zero). */
function clearTail(bits: Uint8Array, nbits: number): void {
  if (nbits % 8 && bits.length) bits[bits.length - 1] &= (1 << (nbits % 8)) - 1;
  const used = Math.ceil(nbits / 8);
  if (used < bits.length) bits.fill(0, used);
}

