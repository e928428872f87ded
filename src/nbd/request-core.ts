/**
 * The NBD request core: one path for every request of the transmission phase (protocol.ts), whichever port
 * serves it (port.ts) — refuse, dispatch to the port, reply. The connection (transmission.ts) decodes the
 * requests from the socket's bytes and sends the replies the core pushes to its sink.
 *
 * Refusals (refusalOf), checked in this order: the server stopping (ESHUTDOWN), an unknown command (EINVAL)
 * or flags it does not take (EINVAL), a write, trim or write-zeroes on a read-only export (EPERM), then each
 * command's rules: ENOSPC for a write past the end, EINVAL for a read, trim, cache or block status past the
 * end, EOVERFLOW for a structured read over 32 MiB (EINVAL unstructured), ENOTSUP for a FAST_ZERO
 * write-zeroes that would write data, EINVAL for a block status with no context negotiated.
 *
 * Durability: a WRITE, WRITE_ZEROES or TRIM is durable when answered if it has FUA or the cache mode is
 * writethrough (the port makes it so: inline-port.ts and ring-port.ts); FLUSH flushes the whole image, so it
 * covers every write any connection saw answered (one image, one owner).
 *
 * Replies: a request answered at once pushes its reply before serve() returns; one answered later pushes it
 * when its answer comes, then the promise serve() returned settles. The pieces of one reply are pushed back
 * to back (a reply is never interleaved with another). serve() never throws or rejects: a failure is the
 * request's error reply, and JavaScript's own error types (bugs of the server, not answers of the engine)
 * are logged as internal errors too.
 */
import { errnoOf, type NbdExport } from "./export.js";
import type { Session } from "./handshake.js";
import { andThen, type Answer, type NbdPort } from "./port.js";
import {
  Cmd,
  CmdFlag,
  encodeErrorChunk,
  encodeStructuredChunk,
  Err,
  ERR_NAMES,
  type Extent,
  type Handle,
  MAX_REQUEST_LENGTH,
  OFFSET_DATA_PREFIX,
  ReplyFlag,
  ReplyType,
  type Request,
  SIMPLE_REPLY_LENGTH,
  SIMPLE_REPLY_MAGIC,
  writeOffsetDataPrefix,
} from "./protocol.js";
import { blockStatusChunks, contextExtents, hasZeroGranule, holeReadChunks, isAllZero } from "./replies.js";

/** Extents in one BLOCK_STATUS reply. */
export const MAX_EXTENTS = 1024;

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

/** A request refused before it reached the port. */
export class Refusal {
  constructor(
    readonly errno: number,
    readonly message: string,
  ) {}
}

/** Where the core's replies go: the pieces of one reply are pushed back to back. */
export interface ReplySink {
  push(piece: Uint8Array): void;
}

export class RequestCore {
  private readonly port: NbdPort;
  /** From now on every request gets ESHUTDOWN. */
  stopping = false;

  constructor(
    private readonly exp: NbdExport,
    private readonly session: Session,
    private readonly sink: ReplySink,
    private readonly log: (message: string) => void = () => {},
  ) {
    this.port = exp.port;
  }

  /** Serves one request (`payload`: a WRITE's data); undefined when its reply is already pushed. */
  serve(req: Request, payload: Uint8Array | undefined): Promise<void> | undefined {
    const refused = refusalOf(req, this.exp, this.session, this.port.size, this.stopping);
    if (refused) {
      this.replyError(req, refused.errno, refused.message);
      return undefined;
    }
    let answer: Answer<void>;
    try {
      answer = this.dispatch(req, payload);
    } catch (e) {
      this.failed(req, e);
      return undefined;
    }
    return answer instanceof Promise ? answer.catch((e: unknown) => this.failed(req, e)) : undefined;
  }

  /** Answers `req` with the refusal's error (a request the connection refuses before decoding its payload). */
  refuse(req: Request, r: Refusal): void {
    this.replyError(req, r.errno, r.message);
  }

