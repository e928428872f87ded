/**
 * The NBD wire format (the NBD protocol, doc/proto.md of the NetworkBlockDevice project): constants and pure
 * encoders/decoders for the fixed newstyle handshake and the transmission phase. No I/O here; the server
 * (server.ts) and any client build on it. All integers are big-endian (network order).
 *
 * ## Handshake (fixed newstyle)
 *
 * ```
 * server → client  u64 NBDMAGIC "NBDMAGIC"  u64 IHAVEOPT "IHAVEOPT"  u16 handshake flags (FIXED_NEWSTYLE|NO_ZEROES)
 * client → server  u32 client flags (C_FIXED_NEWSTYLE, C_NO_ZEROES)
 * then, repeated:
 * client → server  option:        u64 IHAVEOPT  u32 option  u32 length  [length bytes of data]
 * server → client  option reply:  u64 REPLY_MAGIC  u32 option  u32 reply type  u32 length  [data]
 * ```
 *
 * Option data (client → server):
 * - EXPORT_NAME: the name (no length prefix; the option length is its length). Ends the handshake; the
 *   server answers with no option reply but `u64 size, u16 transmission flags` and, unless the client set
 *   C_NO_ZEROES, 124 zero bytes. On error the server can only close the connection.
 * - INFO / GO: `u32 name length, name, u16 n, n × u16 info type requested`. Replies: INFO chunks then ACK
 *   (GO: then transmission begins) or an error reply. INFO replies: `u16 type` then
 *   EXPORT `u64 size, u16 transmission flags`; NAME `name`; DESCRIPTION `text`;
 *   BLOCK_SIZE `u32 minimum, u32 preferred, u32 maximum`. EXPORT is sent whatever was asked.
 * - LIST: no data. One SERVER reply per export (`u32 name length, name, [description]`), then ACK.
 * - ABORT: no data. The server may ACK, then closes.
 * - STARTTLS: no data. ACK (in the clear), then a TLS handshake on the same stream and the options start
 *   over inside TLS (tls.ts). A server that requires TLS answers every other option but ABORT with
 *   ERR_TLS_REQD until then.
 * - STRUCTURED_REPLY: no data. ACK; from then on the server may (and for BLOCK_STATUS must) send structured
 *   replies.
 * - LIST_META_CONTEXT / SET_META_CONTEXT: `u32 export name length, name, u32 n queries, n × (u32 length,
 *   query)`. Replies: one META_CONTEXT (`u32 context id, context name`) per matching context, then ACK. SET
 *   selects the contexts for BLOCK_STATUS (and replaces the previous selection, even when it fails), each
 *   with an id unique in the connection; LIST with no query lists all contexts, its ids are 0. A query is
 *   `namespace:leaf`; an empty leaf is a wildcard for LIST and selects nothing in SET; a query of an
 *   unknown namespace or leaf matches nothing and is no error. Contexts (meta-context.ts): `base:allocation`,
 *   and QEMU's (docs/interop/nbd.rst) `qemu:allocation-depth` and `qemu:dirty-bitmap:NAME`.
 * Error replies have bit 31 set and carry an optional UTF-8 message.
 *
 * ## Transmission
 *
 * ```
 * request (28 bytes):       u32 REQUEST_MAGIC  u16 command flags  u16 type  u64 handle  u64 offset  u32 length
 *                           [WRITE: length bytes of data]
 * simple reply (16 bytes):  u32 SIMPLE_REPLY_MAGIC  u32 error  u64 handle   [READ without error: length bytes]
 * structured chunk (20 b.): u32 STRUCTURED_REPLY_MAGIC  u16 flags (DONE)  u16 type  u64 handle  u32 length
 *                           [length bytes of payload]
 * ```
 *
 * Structured payloads: OFFSET_DATA `u64 offset, data`; OFFSET_HOLE `u64 offset, u32 hole size` (reads as
 * zeroes); BLOCK_STATUS `u32 context id, n × (u32 extent length, u32 status flags)`, one chunk per selected
 * context, its extents consecutive from the request's offset (with REQ_ONE exactly one, no longer than the
 * request; else the last may pass the request's end, which refcow never does); ERROR `u32 error,
 * u16 message length, message`; ERROR_OFFSET `u32 error, u16 message length, message, u64 offset`; NONE
 * (empty, only with DONE). The last chunk of a reply has the DONE flag. Replies to different requests may be
 * interleaved and come in any order; the handle (cookie) pairs them with requests.
 *
 * Status flags of BLOCK_STATUS extents: base:allocation HOLE 1 (no data allocated), ZERO 2 (reads as
 * zeroes); qemu:dirty-bitmap:NAME DIRTY 1; qemu:allocation-depth the depth itself (0 unallocated, 1 the
 * image, 2 its backing file, ...).
 *
 * Errors are the protocol's numbers (Linux errno values): EPERM 1, EIO 5, ENOMEM 12, EINVAL 22, ENOSPC 28,
 * EOVERFLOW 75, ENOTSUP 95, ESHUTDOWN 108.
 */

