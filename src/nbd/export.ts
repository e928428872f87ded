/**
 * What one NBD export is: the port its requests are served through (port.ts: the engine in this thread,
 * inline-port.ts, or in its worker thread behind the ring, ring-port.ts) and the policies qemu-nbd's options
 * set (read-only, cache mode, discard, detect-zeroes), plus the transmission flags and block-size limits
 * they imply, and the mapping of engine errors to the protocol's error numbers. Every export is built by
 * nbdExport, from a port and the settings.
 */
import type { SyncDisk } from "../disk/sync-disk.js";
import type { CacheMode } from "../engine/types.js";
import type { NbdPort } from "./port.js";
import { Err, MAX_REQUEST_LENGTH, TxFlag } from "./protocol.js";

export type DiscardMode = "ignore" | "unmap";
export type DetectZeroes = "off" | "on" | "unmap";

export interface NbdExport {
  /** Export name clients ask for ("" by default, as qemu-nbd). */
  name: string;
  description: string;
  port: NbdPort;
  /** Writes refused with EPERM (-r, -l). */
  readOnly: boolean;
  /** The export's cache mode: with writethrough, every write is answered once durable. */
  cache: CacheMode;
  discard: DiscardMode;
  detectZeroes: DetectZeroes;
  /**
   * Whether a write-zeroes of [offset, offset+length) is done by the metadata alone (so NBD_CMD_FLAG_FAST_ZERO
   * can be honoured): qcow2 v3 (zero clusters) on whole clusters. Undefined: never fast.
   */
  fastZero?: (offset: number, length: number) => boolean;
  /**
   * Advertise CAN_MULTI_CONN: only when more than one client may be served at once (-e N > 1), as qemu-nbd
   * does; with one, a client that opens several connections would wait for ever on the second.
   */
  multiConn: boolean;
  /** Offer the metadata context qemu:allocation-depth (qemu-nbd -A). */
  allocationDepth: boolean;
  /** Persistent dirty bitmaps offered as qemu:dirty-bitmap:NAME (qemu-nbd -B), found in the image beforehand. */
  bitmaps: readonly string[];
}

/** What qemu-nbd's options say about an export. */
export interface ExportSettings {
  name: string;
  description: string;
  readOnly: boolean;
  cache: CacheMode;
  discard: DiscardMode;
  detectZeroes: DetectZeroes;
  multiConn: boolean;
  /** Whole clusters of this size are zeroed by metadata alone (NBD_CMD_FLAG_FAST_ZERO); 0: never. */
  zeroClusters: number;
  allocationDepth: boolean;
  bitmaps: readonly string[];
}

/**
 * The NBD export of a port. Every export (the real ones of either port, and the warm-up's scratch export) is
 * built here, so that they are objects of one shape: code V8 optimised on the scratch export stays valid on
 * the real one (an object of another shape would deoptimise every function that reads the export, at the
 * first request).
 */
export function nbdExport(port: NbdPort, s: ExportSettings): NbdExport {
  const z = s.zeroClusters;
  return {
    name: s.name,
    description: s.description,
    port,
    readOnly: s.readOnly,
    cache: s.cache,
    discard: s.discard,
    detectZeroes: s.detectZeroes,
    multiConn: s.multiConn,
    allocationDepth: s.allocationDepth,
    bitmaps: s.bitmaps,
    fastZero: z ? (offset, length) => offset % z === 0 && ((offset + length) % z === 0 || offset + length === port.size) : undefined,
  };
}

/** Transmission flags of an export. Structured-reply-only features are added by the connection. */
export function transmissionFlags(exp: NbdExport): number {
  let f = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.SEND_CACHE;
  // One engine serves every connection in submission order, and a flush flushes the whole image: a flush on
  // one connection covers the writes completed on all of them, which is what CAN_MULTI_CONN promises.
  if (exp.multiConn) f |= TxFlag.CAN_MULTI_CONN;
  if (exp.readOnly) f |= TxFlag.READ_ONLY;
  else f |= TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FAST_ZERO;
  return f;
}

/** NBD_INFO_BLOCK_SIZE: any alignment works (the engine does read-modify-write), 4 KiB preferred. */
export const BLOCK_SIZE = { minimum: 1, preferred: 4096, maximum: MAX_REQUEST_LENGTH } as const;

/** The protocol's error number for an engine or worker failure. */
export function errnoOf(e: unknown): number {
  const err = e as { name?: string; code?: string; message?: string } | undefined;
  // The ring carries an I/O error's message, not its code: look for the code in the text as well.
  if (/\b(ENOSPC|EDQUOT|EFBIG)\b/.test(`${err?.code ?? ""} ${err?.message ?? ""}`)) return Err.ENOSPC;
  switch (err?.name) {
    case "RequestError":
      return Err.EINVAL;
    case "ClosedError":
      return Err.ESHUTDOWN;
    case "WorkerError":
      // The worker serving the image died or stopped (shutting down), or a request failed inside it (a bug).
      return / failed in the worker: /.test(err.message ?? "") ? Err.EIO : Err.ESHUTDOWN;
    case "UnsupportedFeatureError":
      return Err.ENOTSUP;
    default:
      return Err.EIO;
  }
}
