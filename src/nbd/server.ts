/**
 * An NBD server for one export, as qemu-nbd runs it: listens on a Unix socket or a TCP address, serves up to
 * `shared` clients at once (later ones wait, unanswered, until one leaves, as they would in qemu-nbd's
 * listen backlog; past `maxWaiting` of those, new connections are closed at once), and — unless
 * `persistent` — stops after the last client has gone, counting only clients that reached transmission. Each
 * connection runs the handshake (handshake.ts; with `tls`, STARTTLS and the TLS upgrade first: tls.ts) then
 * transmission (transmission.ts over the request core, request-core.ts); every connection shares the export's
 * one port, so the image has one owner: the engine in this thread (inline-port.ts, each request served
 * between two socket reads) or in its worker thread behind the ring (ring-port.ts, many in flight).
 *
 * A client that has not reached transmission `handshakeLimitMs` after it was let in (qemu-nbd's
 * --handshake-limit, 10 s by default) is disconnected, so idle or slow connections cannot hold the places.
 *
 * stop(): stops accepting, answers requests already in flight (new ones get ESHUTDOWN), closes the
 * connections; the caller then closes the image. A misbehaving client only loses its own connection; each
 * refusal is logged once.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import { ByteReader } from "./byte-reader.js";
import type { NbdExport } from "./export.js";
import { negotiate } from "./handshake.js";
import { TlsServer, type TlsSettings } from "./tls.js";
import { Transmission } from "./transmission.js";

export type ListenAddress = { socket: string } | { host: string; port: number };

export interface NbdServerOptions {
  /** Clients served at once (qemu-nbd -e; default 1). */
  shared?: number;
  /** Keep serving after the last client has gone (qemu-nbd -t). */
  persistent?: boolean;
  /** Diagnostics (one line each), e.g. a protocol violation by a client. */
  log?: (message: string) => void;
  /** TLS credentials (and authorization): TLS is then required of every client. */
  tls?: TlsSettings;
  /** Time a client has from being let in to reaching transmission; 0: no limit. Default 10 s. */
  handshakeLimitMs?: number;
  /** Connections kept waiting for a free place (beyond `shared`); later ones are closed. Default 16. */
  maxWaiting?: number;
}

export const DEFAULT_HANDSHAKE_LIMIT_MS = 10_000;
/** How long a refused client that does not read has to take the server's last replies. */
const LINGER_MS = 2_000;
export const DEFAULT_MAX_WAITING = 16;

interface Connection {
  socket: net.Socket;
  /** The TLS socket over `socket`, once STARTTLS began. */
  tlsSocket?: net.Socket;
  transmission?: Transmission;
  /** Set when the handshake deadline closed the connection. */
  timedOut?: boolean;
  /** Ends when the connection is closed and its requests answered. */
  done: Promise<void>;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly shared: number;
  private readonly persistent: boolean;
  private readonly log: (message: string) => void;
  private readonly tls: TlsServer | undefined;
  private readonly handshakeLimitMs: number;
  private readonly maxWaiting: number;
  /** Refused for want of a place since the last time it was logged (one line per burst, not per client). */
  private refusedBurst = 0;
  private readonly active = new Set<Connection>();
  private readonly waiting: net.Socket[] = [];
  private servedAny = false;
  private stopping: Promise<void> | undefined;
  private stoppedResolve!: () => void;
  /** Resolves when the server has stopped: stop() was called, or the last client left a non-persistent server. */
  readonly stopped: Promise<void>;
  private socketPath: string | undefined;

