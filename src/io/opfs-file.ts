/**
 * OpfsFile: a BlockFile on a file of the browser's Origin Private File System, through a
 * `FileSystemSyncAccessHandle`.
 *
 * ## What the platform gives (File System Standard, "FileSystemSyncAccessHandle"; Chromium ≥ 108)
 *
 *  - `await fileHandle.createSyncAccessHandle()` is asynchronous and allowed **only in a dedicated Web
 *    Worker** of a secure context (https, or http on localhost / 127.0.0.1). Everything after it is
 *    synchronous, which is what the synchronous engine needs:
 *      `read(view, {at}) → bytes read` (fewer at the end of the file; 0 past it),
 *      `write(view, {at}) → bytes written` (the file grows as needed; a gap reads as zeroes),
 *      `truncate(n)`, `getSize()`, `flush()` (persists every write made through the handle), `close()`.
 *  - The handle holds an exclusive lock on the file: while it is open, no other handle (sync or
 *    `createWritable`) can be made and `getFile()` fails. Close it before the page reads or replaces the file.
 *  - Errors are DOMExceptions: `QuotaExceededError` (storage quota), `InvalidStateError` (handle closed),
 *    `NoModificationAllowedError` (file locked by another handle), `NotFoundError` (file removed).
 *
 * ## The BlockFile contract, mapped
 *
 *  - `read(buf, offset)`: loops until `buf` is full or the handle returns 0, then zero-fills the rest (bytes
 *    past the end read as zero); returns the bytes that came from the file.
 *  - `write(data, offset)`: loops until all of `data` is written (a short write without an exception is
 *    retried; a write that makes no progress is an IoError).
 *  - `zeroRange(offset, length)`: OPFS has no hole punching: zeroes are written inside the file, the part past
 *    its end is a `truncate` (`zeroesWithoutWriting` is false, so the engine writes whole clusters itself).
 *  - `flush()`: `handle.flush()`. OPFS durability is the browser's: it survives a tab crash and a browser
 *    restart once `flush()` returned.
 *  - `readOnly`: enforced here (every handle this module opens is read-write; the platform's "read-only"
 *    mode is not yet generally available), so a read-only open still takes the exclusive lock.
 *  - Views on a SharedArrayBuffer (the request ring's data shares) are passed to the handle as they are —
 *    the standard's IDL takes `AllowSharedBufferSource` — and, should a browser refuse them with a
 *    TypeError, copied through a private buffer from then on.
 *
 * Offsets are JS numbers (exact below 2^53); the handle takes them as `unsigned long long`.
 */
import type { BlockFile, IoPurpose } from "./block-file.js";
import { IoError, writeZeroBytes } from "./block-file.js";

