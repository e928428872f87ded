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
  createWritable(): Promise<{ write(data: Blob | BufferSource): Promise<void>; close(): Promise<void> }>;
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

export async function removeFile(name: string): Promise<void> {
  await (await root()).removeEntry(name);
}

/** A file name for the store: no path separators, no leading dot. */
export function checkFileName(name: string): string {
  const n = name.trim();
  if (!n || n.startsWith(".") || /[\\/\0]/.test(n) || n.length > 200) throw new Error(`'${name}' is not a usable file name`);
  return n;
}
