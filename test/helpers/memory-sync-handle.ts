/**
 * An in-memory stand-in for OPFS's FileSystemSyncAccessHandle that can "crash": after a crash it holds its
 * last flushed bytes with every later write applied whole, torn (a prefix), or not at all, in any
 * combination (`crashed(fate)` decides each).
 */
import type { SyncAccessHandle } from "../../src/io/opfs-file.js";

type Pending = { kind: "write"; at: number; data: Uint8Array } | { kind: "truncate"; size: number };

export class MemoryHandle implements SyncAccessHandle {
  bytes: Uint8Array = new Uint8Array(0);
  private durable: Uint8Array = new Uint8Array(0);
  private pending: Pending[] = [];
  closed = false;
  flushes = 0;

  read(buffer: ArrayBufferView, options?: { at?: number }): number {
    const at = options?.at ?? 0;
    const out = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const n = Math.max(0, Math.min(out.length, this.bytes.length - at));
    out.set(this.bytes.subarray(at, at + n));
    return n;
  }

  write(buffer: ArrayBufferView, options?: { at?: number }): number {
    const data = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength).slice();
    const at = options?.at ?? 0;
    this.bytes = applyWrite(this.bytes, at, data);
    this.pending.push({ kind: "write", at, data });
    return data.length;
  }

  truncate(size: number): void {
    this.bytes = resize(this.bytes, size);
    this.pending.push({ kind: "truncate", size });
  }

  getSize(): number {
    return this.bytes.length;
  }

  flush(): void {
    this.durable = this.bytes.slice();
    this.pending = [];
    this.flushes++;
  }

  close(): void {
    this.closed = true;
  }

  /** What a crash leaves: the flushed bytes, then each later operation whole, torn or lost (`fate` decides). */
  crashed(fate: (op: number, length: number) => number): MemoryHandle {
    let bytes: Uint8Array = this.durable.slice();
    this.pending.forEach((p, i) => {
      if (p.kind === "truncate") {
        if (fate(i, 1) > 0) bytes = resize(bytes, p.size);
      } else {
        const kept = fate(i, p.data.length);
        if (kept > 0) bytes = applyWrite(bytes, p.at, p.data.subarray(0, kept));
      }
    });
    const h = new MemoryHandle();
    h.bytes = bytes;
    h.durable = bytes.slice();
    return h;
  }

  /** Reopened after a clean close. */
  reopened(): MemoryHandle {
    return this.crashed((_op, length) => length);
  }
}

function resize(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(bytes.subarray(0, size));
  return out;
}

function applyWrite(bytes: Uint8Array, at: number, data: Uint8Array): Uint8Array {
  const out = at + data.length > bytes.length ? resize(bytes, at + data.length) : bytes;
  out.set(data, at);
  return out;
}

