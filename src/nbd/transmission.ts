/**
 * The transmission phase of one NBD connection (protocol.ts): the socket's bytes are decoded into requests
 * and each is handed to the request core (request-core.ts), which serves it through the export's port
 * (port.ts) and pushes its reply here. Below the core: a TLS connection is the same, on the TLS socket
 * (tls.ts), with the replies of one turn of the event loop written together (coalesceReplies).
 *
 * Per socket read: every complete request in the bytes received is decoded and served in order, the payload
 * of a WRITE passed to the port as a view on the received bytes (no copy, also when the payload comes whole
 * in the read after its header's, as a TLS client's payload record does; a payload split over several reads
 * is gathered into one buffer first); then the port is told the batch has ended (a port holding durable
 * writes for one shared flush flushes then: group commit), and the replies pushed so far go out in one socket
 * write. A request the port answers later (the ring port, or one waiting for the group's flush) is in flight
 * until then, and its reply goes out when it comes, so replies may come out of order (the protocol allows
 * it). Up to MAX_INFLIGHT requests or MAX_INFLIGHT_BYTES of payload may be in flight, and up to
 * MAX_QUEUED_REPLY_BYTES of replies queued on the socket (a client that does not read them); beyond that
 * the socket is not read until they drain, and TCP pushes back.
 *
 * A bad request magic, or a WRITE whose payload is over 32 MiB, ends the connection after the replies of the
 * requests before it; requests in flight are answered before the connection closes (drained()).
 */
import type { Socket } from "node:net";
import type { ByteReader } from "./byte-reader.js";
import type { NbdExport } from "./export.js";
import type { Session } from "./handshake.js";
import type { NbdPort } from "./port.js";
import { Cmd, decodeRequest, MAX_REQUEST_LENGTH, type Request, REQUEST_LENGTH } from "./protocol.js";
import { oversizedWrite, RequestCore } from "./request-core.js";

/** Requests one connection may have in flight. */
export const MAX_INFLIGHT = 128;
/** Payload bytes (write data received, read data asked for) one connection may have in flight. */
export const MAX_INFLIGHT_BYTES = 64 << 20;
/** Bytes of replies queued on the socket above which it is no longer read. */
const MAX_QUEUED_REPLY_BYTES = 32 << 20;
/** Replies of one batch up to this size are copied into one buffer (one write); larger ones go as a writev. */
const GATHER_LIMIT = 64 << 10;

/** How the request loop ended. */
export type TransmissionEnd = { end: "disconnect" } | { end: "closed" } | { end: "protocol"; message: string };

/** A WRITE whose payload is still arriving. */
interface PartialWrite {
  req: Request;
  /** Gathers the payload: `filled` bytes have arrived (none yet: not allocated, see onData). */
  payload: Buffer | undefined;
  filled: number;
}

