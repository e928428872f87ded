/**
 * The server's side of the fixed newstyle handshake (see protocol.ts for the messages): greeting, client
 * flags, then options until EXPORT_NAME or a successful GO moves the connection to transmission.
 *
 * Options served: EXPORT_NAME, GO, INFO, LIST, ABORT, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (base:allocation, and qemu:allocation-depth and qemu:dirty-bitmap:NAME when the export
 * offers them: meta-context.ts), and STARTTLS when the server has TLS credentials (tls.ts); every other
 * option gets ERR_UNSUP. Malformed option data gets ERR_INVALID and negotiation goes on; a bad magic,
 * unknown client flags, too many options or a truncated message end the connection (the protocol leaves no
 * way to resynchronise), and so does option data larger than MAX_OPTION_LENGTH, after an ERR_TOO_BIG reply
 * and before a byte of that data is read.
 *
 * With TLS (the server was given credentials, as qemu-nbd with --tls-creds) TLS is required: until
 * STARTTLS has succeeded every option gets ERR_TLS_REQD but ABORT (answered) and EXPORT_NAME (which cannot
 * be refused but by closing the connection), so nothing of the export is told in the clear. STARTTLS is
 * answered in the clear, then the TLS handshake runs on the same socket and negotiation starts over inside
 * it (what was negotiated before is forgotten; a second STARTTLS gets ERR_INVALID). A client whose TLS
 * handshake, certificate or authorization fails is refused: the connection is closed.
 */
import type { Socket } from "node:net";
import { ByteReader } from "./byte-reader.js";
import { BLOCK_SIZE, type NbdExport, transmissionFlags } from "./export.js";
import { matchContexts, type MetaContext, offeredContexts } from "./meta-context.js";
import {
  ClientFlag,
  decodeClientFlags,
  decodeString,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  encodeServerReply,
  HandshakeFlag,
  Info,
  MAX_OPTION_LENGTH,
  MAX_STRING_LENGTH,
  OPTION_HEADER_LENGTH,
  Opt,
  OPT_NAMES,
  ProtocolError,
  Rep,
  TxFlag,
} from "./protocol.js";
import type { TlsServer } from "./tls.js";

/** Options a client may send before the server gives up on it (each is answered; a loop is an attack). */
const MAX_OPTIONS = 4096;

/** What negotiation settled for the transmission phase. */
export interface Session {
  /** The connection to serve: the accepted socket, or the TLS socket over it after STARTTLS. */
  socket: Socket;
  reader: ByteReader;
  /** With TLS: the client's verified certificate DN or PSK identity ("" when the server verifies no peer). */
  peer?: string;
  structured: boolean;
  /** The contexts the last SET_META_CONTEXT selected, in id order (none without structured replies). */
  contexts: readonly MetaContext[];
  /** Transmission flags sent to the client. */
  txFlags: number;
}

/** Why negotiation ended without a session. */
export type HandshakeEnd = { end: "closed" | "aborted" } | { end: "protocol" | "refused"; message: string };

export interface NegotiateOptions {
  /** True makes every option but ABORT fail with ERR_SHUTDOWN (the server is stopping). */
  shuttingDown: () => boolean;
  /** TLS credentials: TLS is then required (STARTTLS before anything else). */
  tls?: TlsServer;
  /** Called with the TLS socket as soon as it wraps the accepted one (the server closes it on stop). */
  upgraded?: (socket: Socket) => void;
}

const KNOWN_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;

export function sessionFlags(exp: NbdExport, structured: boolean): number {
  let f = transmissionFlags(exp);
  // Don't-fragment only means something with structured replies.
  if (structured) f |= TxFlag.SEND_DF;
  return f;
}

