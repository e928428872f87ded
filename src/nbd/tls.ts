/**
 * TLS for the NBD server: the credentials (QEMU's tls-creds-x509 / tls-creds-psk directories) and the
 * upgrade of a connection that asked for it (doc/proto.md, "TLS support"). Node's `tls` module (OpenSSL)
 * does all the cryptography.
 *
 * ## On the wire
 *
 * ```
 * client → server  option  u64 IHAVEOPT  u32 NBD_OPT_STARTTLS (5)  u32 length 0        (in the clear)
 * server → client  reply   u64 REPLY_MAGIC  u32 5  u32 NBD_REP_ACK (1)  u32 length 0     (in the clear)
 * then, from the next byte on the same stream: a TLS handshake (client hello first), after which the
 * handshake's options go on inside TLS as if the connection had just begun (nothing said before counts).
 * ```
 *
 * The client must wait for the ACK: bytes already sent after STARTTLS when the server answers are plaintext
 * the server refuses (it closes the connection), not the start of the TLS handshake.
 *
 * ## Credentials (files in the directory `dir=`, QEMU's names)
 *
 * - x509: `ca-cert.pem` (the CAs whose client certificates are accepted; required, as in QEMU),
 *   `server-cert.pem` (the server's certificate, with its chain after it), `server-key.pem` (its private key,
 *   unencrypted), `ca-crl.pem` (optional revocation list). With verify-peer (QEMU's default) a client must
 *   present a certificate the CA signed and that is valid now; a tls-authz object then decides on its
 *   distinguished name (tls-authz.ts).
 * - psk: `keys.psk`, one `identity:key` a line, the key in hexadecimal (psktool's format); a client is
 *   accepted when it proves it holds the key of the identity it names.
 *
 * A client that fails the TLS handshake, has no acceptable certificate or is not authorized is refused as
 * QEMU refuses it: the TLS handshake is completed (or failed by the TLS library) and the connection closed,
 * with nothing of the export said.
 */
import * as fs from "node:fs";
import type { Socket } from "node:net";
import * as path from "node:path";
import * as tls from "node:tls";
import { type Authz, distinguishedName, isAuthorized } from "./tls-authz.js";

/** Loaded credentials: plain data (they cross to the serving thread). */
export type TlsCredentials =
  | { kind: "x509"; id: string; dir: string; ca: string; cert: string; key: string; crl?: string; verifyPeer: boolean }
  | { kind: "psk"; id: string; dir: string; keys: Record<string, string> };

export interface TlsSettings {
  creds: TlsCredentials;
  authz?: Authz;
}

/** The file names QEMU looks for in a credentials directory. */
export const X509_FILES = { ca: "ca-cert.pem", crl: "ca-crl.pem", cert: "server-cert.pem", key: "server-key.pem" } as const;
export const PSK_FILE = "keys.psk";

function readCredential(dir: string, name: string, required: true): string;
function readCredential(dir: string, name: string, required: false): string | undefined;
function readCredential(dir: string, name: string, required: boolean): string | undefined {
  const file = path.join(dir, name);
  try {
    return fs.readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && !required) return undefined;
    const reason = code === "ENOENT" ? "No such file or directory" : code === "EACCES" ? "Permission denied" : (e as Error).message;
    throw new Error(`Unable to access credentials ${file}: ${reason}`);
  }
}

/** Reads an x509 credentials directory and checks that Node can use it (the key matches the certificate...). */
export function loadX509Credentials(id: string, dir: string, verifyPeer: boolean): TlsCredentials {
  const creds: TlsCredentials = {
    kind: "x509",
    id,
    dir,
    ca: readCredential(dir, X509_FILES.ca, true),
    cert: readCredential(dir, X509_FILES.cert, true),
    key: readCredential(dir, X509_FILES.key, true),
    crl: readCredential(dir, X509_FILES.crl, false),
    verifyPeer,
  };
  try {
    secureContextOf(creds);
  } catch (e) {
    throw new Error(`Unable to load the credentials in ${dir}: ${(e as Error).message}`);
  }
  return creds;
}

/** Reads a PSK credentials directory: `keys.psk`'s `identity:hexkey` lines. */
export function loadPskCredentials(id: string, dir: string): TlsCredentials {
  const file = path.join(dir, PSK_FILE);
  const text = readCredential(dir, PSK_FILE, true);
  return { kind: "psk", id, dir, keys: parsePskFile(text, file) };
}

/** Parses `identity:hexkey` lines (blank lines ignored); the first line of an identity wins. */
export function parsePskFile(text: string, file: string): Record<string, string> {
  const keys: Record<string, string> = Object.create(null) as Record<string, string>;
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === "") return;
    const colon = line.lastIndexOf(":");
    const identity = line.slice(0, Math.max(colon, 0));
    const hex = line.slice(colon + 1).trim();
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) {
      throw new Error(`${file}:${i + 1}: expected 'identity:hexkey'`);
    }
    if (!(identity in keys)) keys[identity] = hex.toLowerCase();
  });
  if (Object.keys(keys).length === 0) throw new Error(`${file}: no keys`);
  return keys;
}