// ----------------------------------------------------------------------------------------------------- magics

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --------------------------------------------------------------------------------------------------- handshake

/** Handshake flags (server → client, u16). */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags (client → server, u32). */
export const ClientFlag = {
  C_FIXED_NEWSTYLE: 1 << 0,
  C_NO_ZEROES: 1 << 1,
} as const;

/** Option types. */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const OPT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Opt).map(([k, v]) => [v, `NBD_OPT_${k}`]),
);

const REP_ERR = 0x80000000;

/** Option reply types. Errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: (REP_ERR | 1) >>> 0,
  ERR_POLICY: (REP_ERR | 2) >>> 0,
  ERR_INVALID: (REP_ERR | 3) >>> 0,
  ERR_PLATFORM: (REP_ERR | 4) >>> 0,
  ERR_TLS_REQD: (REP_ERR | 5) >>> 0,
  ERR_UNKNOWN: (REP_ERR | 6) >>> 0,
  ERR_SHUTDOWN: (REP_ERR | 7) >>> 0,
  ERR_BLOCK_SIZE_REQD: (REP_ERR | 8) >>> 0,
  ERR_TOO_BIG: (REP_ERR | 9) >>> 0,
  ERR_EXT_HEADER_REQD: (REP_ERR | 10) >>> 0,
} as const;

export function isErrorReply(type: number): boolean {
  return (type & REP_ERR) !== 0;
}

/** Info types of NBD_OPT_INFO / NBD_OPT_GO. */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (u16, sent with the export's size). */
export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

// ------------------------------------------------------------------------------------------------ transmission

/** Command types. */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const CMD_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Cmd).map(([k, v]) => [v, `NBD_CMD_${k}`]),
);

/** Command flags (u16). */
export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply chunk flags. */
export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

const REPLY_TYPE_ERR = 1 << 15;

/** Structured reply chunk types. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  BLOCK_STATUS_EXT: 6,
  ERROR: REPLY_TYPE_ERR | 1,
  ERROR_OFFSET: REPLY_TYPE_ERR | 2,
} as const;

export function isErrorChunk(type: number): boolean {
  return (type & REPLY_TYPE_ERR) !== 0;
}

/** Error values of replies (Linux errno numbers, as the protocol fixes them). */
export const Err = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export const ERR_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Err).map(([k, v]) => [v, k]));

/** The metadata context of the protocol itself, and its status flags. */
export const BASE_ALLOCATION = "base:allocation";
export const BaseAllocation = {
  STATE_HOLE: 1 << 0,
  STATE_ZERO: 1 << 1,
} as const;

/** QEMU's context: the status is the whole u32, the layer of the backing chain the data comes from. */
export const QEMU_ALLOCATION_DEPTH = "qemu:allocation-depth";
/** QEMU's contexts of persistent dirty bitmaps: this prefix, then the bitmap's name. */
export const QEMU_DIRTY_BITMAP = "qemu:dirty-bitmap:";
export const DirtyBitmap = {
  STATE_DIRTY: 1 << 0,
} as const;

