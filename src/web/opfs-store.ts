/**
 * The page's view of the origin private file system: listing, reading (download), writing (upload) and
 * removing image files. The engine's own access is the worker's synchronous handle (io/opfs-file.ts); these
 * asynchronous calls work only while no such handle is open on the file.
 */

interface DirectoryHandle {
  getFileHandle(name: string, options?: { create?: boolean }): Promise<FileHandle>;
  removeEntry(name: string): Promise<void>;
  entries(): AsyncIterable<[string, { kind: string }]>;
}

interface FileHandle {
  getFile(): Promise<File>;
  createWritable(): Promise<WritableStream<Uint8Array> & { write(data: Blob | BufferSource): Promise<void>; close(): Promise<void> }>;
}

async function root(): Promise<DirectoryHandle> {
  if (!navigator.storage?.getDirectory) throw new Error("the origin private file system is not available (a secure context is needed)");
  return (await navigator.storage.getDirectory()) as unknown as DirectoryHandle;
}

export interface StoredFile {
  name: string;
  size: number;
}

/** Files in the root directory, by name. */
export async function listFiles(): Promise<StoredFile[]> {
  const dir = await root();
  const out: StoredFile[] = [];
  for await (const [name, entry] of dir.entries()) {
    if (entry.kind !== "file") continue;
    const file = await (await dir.getFileHandle(name)).getFile();
    out.push({ name, size: file.size });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

export async function fileExists(name: string): Promise<boolean> {
  try {
    await (await root()).getFileHandle(name);
    return true;
  } catch {
    return false;
  }
}

/** The whole file, read into memory (so the copy stays valid when the engine writes the file again). */
export async function readFile(name: string): Promise<Uint8Array> {
  const file = await (await (await root()).getFileHandle(name)).getFile();
  return new Uint8Array(await file.arrayBuffer());
}

/** The first `length` bytes of file `name` (fewer when it is shorter). */
export async function readHead(name: string, length: number): Promise<Uint8Array> {
  const file = await (await (await root()).getFileHandle(name)).getFile();
  return new Uint8Array(await file.slice(0, length).arrayBuffer());
}

/** Writes `data` as file `name`, replacing it. */
export async function writeFile(name: string, data: Blob | Uint8Array): Promise<void> {
  const fh = await (await root()).getFileHandle(name, { create: true });
  const w = await fh.createWritable();
  await w.write(data instanceof Uint8Array ? (data as Uint8Array<ArrayBuffer>) : data);
  await w.close();
}

/**
 * Writes the bytes of `source` as file `name` (replacing it) a chunk at a time, never whole in memory: a
 * file picked by the person (`file.stream()`) or a download (`response.body`). `onProgress` gets the bytes
 * written so far. A failed copy leaves no partial file behind.
 */
export async function writeStream(name: string, source: ReadableStream<Uint8Array>, onProgress?: (bytes: number) => void): Promise<number> {
  const dir = await root();
  const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
  let bytes = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      bytes += chunk.byteLength;
      onProgress?.(bytes);
      ctl.enqueue(chunk);
    },
  });
  try {
    // pipeTo closes the writable at the end (the file's new contents appear then) and aborts it on error.
    await source.pipeThrough(counter).pipeTo(w);
  } catch (e) {
    await dir.removeEntry(name).catch(() => undefined);
    throw e;
  }
  return bytes;
}

/**
 * File `name` as a File: disk-backed, read only when used (a download of any size takes no memory). It
 * becomes unreadable once the file changes, so it must not be written meanwhile.
 */
export async function fileBlob(name: string): Promise<File> {
  return (await (await root()).getFileHandle(name)).getFile();
}

/** Copies file `from` to `to` (replacing it), streamed. */
export async function copyFile(from: string, to: string): Promise<number> {
  return writeStream(to, (await fileBlob(from)).stream());
}

export async function removeFile(name: string): Promise<void> {
  await (await root()).removeEntry(name);
}

/** A file name for the store: no path separators, no leading dot. */
export function checkFileName(name: string): string {
  const n = name.trim();
  if (!n || n.startsWith(".") || /[\\/\0]/.test(n) || n.length > 200) throw new Error(`'${name}' is not a usable file name`);
  return n;
}