/** The synchronous access handle, as far as this module uses it (declared here: TypeScript's DOM library lacks it). */
export interface SyncAccessHandle {
  read(buffer: ArrayBufferView, options?: { at?: number }): number;
  write(buffer: ArrayBufferView, options?: { at?: number }): number;
  truncate(newSize: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

/** A directory of the origin private file system, as far as `OpfsFile.open` uses it. */
export interface OpfsDirectory {
  getFileHandle(name: string, options?: { create?: boolean }): Promise<{ createSyncAccessHandle(): Promise<SyncAccessHandle> }>;
}

export interface OpfsOpenOptions {
  /** Refuse writes (the handle is still exclusive). */
  readOnly?: boolean;
  /** Create the file when it does not exist (default false: a missing file is an error). */
  create?: boolean;
  /** Directory holding the file (default: the origin's root, `navigator.storage.getDirectory()`). */
  directory?: OpfsDirectory;
}

export class OpfsFile implements BlockFile {
  readonly name: string;
  readonly readOnly: boolean;
  private closed = false;
  /** Set once the handle refused a view on a SharedArrayBuffer. */
  private copyShared = false;
  private scratch: Uint8Array | undefined;

  /** Wraps an open handle (which this file then owns and closes). */
  constructor(
    private readonly handle: SyncAccessHandle,
    name: string,
    options: { readOnly?: boolean } = {},
  ) {
    this.name = name;
    this.readOnly = options.readOnly ?? false;
  }

  /**
   * Opens `name` in the origin private file system (inside a dedicated worker). Throws an IoError naming the
   * file when it is missing, locked by another handle, or when OPFS is not available here.
   */
  static async open(name: string, options: OpfsOpenOptions = {}): Promise<OpfsFile> {
    const where = `${name} (origin private file system)`;
    let dir = options.directory;
    if (!dir) {
      const storage = (globalThis as unknown as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDirectory> } } }).navigator?.storage;
      if (typeof storage?.getDirectory !== "function") {
        throw new IoError(`${where}: the origin private file system is not available here (a secure context is needed)`, "ENOTSUP");
      }
      dir = await storage.getDirectory();
    }
    let fileHandle: Awaited<ReturnType<OpfsDirectory["getFileHandle"]>>;
    try {
      fileHandle = await dir.getFileHandle(name, { create: options.create ?? false });
    } catch (e) {
      if (domName(e) === "NotFoundError") throw new IoError(`Could not open '${name}': No such file in the origin private file system`, "ENOENT");
      throw wrap(e, `${where}: cannot open`);
    }
    if (typeof fileHandle.createSyncAccessHandle !== "function") {
      throw new IoError(`${where}: synchronous access handles exist only inside a dedicated Web Worker`, "ENOTSUP");
    }
    let handle: SyncAccessHandle;
    try {
      handle = await fileHandle.createSyncAccessHandle();
    } catch (e) {
      if (domName(e) === "NoModificationAllowedError") {
        throw new IoError(`${where}: the file is open elsewhere (another tab or worker holds its lock)`, "EBUSY");
      }
      throw wrap(e, `${where}: cannot open`);
    }
    return new OpfsFile(handle, name, { readOnly: options.readOnly });
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    this.checkOpen();
    let done = 0;
    try {
      while (done < buf.length) {
        const n = this.io("read", buf.subarray(done), offset + done);
        if (n <= 0) break;
        done += n;
      }
    } catch (e) {
      throw wrap(e, `${this.name}: read of ${buf.length} bytes at ${offset} failed`);
    }
    if (done < buf.length) buf.fill(0, done);
    return done;
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    this.checkOpen();
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    let done = 0;
    try {
      while (done < data.length) {
        const n = this.io("write", data.subarray(done), offset + done);
        if (n <= 0) throw new IoError(`${this.name}: write at ${offset + done} made no progress`, "EIO");
        done += n;
      }
    } catch (e) {
      if (e instanceof IoError) throw e;
      throw wrap(e, `${this.name}: write of ${data.length} bytes at ${offset} failed`);
    }
  }

  readonly zeroesWithoutWriting = false;

  zeroRange(offset: number, length: number, purpose?: IoPurpose): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    if (length <= 0) return;
    const size = this.size();
    const inside = Math.max(0, Math.min(offset + length, size) - offset);
    if (inside > 0) writeZeroBytes(this, offset, inside, purpose);
    if (offset + length > Math.max(size, offset + inside)) this.truncate(offset + length);
  }

  flush(_purpose?: IoPurpose): void {
    this.checkOpen();
    if (this.readOnly) return;
    try {
      this.handle.flush();
    } catch (e) {
      throw wrap(e, `${this.name}: flush failed`);
    }
  }

  size(): number {
    this.checkOpen();
    try {
      return this.handle.getSize();
    } catch (e) {
      throw wrap(e, `${this.name}: size query failed`);
    }
  }

  truncate(size: number): void {
    this.checkOpen();
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    try {
      this.handle.truncate(size);
    } catch (e) {
      throw wrap(e, `${this.name}: truncate to ${size} failed`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.handle.close();
    } catch (e) {
      throw wrap(e, `${this.name}: close failed`);
    }
  }

  /** One read or write call, copying through a private buffer when the handle refuses shared memory. */
  private io(op: "read" | "write", view: Uint8Array, at: number): number {
    const shared = typeof SharedArrayBuffer !== "undefined" && view.buffer instanceof SharedArrayBuffer;
    if (!shared || !this.copyShared) {
      try {
        return op === "read" ? this.handle.read(view, { at }) : this.handle.write(view, { at });
      } catch (e) {
        if (!(shared && e instanceof TypeError)) throw e;
        this.copyShared = true;
      }
    }
    // At most 1 MiB per call through the private buffer.
    const len = Math.min(view.length, 1 << 20);
    if (!this.scratch || this.scratch.length < len) this.scratch = new Uint8Array(Math.max(len, 64 << 10));
    const tmp = this.scratch.subarray(0, len);
    if (op === "write") {
      tmp.set(view.subarray(0, len));
      return this.handle.write(tmp, { at });
    }
    const n = this.handle.read(tmp, { at });
    if (n > 0) view.set(tmp.subarray(0, n));
    return n;
  }

  private checkOpen(): void {
    if (this.closed) throw new IoError(`${this.name}: file is closed`, "EBADF");
  }
}

function domName(e: unknown): string | undefined {
  return (e as { name?: unknown } | undefined)?.name as string | undefined;
}

/** Maps a DOMException of the handle to an IoError with an errno-like code. */
function wrap(e: unknown, what: string): IoError {
  if (e instanceof IoError) return e;
  const name = domName(e);
  const message = (e as { message?: unknown } | undefined)?.message;
  switch (name) {
    case "QuotaExceededError":
      return new IoError(`${what}: no space left (storage quota of the origin exceeded)`, "ENOSPC");
    case "InvalidStateError":
      return new IoError(`${what}: the access handle is closed`, "EBADF");
    case "NoModificationAllowedError":
      return new IoError(`${what}: the file is locked by another handle`, "EBUSY");
    case "NotFoundError":
      return new IoError(`${what}: the file was removed`, "ENOENT");
  }
  return new IoError(`${what}: ${typeof message === "string" && message ? message : String(e)}`, name);
}
