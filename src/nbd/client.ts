/**
 * A minimal NBD client, the benchmark's load generator for every NBD source (refcow's export, qemu-nbd):
 * connects to a Unix socket, negotiates the fixed newstyle handshake with NBD_OPT_GO on the default export
 * (no structured replies, so every reply is simple), and issues WRITE, FLUSH, READ and DISC, one request or
 * many in flight (replies are matched by handle). The wire format and its codecs are in protocol.ts.
 */
import * as net from "node:net";
import {
  ClientFlag,
  Cmd,
  decodeInfoReply,
  decodeOptionReplyHeader,
  decodeReplyHeader,
  decodeServerGreeting,
  encodeClientFlags,
  encodeInfoRequest,
  encodeOption,
  encodeRequest,
  ERR_NAMES,
  HandshakeFlag,
  Info,
  isErrorReply,
  Opt,
  OPTION_REPLY_HEADER_LENGTH,
  HANDSHAKE_LENGTH,
  Rep,
  SIMPLE_REPLY_LENGTH,
} from "./protocol.js";

interface Pending {
  resolve: (data: Uint8Array) => void;
  reject: (e: Error) => void;
  readLength: number;
}

/** Buffered reader over a socket: resolves exact byte counts in order. */
class SocketReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.chunks.push(d);
      this.have += d.length;
      this.wake();
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w.reject(this.failure);
      }
    };
    socket.on("error", fail);
    socket.on("close", () => fail(new Error("NBD server closed the connection")));
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error("internal: overlapping reads");
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.wake();
      if (this.waiter && this.failure) {
        this.waiter = null;
        reject(this.failure);
      }
    });
  }

  private wake(): void {
    const w = this.waiter;
    if (!w || this.have < w.n) return;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, w.n);
    const rest = all.subarray(w.n);
    this.chunks = rest.length ? [rest] : [];
    this.have = rest.length;
    this.waiter = null;
    w.resolve(out);
  }
}

export class NbdClient {
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private closed = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly reader: SocketReader,
    /** Export size in bytes, as the server announced it. */
    readonly size: number,
    /** Transmission flags, as the server announced them. */
    readonly flags: number,
  ) {
    void this.replyLoop();
  }

  /** Connects to `socketPath` and negotiates the default export (NBD_OPT_GO with an empty name). */
  static async connect(socketPath: string): Promise<NbdClient> {
    const socket = net.createConnection(socketPath);
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const reader = new SocketReader(socket);
    const greeting = decodeServerGreeting(await reader.read(HANDSHAKE_LENGTH));
    if (!(greeting.flags & HandshakeFlag.FIXED_NEWSTYLE)) {
      socket.destroy();
      throw new Error(`${socketPath}: the NBD server does not speak fixed newstyle`);
    }
    const clientFlags = ClientFlag.C_FIXED_NEWSTYLE | (greeting.flags & HandshakeFlag.NO_ZEROES ? ClientFlag.C_NO_ZEROES : 0);
    // GO on the default export (empty name) with no info requests: the server sends NBD_INFO_EXPORT anyway.
    socket.write(Buffer.concat([encodeClientFlags(clientFlags), encodeOption(Opt.GO, encodeInfoRequest({ name: "", infos: [] }))]));
    let size = -1;
    let flags = 0;
    for (;;) {
      const h = decodeOptionReplyHeader(await reader.read(OPTION_REPLY_HEADER_LENGTH));
      const data = h.length ? await reader.read(h.length) : Buffer.alloc(0);
      if (isErrorReply(h.type)) {
        socket.destroy();
        throw new Error(`${socketPath}: NBD_OPT_GO refused: ${data.toString() || `reply type 0x${h.type.toString(16)}`}`);
      }
      if (h.type === Rep.INFO) {
        const info = decodeInfoReply(data);
        if (info.type === Info.EXPORT && "size" in info) {
          size = info.size;
          flags = info.txFlags;
        }
      }
      if (h.type === Rep.ACK) break;
    }
    if (size < 0) throw new Error(`${socketPath}: the server sent no export size`);
    return new NbdClient(socket, reader, size, flags);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.request(Cmd.WRITE, offset, data.length, data, 0).then(() => undefined);
  }

  flush(): Promise<void> {
    return this.request(Cmd.FLUSH, 0, 0, undefined, 0).then(() => undefined);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.request(Cmd.READ, offset, length, undefined, length);
  }

  /**
   * Calls `issue` with the socket corked: the requests it makes leave in one write, as they do from a client
   * that keeps many in flight (fio, libnbd), so that the server reads them in socket-buffer-sized pieces
   * that cut requests in two.
   */
  corked<T>(issue: () => T): T {
    this.socket.cork();
    try {
      return issue();
    } finally {
      this.socket.uncork();
    }
  }

  /** Sends NBD_CMD_DISC after the requests in flight have their replies, then closes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.pending.values()].map((p) => new Promise<void>((r) => {
      const res = p.resolve;
      const rej = p.reject;
      p.resolve = (d) => (res(d), r());
      p.reject = (e) => (rej(e), r());
    })));
    this.closed = true;
    const req = encodeRequest({ flags: 0, type: Cmd.DISC, handle: 0n, offset: 0, length: 0 });
    await new Promise<void>((resolve) => {
      this.socket.end(req, () => resolve());
      this.socket.once("close", () => resolve());
    });
    this.socket.destroy();
  }

  private request(type: number, offset: number, length: number, data: Uint8Array | undefined, readLength: number): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new Error("NBD client is closed"));
    const handle = this.nextHandle++;
    const req = encodeRequest({ flags: 0, type, handle, offset, length });
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { resolve, reject, readLength });
      if (data) this.socket.write(Buffer.concat([req, data]));
      else this.socket.write(req);
    });
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const h = decodeReplyHeader(await this.reader.read(SIMPLE_REPLY_LENGTH));
        // Structured replies are never negotiated, so every reply is a simple one.
        if (h.kind !== "simple") throw new Error("NBD: structured reply without NBD_OPT_STRUCTURED_REPLY");
        const { error, handle } = h;
        const p = this.pending.get(handle);
        if (!p) throw new Error(`NBD: reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        if (error) {
          p.reject(new Error(`NBD request failed: ${ERR_NAMES[error] ?? `error ${error}`}`));
          continue;
        }
        p.resolve(p.readLength ? new Uint8Array(await this.reader.read(p.readLength)) : new Uint8Array(0));
      }
    } catch (e) {
      for (const p of this.pending.values()) p.reject(e as Error);
      this.pending.clear();
    }
  }
}