  private dispatch(req: Request, payload: Uint8Array | undefined): Answer<void> {
    const { type, flags, offset, length } = req;
    const exp = this.exp;
    const port = this.port;
    const durable = (flags & CmdFlag.FUA) !== 0 || exp.cache === "writethrough";
    switch (type) {
      case Cmd.READ:
        return this.session.structured ? this.structuredRead(req) : this.simpleRead(req);
      case Cmd.WRITE: {
        const data = payload!;
        const done =
          exp.detectZeroes !== "off" && isAllZero(data)
            ? port.writeZeroes(offset, length, exp.detectZeroes === "unmap", durable)
            : port.write(offset, data, durable);
        return this.okWhenDone(req, done);
      }
      case Cmd.WRITE_ZEROES: {
        const unmap = (flags & CmdFlag.NO_HOLE) === 0 && exp.discard === "unmap";
        return this.okWhenDone(req, port.writeZeroes(offset, length, unmap, durable));
      }
      case Cmd.TRIM:
        if (exp.discard === "unmap") return this.okWhenDone(req, port.discard(offset, length, durable));
        return this.replyOk(req);
      case Cmd.FLUSH:
        return this.okWhenDone(req, port.flush());
      case Cmd.CACHE:
        return this.replyOk(req);
      case Cmd.BLOCK_STATUS: {
        const contexts = this.session.contexts;
        const max = flags & CmdFlag.REQ_ONE ? 1 : MAX_EXTENTS;
        const answers = contexts.map((c) => contextExtents(port, c, offset, length, max));
        const reply = (extents: Extent[][]): void => {
          for (const chunk of blockStatusChunks(req, contexts, extents)) this.sink.push(chunk);
        };
        // Asked together, answered in the port's order; the reply goes out when all have come.
        if (answers.some((a) => a instanceof Promise)) return Promise.all(answers).then(reply);
        return reply(answers as Extent[][]);
      }
      default:
        return this.replyError(req, Err.EINVAL, `command ${type} is not supported`);
    }
  }

  /** The OK reply once `done` has come (at once, with no closure, for an answer now: the inline hot path). */
  private okWhenDone(req: Request, done: Answer<void>): Answer<void> {
    if (!(done instanceof Promise)) return this.replyOk(req);
    return done.then(() => this.replyOk(req));
  }

  private simpleRead(req: Request): Answer<void> {
    const buf = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH + req.length);
    return andThen(this.port.readInto(buf.subarray(SIMPLE_REPLY_LENGTH), req.offset), () => {
      writeSimpleReply(buf, Err.OK, req.handle);
      this.sink.push(buf);
    });
  }

  /**
   * A structured read: one OFFSET_DATA chunk, except that ranges the port reports as reading zeroes (and that
   * did read as zeroes) go as OFFSET_HOLE chunks. The block status is asked only when the data has zero runs,
   * so a read of data costs one request of the port.
   */
  private structuredRead(req: Request): Answer<void> {
    const { handle, offset, length } = req;
    if (length === 0) {
      this.sink.push(encodeStructuredChunk(handle, ReplyType.NONE, ReplyFlag.DONE, new Uint8Array(0)));
      return;
    }
    const buf = Buffer.allocUnsafe(OFFSET_DATA_PREFIX + length);
    const data = buf.subarray(OFFSET_DATA_PREFIX);
    return andThen(this.port.readInto(data, offset), () => {
      if ((req.flags & CmdFlag.DF) !== 0 || !hasZeroGranule(data, offset)) {
        writeOffsetDataPrefix(buf, 0, handle, ReplyFlag.DONE, offset, length);
        this.sink.push(buf);
        return;
      }
      return andThen(this.port.blockStatus(offset, length, MAX_EXTENTS), (extents) => {
        for (const c of holeReadChunks(req, data, extents)) this.sink.push(c);
      });
    });
  }

  private replyOk(req: Request): void {
    const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
    writeSimpleReply(b, Err.OK, req.handle);
    this.sink.push(b);
  }

  private failed(req: Request, e: unknown): void {
    const message = (e as Error)?.message ?? String(e);
    if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || /^internal| failed in the worker: /.test(message)) {
      this.log(`internal error: ${(e as Error).name}: ${message}`);
    }
    this.replyError(req, errnoOf(e), message);
  }

  private replyError(req: Request, errno: number, message: string): void {
    this.log(`request ${req.type} at ${req.offset}+${req.length}: ${ERR_NAMES[errno] ?? errno}: ${message}`);
    if (this.session.structured && (req.type === Cmd.READ || req.type === Cmd.BLOCK_STATUS)) {
      this.sink.push(encodeErrorChunk(req.handle as Handle, errno, message));
    } else {
      const b = Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH);
      writeSimpleReply(b, errno, req.handle);
      this.sink.push(b);
    }
  }
}

/** A simple reply header at the start of `b`. */
function writeSimpleReply(b: Buffer, error: number, handle: Handle): void {
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(handle, 8);
}

/**
 * Why a request is refused before it reaches the port (undefined: it is served). The checks, in this order:
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

/** The error reply for a WRITE whose payload is over the protocol's limit (the connection then ends). */
export function oversizedWrite(req: Request): Refusal {
  return new Refusal(Err.EINVAL, `write of ${req.length} bytes is over the ${MAX_REQUEST_LENGTH}-byte limit`);
}
