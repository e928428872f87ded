/**
 * The Web Worker entry (browser): the same serve loop as the Node worker (serve-loop.ts), over the engine on
 * a file of the origin private file system (io/opfs-file.ts). Messages: web-protocol.ts.
 *
 * What differs from Node is only how the image is reached: OPFS access handles are created asynchronously,
 * so the file is opened first and the synchronous `serveRing` gets an `open` that only parses the image. The
 * worker must be a dedicated worker of a cross-origin isolated page (SharedArrayBuffer, sync access handles).
 * An image whose backing file is an http(s) URL (an overlay over a remote image) reads its chain over HTTP,
 * through the persistent chunk cache in OPFS (io/opfs-chunk-cache.ts), and refuses a version of the URL
 * other than the one the overlay was made over (the page's record, web/overlay-pins.ts).
 */
import { Qcow2Image } from "../open/qcow2.js";
import { OpfsFile } from "../io/opfs-file.js";
import { openWebHttpFile, type WebHttpFileOptions } from "../io/http-file-web.js";
import { CHUNK_DEFAULTS } from "../io/chunk-reader.js";
import { objectValidator } from "../io/http-object.js";
import { openOpfsChunkCache } from "../io/opfs-chunk-cache.js";
import { DEFAULT_SLOT_CACHE_BYTES, type SlotChunkCache } from "../io/slot-chunk-cache.js";
import { type PinRecord, pinRefusal } from "../open/pin-record.js";
import { readOverlayPin } from "../web/overlay-pins.js";
import { openRemoteChain } from "../open/remote-chain.js";
import { servingCache } from "../open/serving-cache.js";
import { serveRing, type ServeResult } from "./serve-loop.js";
import type { WebCheckRequest, WebCreateRequest, WebServeRequest, WebWorkerReply, WebWorkerRequest, WebWorkerResult } from "./web-protocol.js";

interface WorkerScope {
  postMessage(message: WebWorkerReply): void;
  addEventListener(type: "message", listener: (e: { data: WebWorkerRequest }) => void): void;
  crossOriginIsolated?: boolean;
  navigator?: { storage?: { getDirectory?: unknown } };
}

const scope = globalThis as unknown as WorkerScope;

/** Opens the OPFS chunk cache of remote files (none when turned off or unavailable: said, not fatal). */
async function openHttpCache(bytes: number | undefined): Promise<SlotChunkCache | undefined> {
  if (bytes === 0) return undefined;
  try {
    return await openOpfsChunkCache({ slotSize: CHUNK_DEFAULTS.chunkSize, maxBytes: bytes ?? DEFAULT_SLOT_CACHE_BYTES });
  } catch (e) {
    console.warn(`refcow: no persistent chunk cache: ${(e as Error)?.message ?? e}`);
    return undefined;
  }
}

/** How the image's remote backing files open: through the chunk cache, refused when not the pinned version. */
function remoteFileOptions(overlay: string, pin: PinRecord[] | undefined, cache: SlotChunkCache | undefined): WebHttpFileOptions {
  return {
    store: cache && ((object, chunkSize) => cache.forObject(object.url, objectValidator(object), chunkSize)),
    refuse: pin && ((object) => pinRefusal(pin, object, overlay)),
  };
}

/** Opens the OPFS file, then serves the ring until CLOSE or STOP; the file is closed when the loop ends. */
export async function serveOpfs(req: WebServeRequest): Promise<ServeResult> {
  let file: OpfsFile;
  let pin: PinRecord[] | undefined;
  try {
    file = await OpfsFile.open(req.file, { readOnly: req.readOnly });
  } catch (e) {
    // Report the failed open through the ring, as a failed parse would be.
    return serveRing(req.ring, () => {
      throw e;
    });
  }
  const cache = await openHttpCache(req.httpCacheBytes);
  try {
    pin = await readOverlayPin(req.file, "its backing file");
  } catch (e) {
    file.close();
    cache?.close();
    return serveRing(req.ring, () => {
      throw e;
    });
  }
  const remote = remoteFileOptions(req.file, pin, cache);
  try {
    // Writethrough is the loop's (group commit, open/serving-cache.ts): the engine runs in writeback.
    const mode = servingCache(req.cache);
    return serveRing(
      req.ring,
      () =>
        Qcow2Image.open(file, {
          scheme: req.scheme,
          schemeOptions: req.schemeOptions,
          alloc: req.alloc,
          cache: mode.engine,
          readOnly: req.readOnly,
          // An overlay over a remote image: its backing chain is read over HTTP (synchronous XHR, in this worker).
          openBacking: (name, fmt) => openRemoteChain(name, (url) => openWebHttpFile(url, remote), { format: fmt, cache: mode.engine }),
        }),
      { spinUs: req.spinUs, adaptiveSpin: req.adaptiveSpin, durableWrites: mode.durableWrites },
    );
  } finally {
    // The image closes its file on CLOSE/STOP; after a failed open the handle is still ours.
    file.close();
    cache?.close();
  }
}

/** Writes a new empty qcow2 image into `req.file` (created or replaced). */
export async function createOpfs(req: WebCreateRequest): Promise<null> {
  const file = await OpfsFile.open(req.file, { create: true });
  try {
    Qcow2Image.create(file, req.options);
    file.flush();
  } finally {
    file.close();
  }
  return null;
}

/** Checks `req.file` read-only, as `qemu-img check` does. */
export async function checkOpfs(req: WebCheckRequest) {
  const file = await OpfsFile.open(req.file, { readOnly: true });
  try {
    const img = Qcow2Image.open(file, { readOnly: true, forCheck: true, noRepairOnOpen: true, noBacking: true });
    try {
      return img.check();
    } finally {
      img.close();
    }
  } finally {
    file.close();
  }
}

async function handle(req: WebWorkerRequest): Promise<void> {
  try {
    let value: WebWorkerResult["value"];
    switch (req.kind) {
      case "serve":
        value = await serveOpfs(req);
        break;
      case "create":
        value = await createOpfs(req);
        break;
      case "check":
        value = await checkOpfs(req);
        break;
      default:
        throw new Error(`unknown request ${(req as { kind?: unknown }).kind}`);
    }
    scope.postMessage({ id: req.id, kind: "result", value });
  } catch (e) {
    const err = e as Error;
    scope.postMessage({ id: req.id, kind: "error", name: err?.name ?? "Error", message: err?.message ?? String(e) });
  }
}

// Requests run one after another: a serve loop holds the thread until its image is closed.
let chain: Promise<void> = Promise.resolve();
if (typeof scope.addEventListener === "function" && typeof scope.postMessage === "function") {
  scope.addEventListener("message", (e) => {
    chain = chain.then(() => handle(e.data));
  });
  scope.postMessage({
    kind: "hello",
    crossOriginIsolated: scope.crossOriginIsolated === true,
    opfs: typeof scope.navigator?.storage?.getDirectory === "function",
  });
}
