/**
 * The page side of serving an image from a Web Worker (browser): starts the worker (web-worker.ts), asks it
 * to serve an OPFS file on a new request ring, and hands back the same `DiskClient` the Node pool returns.
 * The browser counterpart of pool.ts, with one worker per host and one image served at a time (the serve
 * loop holds the worker's thread).
 *
 * Needs a cross-origin isolated page (SharedArrayBuffer) and `Atomics.waitAsync` (Chromium ≥ 91).
 */
import type { CheckResult, CreateOptions } from "../engine/types.js";
import { DiskClient } from "./disk-client.js";
import { type RingClientOptions, waitForServer, WorkerError } from "./ring-client.js";
import { C, createRing, type RingOptions } from "./ring.js";
import type { ServeResult } from "./serve-loop.js";
import type { WebServeRequest, WebWorkerHello, WebWorkerReply, WebWorkerRequest } from "./web-protocol.js";

export interface WebImageOptions extends Pick<WebServeRequest, "scheme" | "schemeOptions" | "alloc" | "cache" | "readOnly" | "httpCacheBytes"> {
  /** Ring geometry (slots, data share per slot). */
  ring?: RingOptions;
  /** Client-side spinning and waiting. */
  client?: RingClientOptions;
  /** Bounded spin of the worker's serve loop, in µs. */
  serverSpinUs?: number;
  serverAdaptiveSpin?: boolean;
}

/** The parts of the browser's Worker the host uses. */
interface WorkerLike {
  postMessage(message: WebWorkerRequest): void;
  addEventListener(type: "message", listener: (e: { data: WebWorkerReply }) => void): void;
  addEventListener(type: "error", listener: (e: { message?: string }) => void): void;
  terminate(): void;
}

type WorkerCtor = new (url: string | URL, options: { type: "module"; name?: string }) => WorkerLike;

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export class WebImageHost {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private serving: { file: string; client?: DiskClient } | undefined;
  private dead: Error | undefined;

  private constructor(
    private readonly worker: WorkerLike,
    readonly hello: WebWorkerHello,
  ) {
    worker.addEventListener("message", (e) => this.onReply(e.data));
    worker.addEventListener("error", (e) => this.die(new WorkerError(`the refcow worker failed: ${e.message ?? "script error"}`)));
  }

  /** Starts the worker from its bundled module and waits until it has loaded. */
  static async start(workerUrl: string | URL): Promise<WebImageHost> {
    if (typeof SharedArrayBuffer === "undefined" || (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === false) {
      throw new Error("SharedArrayBuffer is not available: the page must be served with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp");
    }
    const Ctor = (globalThis as unknown as { Worker?: WorkerCtor }).Worker;
    if (!Ctor) throw new Error("Web Workers are not available here");
    const worker = new Ctor(workerUrl, { type: "module", name: "refcow-engine" });
    const hello = await new Promise<WebWorkerHello>((resolve, reject) => {
      worker.addEventListener("message", (e) => {
        if (e.data.kind === "hello") resolve(e.data);
      });
      worker.addEventListener("error", (e) => reject(new Error(`the refcow worker did not start: ${e.message ?? "script error"}`)));
    });
    if (!hello.crossOriginIsolated) {
      worker.terminate();
      throw new Error("the refcow worker is not cross-origin isolated (SharedArrayBuffer unavailable)");
    }
    if (!hello.opfs) {
      worker.terminate();
      throw new Error("the origin private file system is not available in the worker (a secure context is needed)");
    }
    return new WebImageHost(worker, hello);
  }

  /** The file being served, if any. */
  get servedFile(): string | undefined {
    return this.serving?.file;
  }

  /** Writes a new empty qcow2 image into OPFS file `file` (replacing it). */
  async create(file: string, options: CreateOptions): Promise<void> {
    await this.request({ id: 0, kind: "create", file, options });
  }

  /** Checks OPFS file `file` as `qemu-img check` does (it must not be open). */
  async check(file: string): Promise<CheckResult> {
    return (await this.request({ id: 0, kind: "check", file })) as CheckResult;
  }

  /** Serves OPFS file `file` from the worker; resolves once it is open. Close the client to end serving. */
  async open(file: string, opts: WebImageOptions = {}): Promise<DiskClient> {
    const ring = createRing(opts.ring);
    const served = this.request({
      id: 0,
      kind: "serve",
      ring,
      file,
      scheme: opts.scheme,
      schemeOptions: opts.schemeOptions,
      alloc: opts.alloc,
      cache: opts.cache,
      readOnly: opts.readOnly,
      spinUs: opts.serverSpinUs,
      adaptiveSpin: opts.serverAdaptiveSpin,
      httpCacheBytes: opts.httpCacheBytes,
    }) as Promise<ServeResult>;
    const state = { file } as { file: string; client?: DiskClient };
    this.serving = state;
    const ended = served.then(
      () => new WorkerError(`the worker opening ${file} ended before the image was open`),
      (e: Error) => e,
    );
    const finished = () => {
      if (this.serving === state) this.serving = undefined;
    };
    try {
      await waitForServer(ring, file, ended);
    } catch (e) {
      // After a failed open the loop has returned by itself; STOP covers a worker that is still opening.
      const ctl = new Int32Array(ring, 0, 64);
      Atomics.store(ctl, C.STOP, 1);
      Atomics.notify(ctl, C.SQ_TAIL);
      await served.catch(() => undefined);
      finished();
      throw e;
    }
    const client = new DiskClient(ring, file, opts.client);
    state.client = client;
    served.then(
      () => {
        finished();
        client.ring.serverEnded();
      },
      (e: Error) => {
        finished();
        client.ring.fail(new WorkerError(`the worker serving ${file} failed (${e.message}); requests on this image fail`));
      },
    );
    return client;
  }

  /** Terminates the worker. An image still open loses what its caches held (its dirty bit covers that). */
  terminate(): void {
    this.die(new WorkerError("the refcow worker was terminated"));
  }

  private request(req: WebWorkerRequest): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.serving) {
      return Promise.reject(new Error(`the refcow worker is serving ${this.serving.file}: close that image first`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  private onReply(msg: WebWorkerReply): void {
    if (msg.kind === "hello") return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.kind === "result") p.resolve(msg.value);
    else p.reject(rebuild(msg.name, msg.message));
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    this.worker.terminate();
    this.serving?.client?.ring.fail(err);
    this.serving = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

function rebuild(name: string, message: string): Error {
  const e = new Error(message);
  e.name = name;
  return e;
}