/** Runs the handshake on an accepted connection. */
export async function negotiate(rawSocket: Socket, rawReader: ByteReader, exp: NbdExport, opts: NegotiateOptions): Promise<Session | HandshakeEnd> {
  const { shuttingDown, tls } = opts;
  let socket = rawSocket;
  let reader = rawReader;
  let peer: string | undefined;
  socket.write(encodeServerGreeting(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES));
  const cf = await reader.exact(4);
  if (!cf) return { end: "closed" };
  const clientFlags = decodeClientFlags(cf);
  if (clientFlags & ~KNOWN_CLIENT_FLAGS) return { end: "protocol", message: `unknown client flags 0x${clientFlags.toString(16)}` };
  const fixed = (clientFlags & ClientFlag.C_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & ClientFlag.C_NO_ZEROES) !== 0;
  /** Whether options may be served: no TLS required, or TLS established. */
  let secure = tls === undefined;
  let structured = false;
  let selected: MetaContext[] = [];
  const offered = offeredContexts(exp);

  for (let count = 0; count < MAX_OPTIONS; count++) {
    const hb = await reader.exact(OPTION_HEADER_LENGTH);
    if (!hb) return { end: "closed" };
    let option: number;
    let length: number;
    try {
      ({ option, length } = decodeOptionHeader(hb));
    } catch (e) {
      return { end: "protocol", message: (e as Error).message };
    }
    if (length > MAX_OPTION_LENGTH) {
      // Refused before its data is read: the reply, then the connection closes (the data is never buffered).
      if (fixed) socket.write(encodeOptionError(option, Rep.ERR_TOO_BIG, `option data of ${length} bytes (at most ${MAX_OPTION_LENGTH})`));
      return { end: "protocol", message: `${OPT_NAMES[option] ?? `option ${option}`} with ${length} bytes of data` };
    }
    const data = await reader.exact(length);
    if (!data) return { end: "closed" };
    const reply = (type: number, payload?: Uint8Array): void => {
      socket.write(encodeOptionReply(option, type, payload));
    };
    const fail = (type: number, message: string): void => {
      socket.write(encodeOptionError(option, type, message));
    };

    if (option === Opt.EXPORT_NAME) {
      // No way to report an error here but closing the connection.
      if (!secure) return { end: "refused", message: "NBD_OPT_EXPORT_NAME before TLS (TLS is required)" };
      let name: string;
      try {
        name = decodeName(data);
      } catch (e) {
        return { end: "protocol", message: (e as Error).message };
      }
      if (shuttingDown()) return { end: "protocol", message: "the server is shutting down" };
      if (name !== exp.name) return { end: "protocol", message: `export '${name}' not found` };
      const txFlags = sessionFlags(exp, structured);
      socket.write(encodeExportNameReply(exp.port.size, txFlags, noZeroes));
      return { socket, reader, peer, structured, contexts: structured ? selected : [], txFlags };
    }
    // Without fixed newstyle the server cannot send an error reply for an option it does not support.
    if (!fixed) return { end: "protocol", message: `${OPT_NAMES[option] ?? `option ${option}`} from a client without fixed newstyle` };
    if (option === Opt.ABORT) {
      reply(Rep.ACK);
      return { end: "aborted" };
    }
    if (shuttingDown()) {
      fail(Rep.ERR_SHUTDOWN, "Server is shutting down");
      continue;
    }
    if (option === Opt.STARTTLS) {
      if (!tls) {
        fail(Rep.ERR_POLICY, "TLS not configured");
        continue;
      }
      if (secure) {
        fail(Rep.ERR_INVALID, "TLS is already in use");
        continue;
      }
      if (length !== 0) {
        fail(Rep.ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
        continue;
      }
      // Whatever the client sent after STARTTLS, before this reply, is plaintext it had no right to send.
      if (reader.buffered > 0 || socket.readableLength > 0) return { end: "refused", message: "plaintext data after NBD_OPT_STARTTLS" };
      reply(Rep.ACK);
      reader.detach();
      const up = await tls.upgrade(socket);
      if (up.socket) opts.upgraded?.(up.socket);
      if (!up.ok) return { end: "refused", message: up.reason };
      socket = up.socket;
      reader = new ByteReader(socket);
      peer = up.peer;
      secure = true;
      // Negotiation starts over inside TLS.
      structured = false;
      selected = [];
      continue;
    }
    if (!secure) {
      fail(Rep.ERR_TLS_REQD, `Option 0x${option.toString(16)} not permitted before TLS`);
      continue;
    }
    try {
      switch (option) {
        case Opt.INFO:
        case Opt.GO: {
          const req = decodeInfoRequest(data);
          if (req.name !== exp.name) {
            fail(Rep.ERR_UNKNOWN, `export '${req.name}' not present`);
            break;
          }
          const txFlags = sessionFlags(exp, structured);
          reply(Rep.INFO, encodeInfoExport(exp.port.size, txFlags));
          if (req.infos.includes(Info.NAME)) reply(Rep.INFO, encodeInfoString(Info.NAME, exp.name));
          if (req.infos.includes(Info.DESCRIPTION) && exp.description) {
            reply(Rep.INFO, encodeInfoString(Info.DESCRIPTION, exp.description));
          }
          reply(Rep.INFO, encodeInfoBlockSize(BLOCK_SIZE.minimum, BLOCK_SIZE.preferred, BLOCK_SIZE.maximum));
          reply(Rep.ACK);
          if (option === Opt.GO) return { socket, reader, peer, structured, contexts: structured ? selected : [], txFlags };
          break;
        }
        case Opt.LIST:
          if (length !== 0) {
            fail(Rep.ERR_INVALID, "NBD_OPT_LIST takes no data");
            break;
          }
          reply(Rep.SERVER, encodeServerReply(exp.name, exp.description));
          reply(Rep.ACK);
          break;
        case Opt.STRUCTURED_REPLY:
          if (length !== 0) {
            fail(Rep.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
            break;
          }
          structured = true;
          reply(Rep.ACK);
          break;
        case Opt.LIST_META_CONTEXT:
        case Opt.SET_META_CONTEXT: {
          const set = option === Opt.SET_META_CONTEXT;
          // A SET replaces the selection even when it fails.
          if (set) selected = [];
          // Listing is allowed at any time; selecting only once BLOCK_STATUS can be answered.
          if (set && !structured) {
            fail(Rep.ERR_INVALID, `${OPT_NAMES[option]} before NBD_OPT_STRUCTURED_REPLY`);
            break;
          }
          const req = decodeMetaContextRequest(data);
          if (req.exportName !== exp.name) {
            fail(Rep.ERR_UNKNOWN, `export '${req.exportName}' not present`);
            break;
          }
          const matches = matchContexts(offered, req.queries, !set);
          for (const c of matches) reply(Rep.META_CONTEXT, encodeMetaContextReply(set ? c.id : 0, c.name));
          reply(Rep.ACK);
          if (set) selected = matches;
          break;
        }
        default:
          fail(Rep.ERR_UNSUP, `Unsupported option ${option} (${OPT_NAMES[option] ?? "unknown"})`);
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      fail(Rep.ERR_INVALID, e.message);
    }
  }
  return { end: "protocol", message: `more than ${MAX_OPTIONS} options` };
}

function decodeName(data: Uint8Array): string {
  if (data.byteLength > MAX_STRING_LENGTH) throw new ProtocolError(`export name of ${data.byteLength} bytes`);
  return decodeString(data, "export name");
}
