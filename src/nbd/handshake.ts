/**
 * The server's side of the fixed newstyle handshake (see protocol.ts for the messages): greeting, client
 * flags, then options until EXPORT_NAME or a successful GO moves the connection to transmission.
 *
 * Options served: EXPORT_NAME, GO, INFO, LIST, ABORT, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (base:allocation, and qemu:allocation-depth and qemu:dirty-bitmap:NAME when the export
 * offers them: meta-context.ts). STARTTLS is refused by policy (no TLS), every other
 * option with ERR_UNSUP. Malformed option data gets ERR_INVALID and negotiation goes on; a bad magic, option
 * data larger than MAX_OPTION_LENGTH, unknown client flags, too many options or a truncated message end the
 * connection (the protocol leaves no way to resynchronise).
 */
import type { Socket } from "node:net";
import type { ByteReader } from "./byte-reader.js";
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

/** Options a client may send before the server gives up on it (each is answered; a loop is an attack). */
const MAX_OPTIONS = 4096;

/** What negotiation settled for the transmission phase. */
export interface Session {
  structured: boolean;
  /** The contexts the last SET_META_CONTEXT selected, in id order (none without structured replies). */
  contexts: readonly MetaContext[];
  /** Transmission flags sent to the client. */
  txFlags: number;
}

/** Why negotiation ended without a session. */
export type HandshakeEnd = { end: "closed" | "aborted" } | { end: "protocol"; message: string };

const KNOWN_CLIENT_FLAGS = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES;

export function sessionFlags(exp: NbdExport, structured: boolean): number {
  let f = transmissionFlags(exp);
  // Don't-fragment only means something with structured replies.
  if (structured) f |= TxFlag.SEND_DF;
  return f;
}

/**
 * Runs the handshake. `shuttingDown()` true makes every option but ABORT fail with ERR_SHUTDOWN (the
 * server is stopping).
 */
export async function negotiate(
  socket: Socket,
  reader: ByteReader,
  exp: NbdExport,
  shuttingDown: () => boolean,
): Promise<Session | HandshakeEnd> {
  socket.write(encodeServerGreeting(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES));
  const cf = await reader.exact(4);
  if (!cf) return { end: "closed" };
  const clientFlags = decodeClientFlags(cf);
  if (clientFlags & ~KNOWN_CLIENT_FLAGS) return { end: "protocol", message: `unknown client flags 0x${clientFlags.toString(16)}` };
  const fixed = (clientFlags & ClientFlag.C_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & ClientFlag.C_NO_ZEROES) !== 0;
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
      let name: string;
      try {
        name = decodeName(data);
      } catch (e) {
        return { end: "protocol", message: (e as Error).message };
      }
      if (shuttingDown()) return { end: "protocol", message: "the server is shutting down" };
      if (name !== exp.name) return { end: "protocol", message: `export '${name}' not found` };
      const txFlags = sessionFlags(exp, structured);
      socket.write(encodeExportNameReply(exp.disk.size, txFlags, noZeroes));
      return { structured, contexts: structured ? selected : [], txFlags };
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
          reply(Rep.INFO, encodeInfoExport(exp.disk.size, txFlags));
          if (req.infos.includes(Info.NAME)) reply(Rep.INFO, encodeInfoString(Info.NAME, exp.name));
          if (req.infos.includes(Info.DESCRIPTION) && exp.description) {
            reply(Rep.INFO, encodeInfoString(Info.DESCRIPTION, exp.description));
          }
          reply(Rep.INFO, encodeInfoBlockSize(BLOCK_SIZE.minimum, BLOCK_SIZE.preferred, BLOCK_SIZE.maximum));
          reply(Rep.ACK);
          if (option === Opt.GO) return { structured, contexts: structured ? selected : [], txFlags };
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
        case Opt.STARTTLS:
          fail(Rep.ERR_POLICY, "TLS not configured");
          break;
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