export class Transmission {
  private readonly core: RequestCore;
  private readonly port: NbdPort;
  private finished = false;
  private finish!: (end: TransmissionEnd) => void;
  private readonly ended: Promise<TransmissionEnd>;
  /** Received bytes not yet served (a partial request header, or the rest of a read while paused). */
  private pending: Buffer | undefined;
  private partial: PartialWrite | undefined;
  /** Replies pushed and not yet written. */
  private out: Uint8Array[] = [];
  private outBytes = 0;
  private paused = false;
  /** Serving the requests of one socket read: replies are written at its end. */
  private inBatch = false;
  private flushScheduled = false;
  private inflight = 0;
  private inflightBytes = 0;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    exp: NbdExport,
    session: Session,
    log: (message: string) => void = () => {},
    /**
     * Write the replies once every read of this turn of the event loop has been served, not after each
     * read. For a TLS socket, which hands over each TLS record as a read of its own (a client's request
     * header and its payload are often two), so that the replies of one socket read still go out together.
     */
    private readonly coalesceReplies = false,
  ) {
    this.port = exp.port;
    this.core = new RequestCore(exp, session, { push: (b) => this.push(b) }, log);
    this.ended = new Promise((r) => (this.finish = r));
  }

  /** Requests being served now. */
  get requestsInFlight(): number {
    return this.inflight;
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

  /** From now on every request gets ESHUTDOWN; resolves when those in flight have been answered. */
  stop(): Promise<void> {
    this.core.stopping = true;
    return this.drained();
  }

  /** Resolves when no request is in flight. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
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

  private readonly onDrain = (): void => this.resumeIfBelowLimits();

  /** Reads again once the requests in flight and the queued replies are below their limits. */
  private resumeIfBelowLimits(): void {
    if (!this.paused || this.finished || this.overLimits()) return;
    this.paused = false;
    const p = this.pending;
    this.pending = undefined;
    if (p) this.serveBytes(p);
    if (!this.finished && !this.paused) this.socket.resume();
  }

  private overLimits(): boolean {
    return (
      this.inflight >= MAX_INFLIGHT ||
      (this.inflight > 0 && this.inflightBytes >= MAX_INFLIGHT_BYTES) ||
      this.socket.writableLength + this.outBytes > MAX_QUEUED_REPLY_BYTES
    );
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.finished) return;
    let buf = chunk;
    const partial = this.partial;
    if (partial) {
      const length = partial.req.length;
      let payload = partial.payload;
      let n: number;
      if (!payload && chunk.length >= length) {
        // The whole payload in this read (over TLS, a client's payload record): a view, no copy.
        payload = chunk.subarray(0, length);
        n = length;
      } else {
        payload ??= Buffer.allocUnsafe(length);
        n = Math.min(chunk.length, length - partial.filled);
        chunk.copy(payload, partial.filled, 0, n);
        partial.payload = payload;
        partial.filled += n;
        if (partial.filled < length) return;
      }
      this.partial = undefined;
      buf = chunk.subarray(n);
      this.inBatch = true;
      this.execute(partial.req, payload);
    } else if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    this.serveBytes(buf);
  };

  /** Serves every complete request in `buf`, keeps the rest, ends the batch and writes its replies. */
  private serveBytes(buf: Buffer): void {
    this.inBatch = true;
    this.decodeAndServe(buf);
    this.inBatch = false;
    this.port.endOfBatch?.();
    if (!this.coalesceReplies) this.flushReplies();
    else this.scheduleFlush(true);
  }

  private decodeAndServe(buf: Buffer): void {
    let pos = 0;
    while (!this.finished) {
      if (this.overLimits()) {
        if (pos < buf.length) this.pending = buf.subarray(pos);
        this.paused = true;
        this.socket.pause();
        return;
      }
      const left = buf.length - pos;
      if (left < REQUEST_LENGTH) {
        if (left > 0) this.pending = Buffer.from(buf.subarray(pos));
        return;
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
          this.core.refuse(req, oversizedWrite(req));
          this.end({ end: "protocol", message: `NBD_CMD_WRITE with ${req.length} bytes of payload` });
          return;
        }
        if (buf.length - pos >= req.length) {
          payload = buf.subarray(pos, pos + req.length);
          pos += req.length;
        } else if (pos === buf.length) {
          this.partial = { req, payload: undefined, filled: 0 };
          return;
        } else {
          const p = Buffer.allocUnsafe(req.length);
          const n = buf.copy(p, 0, pos);
          this.partial = { req, payload: p, filled: n };
          return;
        }
      }
      if (req.type === Cmd.DISC) {
        this.end({ end: "disconnect" });
        return;
      }
      this.execute(req, payload);
    }
  }

  /** Hands one request to the core; one answered later is in flight until its reply is pushed. */
  private execute(req: Request, payload: Buffer | undefined): void {
    const later = this.core.serve(req, payload);
    if (!later) return;
    const bytes = req.type === Cmd.READ || req.type === Cmd.WRITE ? Math.min(req.length, MAX_REQUEST_LENGTH) : 0;
    this.inflight++;
    this.inflightBytes += bytes;
    void later.then(() => {
      this.inflight--;
      this.inflightBytes -= bytes;
      if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
      this.resumeIfBelowLimits();
    });
  }

  private push(b: Uint8Array): void {
    this.out.push(b);
    this.outBytes += b.byteLength;
    // A reply that came later (outside a batch) goes out once the answers that came with it are in.
    if (!this.inBatch) this.scheduleFlush(false);
  }

  /** Writes the replies soon: after the microtasks of the answers that came together, or (`late`) in the check phase. */
  private scheduleFlush(late: boolean): void {
    if (this.flushScheduled || this.out.length === 0) return;
    this.flushScheduled = true;
    // The check phase follows the poll phase whose reads queued these replies: no added wait.
    if (late) setImmediate(this.scheduledFlush);
    else queueMicrotask(this.scheduledFlush);
  }

  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flushReplies();
  };

  /** Writes the replies pushed so far: one buffer when small, else one corked run of writes (a writev). */
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
