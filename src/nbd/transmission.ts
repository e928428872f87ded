/**
 * The transmission phase of one NBD connection (see protocol.ts): requests are read one after the other and
 * handed to the served image without waiting for the previous ones, so many are in flight at once (up to
 * MAX_INFLIGHT requests or MAX_INFLIGHT_BYTES of payload; beyond that the connection stops reading and TCP
 * pushes back). Each reply is written when its request completes, carrying the client's handle: replies may
 * come out of order. The socket's event loop never waits on disk I/O: the engine runs in its worker thread
 * behind the DiskClient, which serves the requests of every connection in submission order.
 *
 * Durability: a WRITE with FUA is answered after a flush submitted right behind it has completed (the flush
 * covers it: one engine, FIFO order), unless the cache mode is writethrough (every write is durable when it
 * completes). FLUSH flushes the whole image, so it covers every write any connection saw completed.
 *
 * Errors are the protocol's (protocol.ts): EPERM for a write, trim or write-zeroes on a read-only export;
 * ENOSPC for a write past the end, EINVAL for a read, trim, cache or block status past the end or an unknown
 * command or flag; EOVERFLOW for a structured read over 32 MiB; ENOTSUP for a FAST_ZERO write-zeroes that
 * would write data; ESHUTDOWN once the server is stopping. A bad request magic, or a WRITE whose payload is
 * over 32 MiB, ends the connection after the requests in flight have been answered.
 */
import type { Socket } from "node:net";
import type { ByteReader } from "./byte-reader.js";
import type { BlockExtent, DiskClient } from "../worker/disk-client.js";
import { errnoOf, type InlineDisk, type NbdExport } from "./export.js";
import type { Session } from "./handshake.js";
import type { MetaContext } from "./meta-context.js";
import {
  BaseAllocation,
  DirtyBitmap,
  Cmd,
  CmdFlag,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
  encodeStructuredChunk,
  Err,
  type Extent,
  ERR_NAMES,
  type Handle,
  MAX_REQUEST_LENGTH,
  OFFSET_DATA_PREFIX,
  ReplyFlag,
  ReplyType,
  type Request,
  REQUEST_LENGTH,
  SIMPLE_REPLY_LENGTH,
  writeOffsetDataPrefix,
  writeSimpleReply,
} from "./protocol.js";

/** Requests one connection may have in flight. */
export const MAX_INFLIGHT = 128;
/** Payload bytes (write data received, read data asked for) one connection may have in flight. */
export const MAX_INFLIGHT_BYTES = 64 << 20;
/** Bytes of replies queued on the socket above which no more requests are read. */
const MAX_QUEUED_REPLY_BYTES = 32 << 20;
/** Extents in one BLOCK_STATUS reply. */
export const MAX_EXTENTS = 1024;
/** Granularity of the zero runs a structured read may turn into holes. */
const HOLE_GRANULE = 4096;

/** Flags each command accepts. */
export const ALLOWED_FLAGS: Record<number, number> = {
  [Cmd.READ]: CmdFlag.DF,
  [Cmd.WRITE]: CmdFlag.FUA,
  [Cmd.DISC]: 0,
  [Cmd.FLUSH]: 0,
  [Cmd.TRIM]: CmdFlag.FUA,
  [Cmd.CACHE]: 0,
  [Cmd.WRITE_ZEROES]: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
  [Cmd.BLOCK_STATUS]: CmdFlag.REQ_ONE,
};

/** How the request loop ended. */
export type TransmissionEnd = { end: "disconnect" } | { end: "closed" } | { end: "protocol"; message: string };

/** A request refused before it reached the disk. */
export class Refusal {
  constructor(
    readonly errno: number,
    readonly message: string,
  ) {}
}

const ZEROES = Buffer.alloc(64 << 10);

/** True when `b` holds only zero bytes. */
export function isAllZero(b: Uint8Array): boolean {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 0; at < buf.length; at += ZEROES.length) {
    const n = Math.min(ZEROES.length, buf.length - at);
    if (ZEROES.compare(buf, at, at + n, 0, n) !== 0) return false;
  }
  return true;
}

