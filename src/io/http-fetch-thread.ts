/**
 * The fetch thread of Node's HTTP files (http-file.ts): one per thread that opens remote files, shared by
 * all of them; runs a chunk service (chunk-service.ts) per open object on its own event loop while the
 * caller waits for it with `Atomics.wait`.
 *
 * Protocol, on the MessagePort given in workerData (the caller takes replies with receiveMessageOnPort):
 *   { op: "open", seq, id, options }  → { seq, object }           pins the object, opens its disk store
 *   { op: "get", seq, id, indices }   → { seq, chunks }           chunk bytes, buffers transferred
 *   { op: "prefetch", id, indices }   (no reply)
 *   { op: "stats", seq, id }          → { seq, stats }
 *   { op: "close", id }               (no reply) forgets the object
 * Any reply may instead be { seq, error: { message, code, permanent } }. After posting a reply the thread
 * stores 1 in the shared signal word and notifies it; it does the same once when it starts.
 *
 * Node 20 cannot load .ts in a worker: http-file.ts starts the compiled copy of this file in dist/.
 */
import { type MessagePort, workerData } from "node:worker_threads";
import { IoError } from "./block-file.js";
import { ChunkService } from "./chunk-service.js";
import { chunkStoreKey, DiskChunkStore } from "./disk-chunk-store.js";
import { openHttpObject, type FetchOptions } from "./http-fetch.js";
import { HttpPermanentError, objectValidator } from "./http-object.js";

export interface FetchThreadData {
  port: MessagePort;
  signal: Int32Array;
}

/** How one object is fetched and cached. */
export interface ObjectOptions {
  url: string;
  fetch: FetchOptions;
  chunkSize: number;
  maxInFlight?: number;
  maxPrefetched?: number;
  /** Persistent cache folder; none when undefined. */
  cacheDir?: string;
  cacheBytes?: number;
}

type Request =
  | { op: "open"; seq: number; id: number; options: ObjectOptions }
  | { op: "stats"; seq: number; id: number }
  | { op: "get"; seq: number; id: number; indices: number[] }
  | { op: "prefetch"; id: number; indices: number[] }
  | { op: "close"; id: number };

const data = workerData as FetchThreadData;
const services = new Map<number, ChunkService>();
const warnedStores = new Set<string>();

function reply(message: object, transfer: ArrayBuffer[] = []): void {
  data.port.postMessage(message, transfer);
  Atomics.store(data.signal, 0, 1);
  Atomics.notify(data.signal, 0);
}

function errorReply(seq: number, e: unknown): void {
  const message = (e as Error)?.message ?? String(e);
  reply({ seq, error: { message, code: e instanceof IoError ? e.code : "EIO", permanent: e instanceof HttpPermanentError } });
}

async function open(options: ObjectOptions): Promise<ChunkService> {
  const object = await openHttpObject(options.url, options.fetch);
  const { cacheDir } = options;
  const store = cacheDir === undefined ? undefined : new DiskChunkStore(cacheDir, chunkStoreKey(object.url, objectValidator(object), options.chunkSize), options.cacheBytes);
  return new ChunkService(object, {
    ...options.fetch,
    chunkSize: options.chunkSize,
    maxInFlight: options.maxInFlight,
    maxPrefetched: options.maxPrefetched,
    store,
    onStoreError: (e) => {
      if (cacheDir === undefined || warnedStores.has(cacheDir)) return;
      warnedStores.add(cacheDir);
      console.error(`refcow: the chunk cache in ${cacheDir} cannot be written (${(e as Error)?.message ?? e}); going on without it`);
    },
  });
}

async function handle(req: Request): Promise<void> {
  if (req.op === "prefetch") return void services.get(req.id)?.prefetch(req.indices);
  if (req.op === "close") return void services.delete(req.id);
  try {
    if (req.op === "open") {
      const service = await open(req.options);
      services.set(req.id, service);
      reply({ seq: req.seq, object: service.obj });
      return;
    }
    const service = services.get(req.id);
    if (!service) throw new IoError(`remote object ${req.id} is not open`, "EBADF");
    if (req.op === "stats") return reply({ seq: req.seq, stats: service.stats });
    const chunks = await service.get(req.indices);
    // A chunk that owns its whole buffer is moved; a view of a larger one is copied by the structured clone.
    const transfer = chunks.filter((c) => c.byteOffset === 0 && c.byteLength === c.buffer.byteLength).map((c) => c.buffer as ArrayBuffer);
    reply({ seq: req.seq, chunks }, [...new Set(transfer)]);
  } catch (e) {
    errorReply(req.seq, e);
  }
}

data.port.on("message", (req: Request) => void handle(req));
// Running: the opener waits for this before its first request.
Atomics.store(data.signal, 0, 1);
Atomics.notify(data.signal, 0);