/** Largest payload a request may carry or ask for (qemu-nbd's limit, and the protocol's advice). */
export const MAX_REQUEST_LENGTH = 32 << 20;
/** Largest option data the server reads (an option is read whole before it is parsed). */
export const MAX_OPTION_LENGTH = 64 << 10;
/** Longest string (export name, description, query) the protocol allows. */
export const MAX_STRING_LENGTH = 4096;

export const HANDSHAKE_LENGTH = 18;
export const OPTION_HEADER_LENGTH = 16;
export const OPTION_REPLY_HEADER_LENGTH = 20;
export const REQUEST_LENGTH = 28;
export const SIMPLE_REPLY_LENGTH = 16;
export const STRUCTURED_REPLY_HEADER_LENGTH = 20;
export const EXPORT_NAME_REPLY_LENGTH = 10;
export const EXPORT_NAME_ZEROES = 124;

// --------------------------------------------------------------------------------------------- codec helpers

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** A message could not be decoded (too short, wrong magic, inconsistent lengths). */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function need(b: Uint8Array, n: number, what: string): void {
  if (b.byteLength < n) throw new ProtocolError(`${what}: ${b.byteLength} bytes, need ${n}`);
}

/** Decodes UTF-8 strictly (the protocol requires valid UTF-8 strings). */
export function decodeString(b: Uint8Array, what = "string"): string {
  try {
    return utf8Strict.decode(b);
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
}

export function encodeString(s: string): Uint8Array {
  return utf8.encode(s);
}

/** Reads a u64 as a JS number; a value above 2^53 is a protocol error (no disk is that large). */
function u64(dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} ${v} is out of range`);
  return Number(v);
}

/** A u64 cookie kept as a bigint: clients choose any 64 bits, and replies must echo them exactly. */
export type Handle = bigint;

// ---------------------------------------------------------------------------------------------- handshake codec

export function encodeServerGreeting(flags: number): Uint8Array {
  const b = new Uint8Array(HANDSHAKE_LENGTH);
  const dv = view(b);
  dv.setBigUint64(0, NBDMAGIC);
  dv.setBigUint64(8, IHAVEOPT);
  dv.setUint16(16, flags);
  return b;
}

export function decodeServerGreeting(b: Uint8Array): { flags: number } {
  need(b, HANDSHAKE_LENGTH, "server greeting");
  const dv = view(b);
  if (dv.getBigUint64(0) !== NBDMAGIC) throw new ProtocolError("server greeting: bad NBDMAGIC");
  if (dv.getBigUint64(8) !== IHAVEOPT) throw new ProtocolError("server greeting: not a newstyle server");
  return { flags: dv.getUint16(16) };
}

export function encodeClientFlags(flags: number): Uint8Array {
  const b = new Uint8Array(4);
  view(b).setUint32(0, flags >>> 0);
  return b;
}

export function decodeClientFlags(b: Uint8Array): number {
  need(b, 4, "client flags");
  return view(b).getUint32(0);
}

export interface OptionHeader {
  option: number;
  length: number;
}

export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(OPTION_HEADER_LENGTH + data.byteLength);
  const dv = view(b);
  dv.setBigUint64(0, IHAVEOPT);
  dv.setUint32(8, option >>> 0);
  dv.setUint32(12, data.byteLength);
  b.set(data, OPTION_HEADER_LENGTH);
  return b;
}

export function decodeOptionHeader(b: Uint8Array): OptionHeader {
  need(b, OPTION_HEADER_LENGTH, "option header");
  const dv = view(b);
  if (dv.getBigUint64(0) !== IHAVEOPT) throw new ProtocolError("option header: bad IHAVEOPT magic");
  return { option: dv.getUint32(8), length: dv.getUint32(12) };
}

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

export function encodeOptionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(OPTION_REPLY_HEADER_LENGTH + data.byteLength);
  const dv = view(b);
  dv.setBigUint64(0, OPTION_REPLY_MAGIC);
  dv.setUint32(8, option >>> 0);
  dv.setUint32(12, type >>> 0);
  dv.setUint32(16, data.byteLength);
  b.set(data, OPTION_REPLY_HEADER_LENGTH);
  return b;
}

export function decodeOptionReplyHeader(b: Uint8Array): OptionReplyHeader {
  need(b, OPTION_REPLY_HEADER_LENGTH, "option reply header");
  const dv = view(b);
  if (dv.getBigUint64(0) !== OPTION_REPLY_MAGIC) throw new ProtocolError("option reply: bad magic");
  return { option: dv.getUint32(8), type: dv.getUint32(12), length: dv.getUint32(16) };
}

/** An error reply with a message. */
export function encodeOptionError(option: number, type: number, message: string): Uint8Array {
  return encodeOptionReply(option, type, encodeString(message));
}

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless `noZeroes`. */
export function encodeExportNameReply(size: number, txFlags: number, noZeroes: boolean): Uint8Array {
  const b = new Uint8Array(EXPORT_NAME_REPLY_LENGTH + (noZeroes ? 0 : EXPORT_NAME_ZEROES));
  const dv = view(b);
  dv.setBigUint64(0, BigInt(size));
  dv.setUint16(8, txFlags);
  return b;
}

export function decodeExportNameReply(b: Uint8Array): { size: number; txFlags: number } {
  need(b, EXPORT_NAME_REPLY_LENGTH, "export name reply");
  const dv = view(b);
  return { size: u64(dv, 0, "export size"), txFlags: dv.getUint16(8) };
}

/** Data of NBD_OPT_INFO and NBD_OPT_GO. */
export interface InfoRequest {
  name: string;
  infos: number[];
}

export function encodeInfoRequest(req: InfoRequest): Uint8Array {
  const name = encodeString(req.name);
  const b = new Uint8Array(4 + name.byteLength + 2 + 2 * req.infos.length);
  const dv = view(b);
  dv.setUint32(0, name.byteLength);
  b.set(name, 4);
  dv.setUint16(4 + name.byteLength, req.infos.length);
  req.infos.forEach((t, i) => dv.setUint16(6 + name.byteLength + 2 * i, t));
  return b;
}

export function decodeInfoRequest(b: Uint8Array): InfoRequest {
  need(b, 6, "info request");
  const dv = view(b);
  const nameLen = dv.getUint32(0);
  if (nameLen > b.byteLength - 6) throw new ProtocolError(`info request: name length ${nameLen} exceeds the option`);
  const name = decodeString(b.subarray(4, 4 + nameLen), "export name");
  const n = dv.getUint16(4 + nameLen);
  if (b.byteLength !== 6 + nameLen + 2 * n) {
    throw new ProtocolError(`info request: ${n} info types do not fit the option's ${b.byteLength} bytes`);
  }
  const infos: number[] = [];
  for (let i = 0; i < n; i++) infos.push(dv.getUint16(6 + nameLen + 2 * i));
  return { name, infos };
}