export class Transmission {
  private inflight = 0;
  private inflightBytes = 0;
  private wake: (() => void) | undefined;
  private drainWaiters: Array<() => void> = [];
  private stopping = false;
  private readonly disk: DiskClient;

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    private readonly exp: NbdExport,
    private readonly session: Session,
    private readonly log: (message: string) => void = () => {},
  ) {
    if ("inline" in exp.disk) throw new Error("internal: an inline disk is served by InlineTransmission");
    this.disk = exp.disk;
    socket.on("drain", () => this.signal());
    // A client that stops reading replies holds the loop below until its socket closes.
    socket.on("close", () => this.signal());
  }

  /** Requests being served now. */
  get requestsInFlight(): number {
    return this.inflight;
  }

  /** Reads and dispatches requests until the client disconnects, closes, or breaks the protocol. */
  async run(): Promise<TransmissionEnd> {
    for (;;) {
      while (
        this.inflight >= MAX_INFLIGHT ||
        (this.inflight > 0 && this.inflightBytes >= MAX_INFLIGHT_BYTES) ||
        this.socket.writableLength > MAX_QUEUED_REPLY_BYTES
      ) {
        if (this.socket.destroyed) return { end: "closed" };
        await new Promise<void>((r) => (this.wake = r));
      }
      const hb = await this.reader.exact(REQUEST_LENGTH);
      if (!hb) return { end: "closed" };
      let req: Request;
      try {
        req = decodeRequest(hb);
      } catch (e) {
        return { end: "protocol", message: (e as Error).message };
      }
      let payload: Buffer | undefined;
      if (req.type === Cmd.WRITE) {
        if (req.length > MAX_REQUEST_LENGTH) {
          // The payload cannot be skipped at a reasonable cost: answer, then end the connection.
          this.replyError(req, Err.EINVAL, `write of ${req.length} bytes is over the ${MAX_REQUEST_LENGTH}-byte limit`);
          return { end: "protocol", message: `NBD_CMD_WRITE with ${req.length} bytes of payload` };
        }
        const p = await this.reader.exact(req.length);
        if (!p) return { end: "closed" };
        payload = p;
      }
      if (req.type === Cmd.DISC) return { end: "disconnect" };
      this.dispatch(req, payload);
    }
  }

  /**
   * From now on every request gets ESHUTDOWN; resolves when those in flight have been answered. The
   * caller then closes the socket.
   */
  stop(): Promise<void> {
    this.stopping = true;
    return this.drained();
  }

  /** Resolves when no request is in flight. */
  drained(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  private signal(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private dispatch(req: Request, payload: Buffer | undefined): void {
    const bytes = req.type === Cmd.READ || req.type === Cmd.WRITE ? Math.min(req.length, MAX_REQUEST_LENGTH) : 0;
    this.inflight++;
    this.inflightBytes += bytes;
    this.serve(req, payload)
      .catch((e: unknown) => {
        if (e instanceof Refusal) {
          this.replyError(req, e.errno, e.message);
          return;
        }
        // JavaScript's own error types here are bugs of the server, not answers of the engine: say so.
        if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || /^internal| failed in the worker: /.test((e as Error)?.message ?? "")) {
          this.log(`internal error: ${(e as Error).name}: ${(e as Error).message}`);
        }
        this.replyError(req, errnoOf(e), (e as Error)?.message ?? String(e));
      })
      .finally(() => {
        this.inflight--;
        this.inflightBytes -= bytes;
        this.signal();
        if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
      });
  }

  private async serve(req: Request, payload: Buffer | undefined): Promise<void> {
    const { type, flags, offset, length } = req;
    const exp = this.exp;
    const disk = this.disk;
    const refused = refusalOf(req, exp, this.session, disk.size, this.stopping);
    if (refused) throw refused;
    const fua = (flags & CmdFlag.FUA) !== 0 && exp.cache !== "writethrough";

    switch (type) {
      case Cmd.READ:
        return this.session.structured ? this.structuredRead(req) : this.simpleRead(req);
      case Cmd.WRITE: {
        const data = payload!;
        const done =
          exp.detectZeroes !== "off" && isAllZero(data)
            ? disk.writeZeroes(offset, length, { unmap: exp.detectZeroes === "unmap" })
            : disk.write(offset, data);
        await this.withFua(done, fua);
        return this.replyOk(req);
      }
      case Cmd.WRITE_ZEROES: {
        const unmap = (flags & CmdFlag.NO_HOLE) === 0 && exp.discard === "unmap";
        await this.withFua(disk.writeZeroes(offset, length, { unmap }), fua);
        return this.replyOk(req);
      }
      case Cmd.TRIM:
        if (exp.discard === "unmap") await this.withFua(disk.discard(offset, length), fua);
        return this.replyOk(req);
      case Cmd.FLUSH:
        await disk.flush();
        return this.replyOk(req);
      case Cmd.CACHE:
        return this.replyOk(req);
      case Cmd.BLOCK_STATUS: {
        const contexts = this.session.contexts;
        const max = flags & CmdFlag.REQ_ONE ? 1 : MAX_EXTENTS;
        // Submitted together, answered in the engine's order; the reply goes out when all have come.
        const answers = await Promise.all(contexts.map((c) => contextExtents(disk, c, offset, length, max)));
        this.send(...blockStatusChunks(req, contexts, answers));
        return;
      }
      default:
        throw new Refusal(Err.EINVAL, `command ${type} is not supported`);
    }
  }

  private async withFua(op: Promise<void>, fua: boolean): Promise<void> {
    if (!fua) return op;
    // Submitted together: the flush runs right after the operation in the engine's FIFO order.
    await Promise.all([op, this.disk.flush()]);
  }

  private async simpleRead(req: Request): Promise<void> {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH + req.length);
    await this.disk.readInto(buf.subarray(SIMPLE_REPLY_LENGTH), req.offset);
    writeSimpleReply(buf, 0, Err.OK, req.handle);
    this.send(buf);
  }

  /**
   * A structured read: one OFFSET_DATA chunk, except that ranges the engine reports as reading zeroes (and
   * that did read as zeroes) go as OFFSET_HOLE chunks. The block status is asked only when the data has
   * zero runs, so a read of data costs one engine request.
   */
  private async structuredRead(req: Request): Promise<void> {
    const { handle, offset, length } = req;
    const buf = Buffer.allocUnsafe(OFFSET_DATA_PREFIX + length);
    const data = buf.subarray(OFFSET_DATA_PREFIX);
    await this.disk.readInto(data, offset);
    const df = (req.flags & CmdFlag.DF) !== 0;
    if (df || length === 0 || !hasZeroGranule(data, offset)) {
      if (length === 0) {
        this.send(encodeStructuredChunk(handle, ReplyType.NONE, ReplyFlag.DONE, new Uint8Array(0)));
        return;
      }
      writeOffsetDataPrefix(buf, 0, handle, ReplyFlag.DONE, offset, length);
      this.send(buf);
      return;
    }
    const extents = await this.disk.blockStatus(offset, length, MAX_EXTENTS);
    this.send(...holeReadChunks(req, data, extents));
  }

  private replyOk(req: Request): void {
    this.send(encodeSimpleReply(Err.OK, req.handle));
  }

  private replyError(req: Request, errno: number, message: string): void {
    this.log(`request ${req.type} at ${req.offset}+${req.length}: ${ERR_NAMES[errno] ?? errno}: ${message}`);
    if (this.session.structured && (req.type === Cmd.READ || req.type === Cmd.BLOCK_STATUS)) {
      this.send(encodeErrorChunk(req.handle as Handle, errno, message));
    } else {
      this.send(encodeSimpleReply(errno, req.handle));
    }
  }

  /** Writes the pieces of one reply back to back (a reply is never interleaved with another). */
  private send(...pieces: Uint8Array[]): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    if (pieces.length === 1) {
      this.socket.write(pieces[0]!);
      return;
    }
    this.socket.cork();
    for (const p of pieces) this.socket.write(p);
    this.socket.uncork();
  }
}

