/**
 * The transmission phase served in the thread that owns the image, as qemu-nbd serves it: the engine runs in
 * this thread (an InlineDisk: synchronous calls), and each request is read, carried out and answered between
 * two socket reads, with no hand-off to another thread.
 *
 * Per socket read: every complete request in the bytes received is decoded and served in order, the payload
 * of a WRITE passed to the engine as a view on the received bytes (no copy; a payload split over several
 * reads is gathered into one buffer first); the replies of the whole read go out in one socket write. Replies
 * therefore come in request order, which the protocol allows (any order is).
 *
 * The same rules as transmission.ts: flags and ranges are checked by refusalOf (the same errors); a WRITE
 * with FUA (or a TRIM / WRITE_ZEROES with FUA) is answered after a flush of the image, unless the cache mode is
 * writethrough; FLUSH flushes the whole image, covering every write any connection saw answered (one engine,
 * one thread). A bad request magic or a WRITE payload over 32 MiB ends the connection after the replies of
 * the requests before it. When the replies queued on the socket pass MAX_QUEUED_REPLY_BYTES (a client that
 * does not read them), the socket stops being read until it drains, and TCP pushes back.
 *
 * Nothing is ever in flight between two events of the thread: stop() only makes later requests fail with
 * ESHUTDOWN, and drained() is at once.
 */
import type { Socket } from "node:net";
import type { ByteReader } from "./byte-reader.js";
import { errnoOf, type InlineDisk, type NbdExport } from "./export.js";
import type { Session } from "./handshake.js";
import {
  Cmd,
  CmdFlag,
  decodeRequest,
  encodeErrorChunk,
  encodeStructuredChunk,
  Err,
  ERR_NAMES,
  type Handle,
  MAX_REQUEST_LENGTH,
  OFFSET_DATA_PREFIX,
  ReplyFlag,
  ReplyType,
  type Request,
  REQUEST_LENGTH,
  SIMPLE_REPLY_LENGTH,
  SIMPLE_REPLY_MAGIC,
  writeOffsetDataPrefix,
} from "./protocol.js";
import { blockStatusChunks, contextExtents, hasZeroGranule, holeReadChunks, isAllZero, MAX_EXTENTS, refusalOf, type TransmissionEnd } from "./transmission.js";

/** Bytes of replies queued on the socket above which it is no longer read. */
const MAX_QUEUED_REPLY_BYTES = 32 << 20;
/** Replies of one batch up to this size are copied into one buffer (one write); larger ones go as a writev. */
const GATHER_LIMIT = 64 << 10;

/** A WRITE whose payload is still arriving. */
interface PartialWrite {
  req: Request;
  /** Gathers the payload: `filled` bytes have arrived. */
  payload: Buffer;
  filled: number;
}

