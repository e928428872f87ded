/**
 * RemoteFile: a read-only BlockFile on a pinned remote object, reading through a ChunkReader. Platform-
 * neutral: Node's http-file.ts and the browser's http-file-web.ts give it their chunk bridge.
 *
 * A failed read is an IoError for that request only (the guest device turns it into an error status);
 * nothing is cached from it, so a later read of the same range asks the server again. Each distinct
 * failure is reported once through `log`, naming the URL and the byte range.
 */
import { type BlockFile, IoError, type IoPurpose } from "./block-file.js";
import type { ChunkReader } from "./chunk-reader.js";
import type { HttpObject } from "./http-object.js";

export interface RemoteFileHooks {
  /** Where a failure is reported (once per distinct message). */
  log?: (line: string) => void;
  /** Releases the bridge (the fetch thread or worker). */
  close?: () => void;
}

export class RemoteFile implements BlockFile {
  readonly readOnly = true;
  readonly zeroesWithoutWriting = false;
  readonly name: string;
  private readonly reported = new Set<string>();
  private closed = false;

  constructor(
    readonly object: HttpObject,
    private readonly reader: ChunkReader,
    private readonly hooks: RemoteFileHooks = {},
  ) {
    this.name = object.url;
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    if (this.closed) throw new IoError(`${this.name}: read after close`, "EBADF");
    try {
      return this.reader.read(buf, offset);
    } catch (e) {
      const err = e instanceof IoError ? e : new IoError(`${this.name}: ${(e as Error)?.message ?? String(e)}`, "EIO");
      if (!this.reported.has(err.message)) {
        this.reported.add(err.message);
        (this.hooks.log ?? defaultLog)(`refcow: read of ${this.name} bytes ${offset}-${offset + buf.length - 1} failed: ${err.message}`);
      }
      throw err;
    }
  }

  write(_data: Uint8Array, _offset: number): void {
    throw this.readOnlyError();
  }

  truncate(_size: number): void {
    throw this.readOnlyError();
  }

  zeroRange(_offset: number, _length: number): void {
    throw this.readOnlyError();
  }

  flush(): void {}

  size(): number {
    return this.object.size;
  }

  /** Bytes of chunks held in memory. */
  memoryInUse(): number {
    return this.reader.memoryInUse();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.hooks.close?.();
  }

  private readOnlyError(): IoError {
    return new IoError(`${this.name}: a remote image is read-only (write into a local overlay instead)`, "EROFS");
  }
}

function defaultLog(line: string): void {
  console.error(line);
}