/** TLS 1.2 suites for PSK (GnuTLS offers ECDHE-PSK, DHE-PSK and PSK; TLS 1.3 needs none of these names). */
const PSK_CIPHERS = "ECDHE-PSK-AES256-GCM-SHA384:ECDHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256";

function secureContextOptions(creds: TlsCredentials): tls.SecureContextOptions {
  if (creds.kind === "x509") return { ca: creds.ca, cert: creds.cert, key: creds.key, crl: creds.crl, minVersion: "TLSv1.2" };
  // No certificate: a client that does not offer a known PSK cannot complete the handshake.
  return { ciphers: PSK_CIPHERS, minVersion: "TLSv1.2", dhparam: "auto" };
}

function secureContextOf(creds: TlsCredentials): tls.SecureContext {
  return tls.createSecureContext(secureContextOptions(creds));
}

export type TlsUpgrade =
  | { ok: true; socket: tls.TLSSocket; /** The client's certificate DN or PSK identity ("" when not verified). */ peer: string }
  | { ok: false; socket?: tls.TLSSocket; reason: string };

/**
 * The server's TLS. Each upgrade hands the accepted socket to a `tls.Server` that listens nowhere (Node's way
 * to run its server-side handshake, certificate verification included, on a socket it did not accept); one
 * such server runs one handshake at a time and is kept for the next (building one parses the credentials),
 * so that its events can only be of the connection being upgraded.
 */
export class TlsServer {
  private readonly idle: tls.Server[] = [];
  private readonly options: tls.TlsOptions;

  constructor(readonly settings: TlsSettings) {
    const c = settings.creds;
    const verify = c.kind === "x509" && c.verifyPeer;
    const pskKeys = c.kind === "psk" ? new Map(Object.entries(c.keys).map(([id, hex]) => [id, Buffer.from(hex, "hex")])) : undefined;
    this.options = {
      ...secureContextOptions(c),
      requestCert: verify,
      // Checked in check(), after the handshake, as QEMU checks it: the client then sees its connection closed.
      rejectUnauthorized: false,
      pskCallback: pskKeys ? (socket: tls.TLSSocket, id: string) => {
        pskIdentities.set(socket, id);
        return pskKeys.get(id) ?? null;
      } : undefined,
    };
  }

  /**
   * Runs the server's side of the TLS handshake on `raw` (which nothing else reads any more) and checks the
   * client: its certificate when the credentials verify peers, then the authz object. Never rejects.
   */
  upgrade(raw: Socket): Promise<TlsUpgrade> {
    const server = this.idle.pop() ?? tls.createServer(this.options);
    return new Promise((resolve) => {
      let settled = false;
      // After 'secureConnection' or 'tlsClientError' the server says no more of this socket, and may take the
      // next one; after the socket closed first, it may yet report it: that server is dropped.
      const settle = (u: TlsUpgrade, reusable: boolean): void => {
        if (settled) return;
        settled = true;
        server.off("secureConnection", onSecure);
        server.off("tlsClientError", onError);
        raw.off("close", onClose);
        if (reusable) this.idle.push(server);
        resolve(u);
      };
      const onSecure = (socket: tls.TLSSocket): void => settle(this.check(socket), true);
      const onError = (e: Error, socket: tls.TLSSocket): void => settle({ ok: false, socket, reason: `TLS handshake failed: ${tlsMessage(e)}` }, true);
      const onClose = (): void => settle({ ok: false, reason: "the client closed the connection during the TLS handshake" }, false);
      server.on("secureConnection", onSecure);
      server.on("tlsClientError", onError);
      raw.once("close", onClose);
      server.emit("connection", raw);
    });
  }

  private check(socket: tls.TLSSocket): TlsUpgrade {
    const creds = this.settings.creds;
    if (creds.kind === "psk") return { ok: true, socket, peer: pskIdentities.get(socket) ?? "" };
    if (!creds.verifyPeer) return { ok: true, socket, peer: "" };
    const cert = socket.getPeerX509Certificate();
    if (!cert) return { ok: false, socket, reason: "Verify failed: No certificate was found." };
    if (!socket.authorized) return { ok: false, socket, reason: `Verify failed: ${String(socket.authorizationError)}` };
    const dn = distinguishedName(cert);
    const authz = this.settings.authz;
    if (authz) {
      let allowed: boolean;
      try {
        allowed = isAuthorized(authz, dn);
      } catch (e) {
        return { ok: false, socket, reason: `TLS x509 authz check for ${dn} failed: ${(e as Error).message}` };
      }
      if (!allowed) return { ok: false, socket, reason: `TLS x509 authz check for ${dn} is denied` };
    }
    return { ok: true, socket, peer: dn };
  }
}

/** The PSK identity each TLS socket named (Node does not keep it on the socket). */
const pskIdentities = new WeakMap<tls.TLSSocket, string>();

/** OpenSSL's reason ("binder does not verify") without its error-stack text. */
function tlsMessage(e: Error): string {
  const reason = (e as { reason?: unknown }).reason;
  return typeof reason === "string" && reason !== "" ? reason : e.message.split("\n")[0]!;
}
