/**
 * A minimal NBD client for the benchmark's load generator: connects to a Unix socket, negotiates the fixed
 * newstyle handshake with NBD_OPT_GO on the default export, and issues WRITE, FLUSH, READ and DISC with
 * simple replies, one request or many in flight (replies are matched by handle).
 *
 * Wire format (the NBD protocol document, doc/proto.md of the NBD project; all integers big-endian):
 *   server greeting: "NBDMAGIC" (8) · "IHAVEOPT" (8) · handshake flags u16 (bit 0 FIXED_NEWSTYLE, bit 1 NO_ZEROES)
 *   client flags:    u32 (the same bits echoed)
 *   option:          "IHAVEOPT" (8) · option u32 · length u32 · data
 *                    NBD_OPT_GO (7) data: name length u32 · name · number of info requests u16 · requests u16...
 *   option reply:    0x3e889045565a9 (8) · option u32 · reply type u32 · length u32 · data
 *                    NBD_REP_ACK (1) ends a GO; NBD_REP_INFO (3) with NBD_INFO_EXPORT (0): size u64 · flags u16;
 *                    reply types with bit 31 set are errors (the data is a message)
 *   request:         0x25609513 u32 · command flags u16 · type u16 · handle u64 · offset u64 · length u32 · data
 *                    types: READ 0, WRITE 1, DISC 2, FLUSH 3
 *   simple reply:    0x67446698 u32 · error u32 · handle u64 · data (READ only)
 */
import * as net from "node:net";

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;

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
    const greet = await reader.read(18);
    if (greet.readBigUInt64BE(0) !== NBDMAGIC || greet.readBigUInt64BE(8) !== IHAVEOPT) {
      socket.destroy();
      throw new Error(`${socketPath}: not a newstyle NBD server`);
    }
    const serverFlags = greet.readUInt16BE(16);
    if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) {
      socket.destroy();
      throw new Error(`${socketPath}: the NBD server does not speak fixed newstyle`);
    }
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
    const go = Buffer.alloc(16 + 6);
    go.writeBigUInt64BE(IHAVEOPT, 0);
    go.writeUInt32BE(OPT_GO, 8);
    go.writeUInt32BE(6, 12);
    go.writeUInt32BE(0, 16); // name length 0: the default export
    go.writeUInt16BE(0, 20); // no info requests: the server sends NBD_INFO_EXPORT anyway
    socket.write(Buffer.concat([clientFlags, go]));
    let size = -1;
    let flags = 0;
    for (;;) {
      const h = await reader.read(20);
      if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error(`${socketPath}: bad option reply magic`);
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const data = len ? await reader.read(len) : Buffer.alloc(0);
      if (type & 0x80000000) {
        socket.destroy();
        throw new Error(`${socketPath}: NBD_OPT_GO refused (${data.subarray(Math.min(data.length, 0)).toString() || `error 0x${type.toString(16)}`})`);
      }
      if (type === REP_INFO && data.length >= 12 && data.readUInt16BE(0) === INFO_EXPORT) {
        size = Number(data.readBigUInt64BE(2));
        flags = data.readUInt16BE(10);
      }
      if (type === REP_ACK) break;
    }
    if (size < 0) throw new Error(`${socketPath}: the server sent no export size`);
    return new NbdClient(socket, reader, size, flags);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.request(CMD_WRITE, offset, data.length, data, 0).then(() => undefined);
  }

  flush(): Promise<void> {
    return this.request(CMD_FLUSH, 0, 0, undefined, 0).then(() => undefined);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.request(CMD_READ, offset, length, undefined, length);
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
    const req = Buffer.alloc(28);
    req.writeUInt32BE(REQUEST_MAGIC, 0);
    req.writeUInt16BE(CMD_DISC, 6);
    await new Promise<void>((resolve) => {
      this.socket.end(req, () => resolve());
      this.socket.once("close", () => resolve());
    });
    this.socket.destroy();
  }

  private request(type: number, offset: number, length: number, data: Uint8Array | undefined, readLength: number): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new Error("NBD client is closed"));
    const handle = this.nextHandle++;
    const req = Buffer.alloc(28);
    req.writeUInt32BE(REQUEST_MAGIC, 0);
    req.writeUInt16BE(0, 4);
    req.writeUInt16BE(type, 6);
    req.writeBigUInt64BE(handle, 8);
    req.writeBigUInt64BE(BigInt(offset), 16);
    req.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(handle, { resolve, reject, readLength });
      if (data) this.socket.write(Buffer.concat([req, data]));
      else this.socket.write(req);
    });
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const h = await this.reader.read(16);
        if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`NBD: unexpected reply magic 0x${h.readUInt32BE(0).toString(16)}`);
        const error = h.readUInt32BE(4);
        const handle = h.readBigUInt64BE(8);
        const p = this.pending.get(handle);
        if (!p) throw new Error(`NBD: reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        if (error) {
          p.reject(new Error(`NBD request failed with error ${error}`));
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