  constructor(
    private readonly exp: NbdExport,
    opts: NbdServerOptions = {},
  ) {
    this.shared = Math.max(1, opts.shared ?? 1);
    this.persistent = opts.persistent ?? false;
    this.log = opts.log ?? (() => {});
    this.tls = opts.tls ? new TlsServer(opts.tls) : undefined;
    this.handshakeLimitMs = opts.handshakeLimitMs ?? DEFAULT_HANDSHAKE_LIMIT_MS;
    this.maxWaiting = opts.maxWaiting ?? DEFAULT_MAX_WAITING;
    this.stopped = new Promise((r) => (this.stoppedResolve = r));
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => this.accepted(s));
  }

  /** Starts listening; resolves when the socket is bound. */
  listen(addr: ListenAddress): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      this.server.once("error", onError);
      const ready = (): void => {
        this.server.off("error", onError);
        this.server.on("error", (e) => this.log(`server socket: ${e.message}`));
        resolve();
      };
      if ("socket" in addr) {
        this.socketPath = addr.socket;
        // A socket left by a server that died is replaced (QEMU unlinks it before binding too).
        if (fs.statSync(addr.socket, { throwIfNoEntry: false })?.isSocket()) fs.rmSync(addr.socket);
        this.server.listen(addr.socket, ready);
      } else {
        this.server.listen({ host: addr.host, port: addr.port }, ready);
      }
    });
  }

  /** The bound TCP port (after listen on a TCP address). */
  get port(): number | undefined {
    const a = this.server.address();
    return a && typeof a === "object" ? a.port : undefined;
  }

  /** Clients connected now (in negotiation or transmission; not those waiting for a free place). */
  get connections(): number {
    return this.active.size;
  }

  /** Stops accepting, answers what is in flight, closes every connection. Idempotent. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      // close() stops accepting at once; its callback waits for the connections, closed below.
      const closed = new Promise<void>((r) => this.server.close(() => r()));
      if (this.socketPath) fs.rmSync(this.socketPath, { force: true });
      for (const s of this.waiting.splice(0)) s.destroy();
      await Promise.all(
        [...this.active].map(async (c) => {
          if (c.transmission) await c.transmission.stop();
          c.tlsSocket?.destroy();
          c.socket.destroy();
          await c.done;
        }),
      );
      await closed;
      this.stoppedResolve();
    })();
    return this.stopping;
  }

  private accepted(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    socket.on("error", () => {});
    if (this.active.size >= this.shared) {
      if (this.waiting.length >= this.maxWaiting) {
        socket.destroy();
        if (this.refusedBurst++ === 0) this.log(`refusing connections: ${this.active.size} served and ${this.waiting.length} waiting`);
        return;
      }
      this.waiting.push(socket);
      socket.once("close", () => {
        const i = this.waiting.indexOf(socket);
        if (i >= 0) this.waiting.splice(i, 1);
      });
      return;
    }
    this.start(socket);
  }

  private start(socket: net.Socket): void {
    const conn: Connection = { socket, done: Promise.resolve() };
    this.active.add(conn);
    // A place is free again: the next connection refused for want of one gets its own log line.
    this.refusedBurst = 0;
    const deadline =
      this.handshakeLimitMs > 0
        ? setTimeout(() => {
            if (conn.transmission) return;
            this.log(`handshake: not finished within ${this.handshakeLimitMs / 1000} s; disconnecting the client`);
            conn.timedOut = true;
            conn.tlsSocket?.destroy();
            socket.destroy();
          }, this.handshakeLimitMs)
        : undefined;
    conn.done = this.serve(conn, () => clearTimeout(deadline))
      .catch((e: unknown) => this.log(`connection failed: ${(e as Error)?.message ?? e}`))
      .finally(() => {
        clearTimeout(deadline);
        conn.tlsSocket?.destroy();
        socket.destroy();
        this.active.delete(conn);
        this.left();
      });
    socket.resume();
  }

  private async serve(conn: Connection, negotiated: () => void): Promise<void> {
    const reader = new ByteReader(conn.socket);
    const session = await negotiate(conn.socket, reader, this.exp, {
      shuttingDown: () => this.stopping !== undefined,
      tls: this.tls,
      upgraded: (s) => {
        conn.tlsSocket = s;
        s.on("error", () => {});
        if (this.stopping || conn.timedOut) s.destroy();
      },
    });
    if ("end" in session) {
      // A connection the deadline ended was logged then.
      if (!conn.timedOut && (session.end === "protocol" || session.end === "refused")) this.log(`handshake: ${session.message}`);
      // The replies already written (the refusal, ABORT's ACK) reach the client before the connection closes.
      if (session.end !== "refused") await closeAfterFlush(conn.tlsSocket ?? conn.socket);
      return;
    }
    negotiated();
    // Only a client that got to transmission counts (as in qemu-nbd): one that listed exports or contexts and
    // left (nbdinfo --list) does not end a server that is not persistent.
    this.servedAny = true;
    const { socket, reader: txReader } = session;
    const t = new Transmission(socket, txReader, this.exp, session, this.log, conn.tlsSocket !== undefined);
    conn.transmission = t;
    if (this.stopping) void t.stop();
    const end = await t.run();
    if (end.end === "protocol") this.log(`transmission: ${end.message}`);
    // Requests in flight are answered before the connection closes (DISC asks for exactly that).
    await t.drained();
    if (!socket.destroyed) {
      await new Promise<void>((r) => {
        socket.once("close", () => r());
        socket.end(() => r());
      });
    }
  }

  private left(): void {
    if (this.stopping) return;
    const next = this.waiting.shift();
    if (next) {
      this.start(next);
      return;
    }
    if (!this.persistent && this.servedAny && this.active.size === 0) void this.stop();
  }
}

/** Ends the connection once what is queued on it is sent; a peer that does not read is cut after LINGER_MS. */
function closeAfterFlush(s: net.Socket): Promise<void> {
  if (s.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, LINGER_MS);
    s.once("close", done);
    s.end(done);
  });
}