export class InlineTransmission {
  private readonly disk: InlineDisk;
  private stopping = false;
  private finished = false;
  private finish!: (end: TransmissionEnd) => void;
  private readonly ended: Promise<TransmissionEnd>;
  /** Received bytes not yet served (a partial request header, or the rest of a read while paused). */
  private pending: Buffer | undefined;
  private partial: PartialWrite | undefined;
  /** Replies of the batch being served, written together at its end. */
  private out: Uint8Array[] = [];
  private outBytes = 0;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    private readonly exp: NbdExport,
    private readonly session: Session,
    private readonly log: (message: string) => void = () => {},
    /**
     * Write the replies once every read of this turn of the event loop has been served, not after each
     * read. For a TLS socket, which hands over each TLS record as a read of its own (a client's request
     * header and its payload are often two), so that the replies of one socket read still go out together.
     */
    private readonly coalesceReplies = false,
  ) {
    if (!("inline" in exp.disk)) throw new Error("internal: a DiskClient is served by Transmission");
    this.disk = exp.disk;
    this.ended = new Promise((r) => (this.finish = r));
  }

  /** Requests being served now: none between two events. */
  get requestsInFlight(): number {
    return 0;
  }

  /** Serves requests until the client disconnects, closes, or breaks the protocol. */
  run(): Promise<TransmissionEnd> {
    const socket = this.socket;
    const rest = this.reader.detach();
    socket.on("data", this.onData);
    socket.on("drain", this.onDrain);
    const closed = (): void => this.end({ end: "closed" });
    socket.on("end", closed);
    socket.on("close", closed);
    socket.on("error", closed);
    for (const chunk of rest) if (!this.finished) this.onData(chunk);
    if (!this.finished && (socket.readableEnded || socket.destroyed)) closed();
    if (!this.finished && !this.paused) socket.resume();
    return this.ended;
  }

  /** From now on every request gets ESHUTDOWN. */
  stop(): Promise<void> {
    this.stopping = true;
    return Promise.resolve();
  }

  drained(): Promise<void> {
    return Promise.resolve();
  }

  private end(how: TransmissionEnd): void {
    if (this.finished) return;
    this.flushReplies();
    this.finished = true;
    this.pending = undefined;
    this.partial = undefined;
    // Bytes the client still sends are read and dropped, so that its close is seen.
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    this.finish(how);
  }

  private readonly onDrain = (): void => {
    if (!this.paused || this.finished) return;
    this.paused = false;
    const p = this.pending;
    this.pending = undefined;
    if (p) this.serveBytes(p);
    if (!this.finished && !this.paused) this.socket.resume();
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.finished) return;
    let buf = chunk;
    const partial = this.partial;
    if (partial) {
      const n = Math.min(chunk.length, partial.payload.length - partial.filled);
      chunk.copy(partial.payload, partial.filled, 0, n);
      partial.filled += n;
      if (partial.filled < partial.payload.length) return;
      this.partial = undefined;
      this.execute(partial.req, partial.payload);
      buf = chunk.subarray(n);
    } else if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    this.serveBytes(buf);
  };

  /** Serves every complete request in `buf`, keeps the rest, writes the replies. */
  private serveBytes(buf: Buffer): void {
    let pos = 0;
    const socket = this.socket;
    while (!this.finished) {
      if (socket.writableLength + this.outBytes > MAX_QUEUED_REPLY_BYTES) {
        if (pos < buf.length) this.pending = buf.subarray(pos);
        this.paused = true;
        socket.pause();
        break;
      }
      const left = buf.length - pos;
      if (left < REQUEST_LENGTH) {
        if (left > 0) this.pending = Buffer.from(buf.subarray(pos));
        break;
      }
      let req: Request;
      try {
        req = decodeRequest(buf.subarray(pos, pos + REQUEST_LENGTH));
      } catch (e) {
        this.end({ end: "protocol", message: (e as Error).message });
        return;
      }
      pos += REQUEST_LENGTH;
      let payload: Buffer | undefined;
      if (req.type === Cmd.WRITE) {
        if (req.length > MAX_REQUEST_LENGTH) {
          // The payload cannot be skipped at a reasonable cost: answer, then end the connection.
          this.replyError(req, Err.EINVAL, `write of ${req.length} bytes is over the ${MAX_REQUEST_LENGTH}-byte limit`);
          this.end({ end: "protocol", message: `NBD_CMD_WRITE with ${req.length} bytes of payload` });
          return;
        }
        if (buf.length - pos >= req.length) {
          payload = buf.subarray(pos, pos + req.length);
          pos += req.length;
        } else {
          const p = Buffer.allocUnsafe(req.length);
          const n = buf.copy(p, 0, pos);
          pos = buf.length;
          this.partial = { req, payload: p, filled: n };
          break;
        }
      }
      if (req.type === Cmd.DISC) {
        this.end({ end: "disconnect" });
        return;
      }
      this.execute(req, payload);
    }
    if (!this.coalesceReplies) this.flushReplies();
    else if (!this.flushScheduled && this.out.length > 0) {
      this.flushScheduled = true;
      // The check phase follows the poll phase whose reads queued these replies: no added wait.
      setImmediate(this.scheduledFlush);
    }
  }

  private flushScheduled = false;
  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flushReplies();
  };

  private execute(req: Request, payload: Buffer | undefined): void {
    const exp = this.exp;
    const disk = this.disk;
    const refused = refusalOf(req, exp, this.session, disk.size, this.stopping);
    if (refused) {
      this.replyError(req, refused.errno, refused.message);
      return;
    }
    const { type, flags, offset, length } = req;
    const fua = (flags & CmdFlag.FUA) !== 0 && exp.cache !== "writethrough";
    try {
      switch (type) {
        case Cmd.READ:
          if (this.session.structured) this.structuredRead(req);
          else this.simpleRead(req);
          return;
        case Cmd.WRITE: {
          const data = payload!;
          if (exp.detectZeroes !== "off" && isAllZero(data)) disk.writeZeroes(offset, length, { unmap: exp.detectZeroes === "unmap" });
          else disk.write(offset, data);
          if (fua) disk.flush();
          break;
        }
        case Cmd.WRITE_ZEROES:
          disk.writeZeroes(offset, length, { unmap: (flags & CmdFlag.NO_HOLE) === 0 && exp.discard === "unmap" });
          if (fua) disk.flush();
          break;
        case Cmd.TRIM:
          if (exp.discard === "unmap") {
            disk.discard(offset, length);
            if (fua) disk.flush();
          }
          break;
        case Cmd.FLUSH:
          disk.flush();
          break;
        case Cmd.CACHE:
          break;
        case Cmd.BLOCK_STATUS: {
          const contexts = this.session.contexts;
          const max = flags & CmdFlag.REQ_ONE ? 1 : MAX_EXTENTS;
          const answers = contexts.map((c) => contextExtents(disk, c, offset, length, max));
          for (const chunk of blockStatusChunks(req, contexts, answers)) this.push(chunk);
          return;
        }
        default:
          this.replyError(req, Err.EINVAL, `command ${type} is not supported`);
          return;
      }
      this.replyOk(req);
    } catch (e) {
      // JavaScript's own error types here are bugs of the server, not answers of the engine: say so.
      if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || /^internal/.test((e as Error)?.message ?? "")) {
        this.log(`internal error: ${(e as Error).name}: ${(e as Error).message}`);
      }
      this.replyError(req, errnoOf(e), (e as Error)?.message ?? String(e));
    }
  }

  private simpleRead(req: Request): void {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH + req.length);
    this.disk.readInto(buf.subarray(SIMPLE_REPLY_LENGTH), req.offset);
    writeSimple(buf, Err.OK, req.handle);
    this.push(buf);
  }

  /** As Transmission's: one OFFSET_DATA chunk, or OFFSET_HOLE chunks for the zero runs the engine reports. */
  private structuredRead(req: Request): void {
    const { handle, offset, length } = req;
    if (length === 0) {
      this.push(encodeStructuredChunk(handle, ReplyType.NONE, ReplyFlag.DONE, new Uint8Array(0)));
      return;
    }
    const buf = Buffer.allocUnsafe(OFFSET_DATA_PREFIX + length);
    const data = buf.subarray(OFFSET_DATA_PREFIX);
    this.disk.readInto(data, offset);
    if ((req.flags & CmdFlag.DF) !== 0 || !hasZeroGranule(data, offset)) {
      writeOffsetDataPrefix(buf, 0, handle, ReplyFlag.DONE, offset, length);
      this.push(buf);
      return;
    }
    for (const c of holeReadChunks(req, data, this.disk.blockStatus(offset, length, MAX_EXTENTS))) this.push(c);
  }

  private replyOk(req: Request): void {
    const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
    writeSimple(b, Err.OK, req.handle);
    this.push(b);
  }

  private replyError(req: Request, errno: number, message: string): void {
    this.log(`request ${req.type} at ${req.offset}+${req.length}: ${ERR_NAMES[errno] ?? errno}: ${message}`);
    if (this.session.structured && (req.type === Cmd.READ || req.type === Cmd.BLOCK_STATUS)) {
      this.push(encodeErrorChunk(req.handle as Handle, errno, message));
    } else {
      const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
      writeSimple(b, errno, req.handle);
      this.push(b);
    }
  }

  private push(b: Uint8Array): void {
    this.out.push(b);
    this.outBytes += b.byteLength;
  }

  /** Writes the batch's replies: one buffer when small, else one corked run of writes (a writev). */
  private flushReplies(): void {
    const out = this.out;
    if (out.length === 0) return;
    const bytes = this.outBytes;
    this.out = [];
    this.outBytes = 0;
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return;
    if (out.length === 1) socket.write(out[0]!);
    else if (bytes <= GATHER_LIMIT) socket.write(Buffer.concat(out, bytes));
    else {
      socket.cork();
      for (const b of out) socket.write(b);
      socket.uncork();
    }
  }
}

/** A simple reply header at the start of `b`. */
function writeSimple(b: Buffer, error: number, handle: Handle): void {
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(handle, 8);
}
