import * as fs from "node:fs";
import type { BlockFile, IoPurpose } from "./block-file.js";
import { IoError } from "./block-file.js";

/** A BlockFile on a Node file descriptor, with synchronous calls (the engine runs in a worker). */
export class NodeFile implements BlockFile {
  private fd: number;
  readonly name: string;
  readonly readOnly: boolean;
  private closed = false;

  private constructor(fd: number, name: string, readOnly: boolean) {
    this.fd = fd;
    this.name = name;
    this.readOnly = readOnly;
  }

  static open(path: string, opts: { readOnly?: boolean; create?: boolean } = {}): NodeFile {
    const readOnly = opts.readOnly ?? false;
    const flags = readOnly ? "r" : opts.create ? "w+" : "r+";
    try {
      return new NodeFile(fs.openSync(path, flags), path, readOnly);
    } catch (e) {
      throw wrap(e, `${path}: cannot open`);
    }
  }

  read(buf: Uint8Array, offset: number, _purpose?: IoPurpose): number {
    let done = 0;
    try {
      while (done < buf.length) {
        const n = fs.readSync(this.fd, buf, done, buf.length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
    } catch (e) {
      throw wrap(e, `${this.name}: read of ${buf.length} bytes at ${offset} failed`);
    }
    if (done < buf.length) buf.fill(0, done);
    return done;
  }

  write(data: Uint8Array, offset: number, _purpose?: IoPurpose): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    let done = 0;
    try {
      while (done < data.length) {
        done += fs.writeSync(this.fd, data, done, data.length - done, offset + done);
      }
    } catch (e) {
      throw wrap(e, `${this.name}: write of ${data.length} bytes at ${offset} failed`);
    }
  }

  flush(_purpose?: IoPurpose): void {
    if (this.readOnly) return;
    try {
      fs.fdatasyncSync(this.fd);
    } catch (e) {
      throw wrap(e, `${this.name}: flush failed`);
    }
  }

  size(): number {
    return fs.fstatSync(this.fd).size;
  }

  truncate(size: number): void {
    if (this.readOnly) throw new IoError(`${this.name}: file is read-only`, "EROFS");
    try {
      fs.ftruncateSync(this.fd, size);
    } catch (e) {
      throw wrap(e, `${this.name}: truncate to ${size} failed`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

function wrap(e: unknown, what: string): IoError {
  const err = e as NodeJS.ErrnoException;
  const code = err?.code;
  const msg = code === "ENOSPC" ? "no space left on device" : (err?.message ?? String(e));
  return new IoError(`${what}: ${msg}`, code);
}