/** Whether `data` (at disk offset `offset`) has an all-zero aligned HOLE_GRANULE block. */
export function hasZeroGranule(data: Uint8Array, offset: number): boolean {
  let at = (HOLE_GRANULE - (offset % HOLE_GRANULE)) % HOLE_GRANULE;
  for (; at + HOLE_GRANULE <= data.length; at += HOLE_GRANULE) {
    if (isAllZero(data.subarray(at, at + HOLE_GRANULE))) return true;
  }
  return false;
}

/**
 * Why a request is refused before it reaches the disk (undefined: it is served). The checks, in this order:
 * the server stopping, the command and its flags, a write to a read-only export, then each command's range
 * and context rules.
 */
export function refusalOf(req: Request, exp: NbdExport, session: Session, size: number, stopping: boolean): Refusal | undefined {
  const { type, flags, offset, length } = req;
  if (stopping) return new Refusal(Err.ESHUTDOWN, "the server is shutting down");
  const allowed = ALLOWED_FLAGS[type];
  if (allowed === undefined) return new Refusal(Err.EINVAL, `unknown command ${type}`);
  if (flags & ~allowed) return new Refusal(Err.EINVAL, `flags 0x${flags.toString(16)} are not valid for command ${type}`);
  const writes = type === Cmd.WRITE || type === Cmd.WRITE_ZEROES || type === Cmd.TRIM;
  if (writes && exp.readOnly) return new Refusal(Err.EPERM, "the export is read-only");
  const pastEnd = !(offset + length <= size);
  switch (type) {
    case Cmd.READ:
      if (length > MAX_REQUEST_LENGTH) {
        return new Refusal(session.structured ? Err.EOVERFLOW : Err.EINVAL, `read of ${length} bytes is over the limit`);
      }
      if (pastEnd) return new Refusal(Err.EINVAL, "read past the end of the export");
      return undefined;
    case Cmd.WRITE:
      if (pastEnd) return new Refusal(Err.ENOSPC, "write past the end of the export");
      return undefined;
    case Cmd.WRITE_ZEROES:
      if (pastEnd) return new Refusal(Err.ENOSPC, "write zeroes past the end of the export");
      if (flags & CmdFlag.FAST_ZERO && !(exp.fastZero?.(offset, length) ?? false)) {
        return new Refusal(Err.ENOTSUP, "zeroing this range would write data");
      }
      return undefined;
    case Cmd.TRIM:
      if (pastEnd) return new Refusal(Err.EINVAL, "trim past the end of the export");
      return undefined;
    case Cmd.FLUSH:
      return undefined;
    case Cmd.CACHE:
      if (pastEnd) return new Refusal(Err.EINVAL, "cache past the end of the export");
      return undefined;
    case Cmd.BLOCK_STATUS:
      if (session.contexts.length === 0) return new Refusal(Err.EINVAL, "no metadata context was negotiated");
      if (length === 0) return new Refusal(Err.EINVAL, "block status of an empty range");
      if (pastEnd) return new Refusal(Err.EINVAL, "block status past the end of the export");
      return undefined;
    default:
      return new Refusal(Err.EINVAL, `command ${type} is not supported`);
  }
}