export function encodeInfoExport(size: number, txFlags: number): Uint8Array {
  const b = new Uint8Array(12);
  const dv = view(b);
  dv.setUint16(0, Info.EXPORT);
  dv.setBigUint64(2, BigInt(size));
  dv.setUint16(10, txFlags);
  return b;
}

export function encodeInfoString(type: typeof Info.NAME | typeof Info.DESCRIPTION, s: string): Uint8Array {
  const str = encodeString(s);
  const b = new Uint8Array(2 + str.byteLength);
  view(b).setUint16(0, type);
  b.set(str, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Uint8Array {
  const b = new Uint8Array(14);
  const dv = view(b);
  dv.setUint16(0, Info.BLOCK_SIZE);
  dv.setUint32(2, minimum);
  dv.setUint32(6, preferred);
  dv.setUint32(10, maximum);
  return b;
}

/** One decoded NBD_REP_INFO payload. */
export type InfoReply =
  | { type: typeof Info.EXPORT; size: number; txFlags: number }
  | { type: typeof Info.NAME; name: string }
  | { type: typeof Info.DESCRIPTION; description: string }
  | { type: typeof Info.BLOCK_SIZE; minimum: number; preferred: number; maximum: number }
  | { type: number; raw: Uint8Array };

export function decodeInfoReply(b: Uint8Array): InfoReply {
  need(b, 2, "info reply");
  const dv = view(b);
  const type = dv.getUint16(0);
  switch (type) {
    case Info.EXPORT:
      need(b, 12, "export info");
      return { type, size: u64(dv, 2, "export size"), txFlags: dv.getUint16(10) };
    case Info.NAME:
      return { type, name: decodeString(b.subarray(2), "export name") };
    case Info.DESCRIPTION:
      return { type, description: decodeString(b.subarray(2), "description") };
    case Info.BLOCK_SIZE:
      need(b, 14, "block size info");
      return { type, minimum: dv.getUint32(2), preferred: dv.getUint32(6), maximum: dv.getUint32(10) };
    default:
      return { type, raw: b.subarray(2) };
  }
}

/** NBD_REP_SERVER payload of NBD_OPT_LIST. */
export function encodeServerReply(name: string, description = ""): Uint8Array {
  const n = encodeString(name);
  const d = encodeString(description);
  const b = new Uint8Array(4 + n.byteLength + d.byteLength);
  view(b).setUint32(0, n.byteLength);
  b.set(n, 4);
  b.set(d, 4 + n.byteLength);
  return b;
}

export function decodeServerReply(b: Uint8Array): { name: string; description: string } {
  need(b, 4, "server reply");
  const len = view(b).getUint32(0);
  if (len > b.byteLength - 4) throw new ProtocolError("server reply: name longer than the reply");
  return {
    name: decodeString(b.subarray(4, 4 + len), "export name"),
    description: decodeString(b.subarray(4 + len), "description"),
  };
}

/** Data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function encodeMetaContextRequest(req: MetaContextRequest): Uint8Array {
  const name = encodeString(req.exportName);
  const queries = req.queries.map(encodeString);
  const b = new Uint8Array(8 + name.byteLength + queries.reduce((s, q) => s + 4 + q.byteLength, 0));
  const dv = view(b);
  dv.setUint32(0, name.byteLength);
  b.set(name, 4);
  let at = 4 + name.byteLength;
  dv.setUint32(at, queries.length);
  at += 4;
  for (const q of queries) {
    dv.setUint32(at, q.byteLength);
    b.set(q, at + 4);
    at += 4 + q.byteLength;
  }
  return b;
}

export function decodeMetaContextRequest(b: Uint8Array): MetaContextRequest {
  need(b, 8, "meta context request");
  const dv = view(b);
  const nameLen = dv.getUint32(0);
  if (nameLen > b.byteLength - 8) throw new ProtocolError("meta context request: export name exceeds the option");
  const exportName = decodeString(b.subarray(4, 4 + nameLen), "export name");
  let at = 4 + nameLen;
  const n = dv.getUint32(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < n; i++) {
    if (at + 4 > b.byteLength) throw new ProtocolError(`meta context request: query ${i} of ${n} is missing`);
    const len = dv.getUint32(at);
    if (len > b.byteLength - at - 4) throw new ProtocolError(`meta context request: query ${i} exceeds the option`);
    queries.push(decodeString(b.subarray(at + 4, at + 4 + len), "meta context query"));
    at += 4 + len;
  }
  if (at !== b.byteLength) throw new ProtocolError("meta context request: trailing bytes after the queries");
  return { exportName, queries };
}

export function encodeMetaContextReply(id: number, name: string): Uint8Array {
  const n = encodeString(name);
  const b = new Uint8Array(4 + n.byteLength);
  view(b).setUint32(0, id >>> 0);
  b.set(n, 4);
  return b;
}

export function decodeMetaContextReply(b: Uint8Array): { id: number; name: string } {
  need(b, 4, "meta context reply");
  return { id: view(b).getUint32(0), name: decodeString(b.subarray(4), "meta context name") };
}

// ------------------------------------------------------------------------------------------- transmission codec

export interface Request {
  flags: number;
  type: number;
  handle: Handle;
  offset: number;
  length: number;
}

export function encodeRequest(req: Request): Uint8Array {
  const b = new Uint8Array(REQUEST_LENGTH);
  const dv = view(b);
  dv.setUint32(0, REQUEST_MAGIC);
  dv.setUint16(4, req.flags);
  dv.setUint16(6, req.type);
  dv.setBigUint64(8, req.handle);
  dv.setBigUint64(16, BigInt(req.offset));
  dv.setUint32(24, req.length >>> 0);
  return b;
}

/**
 * Decodes a request header. The offset is returned as a number when it fits in 2^53 and as Infinity when
 * it does not (the server then answers EINVAL/EOVERFLOW for a range past the end instead of failing the
 * decode, so the connection stays usable).
 */
export function decodeRequest(b: Uint8Array): Request {
  need(b, REQUEST_LENGTH, "request");
  const dv = view(b);
  const magic = dv.getUint32(0);
  if (magic !== REQUEST_MAGIC) throw new ProtocolError(`request: bad magic 0x${magic.toString(16)}`);
  const off = dv.getBigUint64(16);
  return {
    flags: dv.getUint16(4),
    type: dv.getUint16(6),
    handle: dv.getBigUint64(8),
    offset: off > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(off),
    length: dv.getUint32(24),
  };
}

export interface SimpleReply {
  error: number;
  handle: Handle;
}

export function encodeSimpleReply(error: number, handle: Handle): Uint8Array {
  const b = new Uint8Array(SIMPLE_REPLY_LENGTH);
  writeSimpleReply(b, 0, error, handle);
  return b;
}

/** Writes a simple reply header into `b` at `at` (to put a READ's header and data in one buffer). */
export function writeSimpleReply(b: Uint8Array, at: number, error: number, handle: Handle): void {
  const dv = view(b);
  dv.setUint32(at, SIMPLE_REPLY_MAGIC);
  dv.setUint32(at + 4, error >>> 0);
  dv.setBigUint64(at + 8, handle);
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  handle: Handle;
  length: number;
}

export function encodeStructuredReplyHeader(h: StructuredReplyHeader): Uint8Array {
  const b = new Uint8Array(STRUCTURED_REPLY_HEADER_LENGTH);
  writeStructuredReplyHeader(b, 0, h);
  return b;
}

export function writeStructuredReplyHeader(b: Uint8Array, at: number, h: StructuredReplyHeader): void {
  const dv = view(b);
  dv.setUint32(at, STRUCTURED_REPLY_MAGIC);
  dv.setUint16(at + 4, h.flags);
  dv.setUint16(at + 6, h.type);
  dv.setBigUint64(at + 8, h.handle);
  dv.setUint32(at + 16, h.length >>> 0);
}

/** Decodes the magic-led header of a reply: a simple reply or a structured reply chunk. */
export function decodeReplyHeader(
  b: Uint8Array,
): ({ kind: "simple" } & SimpleReply) | ({ kind: "structured" } & StructuredReplyHeader) {
  need(b, 4, "reply");
  const dv = view(b);
  const magic = dv.getUint32(0);
  if (magic === SIMPLE_REPLY_MAGIC) {
    need(b, SIMPLE_REPLY_LENGTH, "simple reply");
    return { kind: "simple", error: dv.getUint32(4), handle: dv.getBigUint64(8) };
  }
  if (magic === STRUCTURED_REPLY_MAGIC) {
    need(b, STRUCTURED_REPLY_HEADER_LENGTH, "structured reply");
    return {
      kind: "structured",
      flags: dv.getUint16(4),
      type: dv.getUint16(6),
      handle: dv.getBigUint64(8),
      length: dv.getUint32(16),
    };
  }
  throw new ProtocolError(`reply: bad magic 0x${magic.toString(16)}`);
}

/** A whole structured chunk: header and payload. */
export function encodeStructuredChunk(handle: Handle, type: number, flags: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(STRUCTURED_REPLY_HEADER_LENGTH + payload.byteLength);
  writeStructuredReplyHeader(b, 0, { flags, type, handle, length: payload.byteLength });
  b.set(payload, STRUCTURED_REPLY_HEADER_LENGTH);
  return b;
}

/** OFFSET_DATA chunk header plus its u64 offset (28 bytes); the data follows. */
export const OFFSET_DATA_PREFIX = STRUCTURED_REPLY_HEADER_LENGTH + 8;

export function writeOffsetDataPrefix(b: Uint8Array, at: number, handle: Handle, flags: number, offset: number, dataLength: number): void {
  writeStructuredReplyHeader(b, at, { flags, type: ReplyType.OFFSET_DATA, handle, length: 8 + dataLength });
  view(b).setBigUint64(at + STRUCTURED_REPLY_HEADER_LENGTH, BigInt(offset));
}

export function encodeOffsetHoleChunk(handle: Handle, flags: number, offset: number, length: number): Uint8Array {
  const p = new Uint8Array(12);
  const dv = view(p);
  dv.setBigUint64(0, BigInt(offset));
  dv.setUint32(8, length >>> 0);
  return encodeStructuredChunk(handle, ReplyType.OFFSET_HOLE, flags, p);
}

export function encodeErrorChunk(handle: Handle, error: number, message: string, offset?: number): Uint8Array {
  const msg = encodeString(message).subarray(0, MAX_STRING_LENGTH);
  const p = new Uint8Array(6 + msg.byteLength + (offset === undefined ? 0 : 8));
  const dv = view(p);
  dv.setUint32(0, error >>> 0);
  dv.setUint16(4, msg.byteLength);
  p.set(msg, 6);
  if (offset !== undefined) dv.setBigUint64(6 + msg.byteLength, BigInt(offset));
  return encodeStructuredChunk(
    handle,
    offset === undefined ? ReplyType.ERROR : ReplyType.ERROR_OFFSET,
    ReplyFlag.DONE,
    p,
  );
}

export function decodeErrorChunk(p: Uint8Array): { error: number; message: string; offset?: number } {
  need(p, 6, "error chunk");
  const dv = view(p);
  const len = dv.getUint16(4);
  if (6 + len > p.byteLength) throw new ProtocolError("error chunk: message longer than the chunk");
  const message = decodeString(p.subarray(6, 6 + len), "error message");
  if (p.byteLength >= 6 + len + 8) return { error: dv.getUint32(0), message, offset: u64(dv, 6 + len, "error offset") };
  return { error: dv.getUint32(0), message };
}

export function decodeOffsetHole(p: Uint8Array): { offset: number; length: number } {
  need(p, 12, "hole chunk");
  const dv = view(p);
  return { offset: u64(dv, 0, "hole offset"), length: dv.getUint32(8) };
}

export function decodeOffsetDataOffset(p: Uint8Array): number {
  need(p, 8, "data chunk");
  return u64(view(p), 0, "data offset");
}

export interface Extent {
  length: number;
  flags: number;
}

export function encodeBlockStatusChunk(handle: Handle, flags: number, contextId: number, extents: Extent[]): Uint8Array {
  const p = new Uint8Array(4 + 8 * extents.length);
  const dv = view(p);
  dv.setUint32(0, contextId >>> 0);
  extents.forEach((e, i) => {
    dv.setUint32(4 + 8 * i, e.length >>> 0);
    dv.setUint32(8 + 8 * i, e.flags >>> 0);
  });
  return encodeStructuredChunk(handle, ReplyType.BLOCK_STATUS, flags, p);
}

export function decodeBlockStatus(p: Uint8Array): { contextId: number; extents: Extent[] } {
  need(p, 4, "block status chunk");
  if ((p.byteLength - 4) % 8 !== 0) throw new ProtocolError("block status chunk: not a whole number of extents");
  const dv = view(p);
  const extents: Extent[] = [];
  for (let at = 4; at < p.byteLength; at += 8) extents.push({ length: dv.getUint32(at), flags: dv.getUint32(at + 4) });
  return { contextId: dv.getUint32(0), extents };
}
