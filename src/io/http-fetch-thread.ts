/**
 * The fetch thread of a Node HTTP file (http-file.ts): runs the chunk service (chunk-service.ts) on its
 * own event loop while the engine's thread waits for it with `Atomics.wait`.
 *
 * Protocol, on the MessagePort given in workerData (the caller takes replies with receiveMessageOnPort):
 *   { op: "open", seq }               → { seq, object }           pins the object, opens the disk store
 *   { op: "get", seq, indices }       → { seq, chunks }           chunk bytes, buffers transferred
 *   { op: "prefetch", indices }       (no reply)
 *   { op: "stats", seq }              → { seq, stats }
 * Any reply may instead be { seq, error: { message, code, permanent } }. After posting a reply the thread
 * stores 1 in the shared signal word and notifies it.
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
  url: string;
  port: MessagePort;
  signal: Int32Array;
  fetch: FetchOptions;
  chunkSize: number;
  maxInFlight?: number;
  maxPrefetched?: number;
  /** Persistent cache folder; none when undefined. */
  cacheDir?: string;
  cacheBytes?: number;
}

type Request = { op: "open" | "stats"; seq: number } | { op: "get"; seq: number; indices: number[] } | { op: "prefetch"; indices: number[] };

const data = workerData as FetchThreadData;
let service: ChunkService | undefined;
let storeWarned = false;

function reply(message: object, transfer: ArrayBuffer[] = []): void {
  data.port.postMessage(message, transfer);
  Atomics.store(data.signal, 0, 1);
  Atomics.notify(data.signal, 0);
}

function errorReply(seq: number, e: unknown): void {
  const message = (e as Error)?.message ?? String(e);
  reply({ seq, error: { message, code: e instanceof IoError ? e.code : "EIO", permanent: e instanceof HttpPermanentError } });
}

async function handle(req: Request): Promise<void> {
  if (req.op === "prefetch") {
    service?.prefetch(req.indices);
    return;
  }
  try {
    if (req.op === "open") {
      const opts = data.fetch;
      const object = await openHttpObject(data.url, opts);
      const store = data.cacheDir === undefined ? undefined : new DiskChunkStore(data.cacheDir, chunkStoreKey(object.url, objectValidator(object), data.chunkSize), data.cacheBytes);
      service = new ChunkService(object, {
        ...opts,
        chunkSize: data.chunkSize,
        maxInFlight: data.maxInFlight,
        maxPrefetched: data.maxPrefetched,
        store,
        onStoreError: (e) => {
          if (storeWarned) return;
          storeWarned = true;
          console.error(`refcow: the chunk cache in ${data.cacheDir} cannot be written (${(e as Error)?.message ?? e}); going on without it`);
        },
      });
      reply({ seq: req.seq, object });
    } else if (req.op === "stats") {
      reply({ seq: req.seq, stats: service?.stats });
    } else if (req.op === "get") {
      if (!service) throw new IoError("the object is not open", "EBADF");
      const chunks = await service.get(req.indices);
      // Each chunk's buffer is its own unless it is a view of a larger one (then it is copied by structured clone).
      const transfer = chunks.filter((c) => c.byteOffset === 0 && c.byteLength === c.buffer.byteLength).map((c) => c.buffer as ArrayBuffer);
      reply({ seq: req.seq, chunks }, [...new Set(transfer)]);
    }
  } catch (e) {
    errorReply(req.seq, e);
  }
}

data.port.on("message", (req: Request) => void handle(req));
