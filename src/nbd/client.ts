/**
 * A minimal NBD client, the benchmark's load generator for every NBD source (refcow's export, qemu-nbd):
 * connects to a Unix socket, negotiates the fixed newstyle handshake with NBD_OPT_GO on the default export
 * (no structured replies, so every reply is simple), and issues WRITE, FLUSH, READ and DISC, one request or
 * many in flight (replies are matched by handle). With TLS it first upgrades the connection with
 * NBD_OPT_STARTTLS (tls.ts has the exchange) and negotiates inside TLS. The wire format and its codecs are in
 * protocol.ts.
 */
import * as net from "node:net";
import * as tls from "node:tls";
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

/**
 * The client's TLS: a pre-shared key (the identity the client names and its key), or X.509 with the server's
 * certificate taken unchecked (`anyServerCertificate`: only for a server this process made, as the NBD
 * server's warm-up does). No client certificate either way.
 */
export type ClientTls = { psk: { identity: string; key: Buffer } } | { anyServerCertificate: true };

/** Buffered reader over a socket: resolves exact byte counts in order. */
class SocketReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (d: Buffer): void => {
    this.chunks.push(d);
    this.have += d.length;
    this.wake();
  };
  private readonly fail = (e: Error): void => {
    this.failure ??= e;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(this.failure);
    }
  };
  private readonly onClose = (): void => this.fail(new Error("NBD server closed the connection"));

  constructor(private readonly socket: net.Socket) {
    socket.on("data", this.onData);
    socket.on("error", this.fail);
    socket.on("close", this.onClose);
  }

  /** Stops reading the socket (another layer, TLS, takes it over); nothing may be buffered. */
  detach(): void {
    if (this.have > 0) throw new Error("NBD server sent data after STARTTLS's reply");
    this.socket.off("data", this.onData);
    this.socket.off("error", this.fail);
    this.socket.off("close", this.onClose);
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

  /**
   * Connects to `socketPath` and negotiates the default export (NBD_OPT_GO with an empty name); with `psk`,
   * with `secure`, inside TLS (NBD_OPT_STARTTLS first).
   */
  static async connect(socketPath: string, secure?: ClientTls): Promise<NbdClient> {
    const raw = net.createConnection(socketPath);
    raw.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      raw.once("connect", resolve);
      raw.once("error", reject);
    });
    let socket: net.Socket = raw;
    let reader = new SocketReader(raw);
    const greeting = decodeServerGreeting(await reader.read(HANDSHAKE_LENGTH));
    if (!(greeting.flags & HandshakeFlag.FIXED_NEWSTYLE)) {
      raw.destroy();
      throw new Error(`${socketPath}: the NBD server does not speak fixed newstyle`);
    }
    const clientFlags = ClientFlag.C_FIXED_NEWSTYLE | (greeting.flags & HandshakeFlag.NO_ZEROES ? ClientFlag.C_NO_ZEROES : 0);
    // GO on the default export (empty name) with no info requests: the server sends NBD_INFO_EXPORT anyway.
    const go = encodeOption(Opt.GO, encodeInfoRequest({ name: "", infos: [] }));
    if (secure) {
      raw.write(encodeClientFlags(clientFlags));
      try {
        socket = await startTls(raw, reader, secure);
      } catch (e) {
        raw.destroy();
        throw new Error(`${socketPath}: ${(e as Error).message}`);
      }
      reader = new SocketReader(socket);
      socket.write(go);
    } else raw.write(Buffer.concat([encodeClientFlags(clientFlags), go]));
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

  /** Whether requests and replies go through TLS. */
  get encrypted(): boolean {
    return this.socket instanceof tls.TLSSocket;
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
    // Over TLS each request leaves as its own records (see request()); a cork would make them one.
    if (this.encrypted) return issue();
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
      if (!data) this.socket.write(req);
      // Over TLS, libnbd sends a write's header and its payload as two TLS records, which the server receives
      // as two reads: so does this client (one write each; Node's TLS makes one record of each write).
      else if (this.encrypted) {
        this.socket.write(req);
        this.socket.write(data);
      } else this.socket.write(Buffer.concat([req, data]));
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

/** NBD_OPT_STARTTLS, its ACK (in the clear), then the client's side of a TLS handshake on `raw`. */
async function startTls(raw: net.Socket, reader: SocketReader, how: ClientTls): Promise<tls.TLSSocket> {
  raw.write(encodeOption(Opt.STARTTLS, new Uint8Array(0)));
  const h = decodeOptionReplyHeader(await reader.read(OPTION_REPLY_HEADER_LENGTH));
  const data = h.length ? await reader.read(h.length) : Buffer.alloc(0);
  if (h.type !== Rep.ACK) throw new Error(`NBD_OPT_STARTTLS refused: ${data.toString() || `reply type 0x${h.type.toString(16)}`}`);
  reader.detach();
  const psk = "psk" in how ? how.psk : undefined;
  const socket = tls.connect(
    psk
      ? // No certificate to check: the key authenticates the server.
        { socket: raw, pskCallback: () => ({ identity: psk.identity, psk: psk.key }), checkServerIdentity: () => undefined }
      : { socket: raw, rejectUnauthorized: false },
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", resolve);
    socket.once("error", reject);
  });
  socket.setNoDelay(true);
  return socket;
}