/**
 * The extents of one metadata context for [offset, offset + length), at most `maxExtents`, as they go on the
 * wire. Asked of either kind of disk: an InlineDisk answers at once, a DiskClient with a promise.
 */
export function contextExtents(disk: InlineDisk, ctx: MetaContext, offset: number, length: number, maxExtents: number): Extent[];
export function contextExtents(disk: DiskClient, ctx: MetaContext, offset: number, length: number, maxExtents: number): Promise<Extent[]>;
export function contextExtents(disk: InlineDisk | DiskClient, ctx: MetaContext, offset: number, length: number, maxExtents: number): Extent[] | Promise<Extent[]> {
  switch (ctx.kind) {
    case "base:allocation":
      return mapAnswer(disk.blockStatus(offset, length, maxExtents), (es) => es.map(allocationExtent));
    case "qemu:allocation-depth":
      return mapAnswer(disk.allocationDepth(offset, length, maxExtents), (es) => es.map((e) => ({ length: e.length, flags: e.depth })));
    case "qemu:dirty-bitmap":
      return mapAnswer(disk.dirtyExtents(ctx.bitmap, offset, length, maxExtents), (es) =>
        es.map((e) => ({ length: e.length, flags: e.dirty ? DirtyBitmap.STATE_DIRTY : 0 })),
      );
  }
}

function allocationExtent(e: BlockExtent): Extent {
  return { length: e.length, flags: (e.data ? 0 : BaseAllocation.STATE_HOLE) | (e.zero ? BaseAllocation.STATE_ZERO : 0) };
}

function mapAnswer<T, U>(v: T | Promise<T>, f: (t: T) => U): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** The reply to a BLOCK_STATUS: one chunk per selected context (`answers[i]` the extents of `contexts[i]`), the last with DONE. */
export function blockStatusChunks(req: Request, contexts: readonly MetaContext[], answers: readonly Extent[][]): Uint8Array[] {
  return contexts.map((c, i) => encodeBlockStatusChunk(req.handle, i === contexts.length - 1 ? ReplyFlag.DONE : 0, c.id, answers[i]!));
}

/**
 * The chunks of a structured read whose data (read at req.offset) has zero runs: ranges the extents report
 * as reading zeroes, and that did read as zeroes, become OFFSET_HOLE chunks, the rest OFFSET_DATA chunks
 * (views on `data`); the last has DONE.
 */
export function holeReadChunks(req: Request, data: Uint8Array, extents: readonly BlockExtent[]): Uint8Array[] {
  const { handle, offset, length } = req;
  // Pieces of the reply: [start, end) relative to `offset`, hole or data; the part past the extents is data.
  const pieces: { start: number; end: number; hole: boolean }[] = [];
  const add = (start: number, end: number, hole: boolean): void => {
    const last = pieces[pieces.length - 1];
    if (last && last.hole === hole && last.end === start) last.end = end;
    else pieces.push({ start, end, hole });
  };
  let at = 0;
  for (const e of extents) {
    const end = Math.min(length, at + e.length);
    if (e.zero && isAllZero(data.subarray(at, end))) add(at, end, true);
    else add(at, end, false);
    at = end;
  }
  if (at < length) add(at, length, false);
  const chunks: Uint8Array[] = [];
  pieces.forEach((p, i) => {
    const last = i === pieces.length - 1 ? ReplyFlag.DONE : 0;
    if (p.hole) {
      chunks.push(encodeOffsetHoleChunk(handle, last, offset + p.start, p.end - p.start));
    } else {
      const head = Buffer.allocUnsafe(OFFSET_DATA_PREFIX);
      writeOffsetDataPrefix(head, 0, handle, last, offset + p.start, p.end - p.start);
      chunks.push(head, data.subarray(p.start, p.end));
    }
  });
  return chunks;
}
