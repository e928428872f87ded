/**
 * A byte-level NBD client for tests of the server's edge cases (what real clients never send): it speaks
 * the wire format of src/nbd/protocol.ts and can send anything, well-formed or not.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import { ByteReader } from "../../src/nbd/byte-reader.js";
import {
  BASE_ALLOCATION,
  ClientFlag,
  decodeBlockStatus,
  decodeErrorChunk,
  decodeInfoReply,
  decodeOffsetDataOffset,
  decodeOffsetHole,
  decodeOptionReplyHeader,
  decodeReplyHeader,
  decodeServerGreeting,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequest,
  type Extent,
  HANDSHAKE_LENGTH,
  Info,
  isErrorReply,
  Opt,
  OPTION_REPLY_HEADER_LENGTH,
  Rep,
  ReplyFlag,
  ReplyType,
  SIMPLE_REPLY_LENGTH,
  STRUCTURED_REPLY_HEADER_LENGTH,
} from "../../src/nbd/protocol.js";

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** The reply to one request: its error, and for reads the data and hole chunks. */
export interface Reply {
  handle: bigint;
  error: number;
  message?: string;
  data?: { offset: number; bytes: Buffer }[];
  holes?: { offset: number; length: number }[];
  /** The extents of the last BLOCK_STATUS chunk. */
  extents?: Extent[];
  /** Every BLOCK_STATUS chunk, in the order received. */
  statuses?: { contextId: number; extents: Extent[] }[];
}

export class WireClient {
  /** The connection: the accepted socket, then the TLS socket over it after startTls(). */
  reader: ByteReader;
  socket: net.Socket;
  private closedPromise: Promise<void>;
  structured = false;
  /** Structured replies whose DONE chunk has not come yet, by handle. */
  private readonly partial = new Map<bigint, Reply>();
  size = 0;
  txFlags = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.reader = new ByteReader(socket);
    this.closedPromise = new Promise((r) => socket.once("close", () => r()));
    socket.on("error", () => {});
  }

  static connect(path: string): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path, () => resolve(new WireClient(s)));
      s.once("error", reject);
    });
  }

  static connectTcp(port: number, host = "127.0.0.1"): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ port, host }, () => resolve(new WireClient(s)));
      s.once("error", reject);
    });
  }

  /**
   * NBD_OPT_STARTTLS, then the client's side of the TLS handshake on the same socket (`options` as for
   * tls.connect: ca/cert/key, or pskCallback). Rejects when the server refuses STARTTLS or the handshake fails.
   */
  async startTls(options: tls.ConnectionOptions): Promise<void> {
    const r = await this.option(Opt.STARTTLS);
    if (r[0]!.type !== Rep.ACK) throw new Error(`STARTTLS refused (reply 0x${r[0]!.type.toString(16)}: ${r[0]!.data.toString()})`);
    const leftover = this.reader.detach();
    if (leftover.length) throw new Error("the server sent data after its STARTTLS reply");
    const s = tls.connect({ ...options, socket: this.socket });
    s.on("error", () => {});
    await new Promise<void>((resolve, reject) => {
      s.once("secureConnect", () => resolve());
      s.once("error", reject);
      s.once("close", () => reject(new Error("closed during the TLS handshake")));
    });
    this.socket = s;
    this.reader = new ByteReader(s);
    this.closedPromise = new Promise((r) => s.once("close", () => r()));
  }

  send(b: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /** Resolves when the server has closed the connection. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  async greeting(): Promise<number> {
    const g = await this.reader.exact(HANDSHAKE_LENGTH);
    if (!g) throw new Error("connection closed before the greeting");
    return decodeServerGreeting(g).flags;
  }

  async optionReply(): Promise<OptionReply | null> {
    const h = await this.reader.exact(OPTION_REPLY_HEADER_LENGTH);
    if (!h) return null;
    const { option, type, length } = decodeOptionReplyHeader(h);
    const data = await this.reader.exact(length);
    if (!data) return null;
    return { option, type, data: Buffer.from(data) };
  }

  /** Replies to one option, up to and including its ACK or error. */
  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      if (!r) throw new Error(`connection closed during option ${option}`);
      out.push(r);
      if (r.type === Rep.ACK || isErrorReply(r.type)) return out;
    }
  }

  /** Full handshake to transmission with NBD_OPT_GO. */
  /** With `meta`, selects base:allocation; with `queries`, sends those to SET_META_CONTEXT instead. */
  /** With `tls`, STARTTLS and the TLS handshake come first. */
  async open(opts: { structured?: boolean; meta?: boolean; queries?: string[]; name?: string; tls?: tls.ConnectionOptions } = {}): Promise<void> {
    await this.greeting();
    this.send(encodeClientFlags(ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES));
    if (opts.tls) await this.startTls(opts.tls);
    if (opts.structured ?? true) {
      const r = await this.option(Opt.STRUCTURED_REPLY);
      if (r[0]!.type !== Rep.ACK) throw new Error("structured replies refused");
      this.structured = true;
    }
    if (opts.meta || opts.queries) {
      const queries = opts.queries ?? [BASE_ALLOCATION];
      const r = await this.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest({ exportName: opts.name ?? "", queries }));
      if (r[r.length - 1]!.type !== Rep.ACK) throw new Error("SET_META_CONTEXT failed");
    }
    const replies = await this.option(Opt.GO, encodeInfoRequest({ name: opts.name ?? "", infos: [Info.BLOCK_SIZE] }));
    const last = replies[replies.length - 1]!;
    if (last.type !== Rep.ACK) throw new Error(`GO failed: ${last.data.toString()}`);
    for (const r of replies) {
      if (r.type !== Rep.INFO) continue;
      const info = decodeInfoReply(r.data);
      if (info.type === Info.EXPORT && "size" in info) {
        this.size = info.size;
        this.txFlags = info.txFlags;
      }
    }
  }

  request(type: number, handle: bigint, offset: number, length: number, flags = 0, payload?: Uint8Array): void {
    this.send(encodeRequest({ type, flags, handle, offset, length }));
    if (payload) this.send(payload);
  }

  /** The next complete reply (simple, or structured chunks up to DONE), or null when the server closed. */
  async reply(readLength?: (handle: bigint) => number): Promise<Reply | null> {
    const partial = this.partial;
    for (;;) {
      const magic = await this.reader.exact(4);
      if (!magic) return null;
      const isSimple = magic.readUInt32BE(0) === 0x67446698;
      const rest = await this.reader.exact((isSimple ? SIMPLE_REPLY_LENGTH : STRUCTURED_REPLY_HEADER_LENGTH) - 4);
      if (!rest) return null;
      const h = decodeReplyHeader(Buffer.concat([magic, rest]));
      if (h.kind === "simple") {
        const r: Reply = { handle: h.handle, error: h.error };
        const n = h.error === 0 ? (readLength?.(h.handle) ?? 0) : 0;
        if (n > 0) {
          const bytes = await this.reader.exact(n);
          if (!bytes) return null;
          r.data = [{ offset: -1, bytes: Buffer.from(bytes) }];
        }
        return r;
      }
      const payload = await this.reader.exact(h.length);
      if (!payload) return null;
      const r = partial.get(h.handle) ?? { handle: h.handle, error: 0 };
      partial.set(h.handle, r);
      switch (h.type) {
        case ReplyType.OFFSET_DATA:
          (r.data ??= []).push({ offset: decodeOffsetDataOffset(payload), bytes: Buffer.from(payload.subarray(8)) });
          break;
        case ReplyType.OFFSET_HOLE:
          (r.holes ??= []).push(decodeOffsetHole(payload));
          break;
        case ReplyType.BLOCK_STATUS: {
          const bs = decodeBlockStatus(payload);
          r.extents = bs.extents;
          (r.statuses ??= []).push(bs);
          break;
        }
        case ReplyType.ERROR:
        case ReplyType.ERROR_OFFSET: {
          const e = decodeErrorChunk(payload);
          r.error = e.error;
          r.message = e.message;
          break;
        }
        case ReplyType.NONE:
          break;
        default:
          throw new Error(`unexpected chunk type ${h.type}`);
      }
      if (h.flags & ReplyFlag.DONE) {
        partial.delete(h.handle);
        return r;
      }
    }
  }

  /** Assembles a structured read's chunks into the bytes of [offset, offset+length). */
  static assemble(r: Reply, offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (const d of r.data ?? []) d.bytes.copy(out, d.offset - offset);
    return out;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
