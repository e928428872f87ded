/**
 * qemu-nbd's `--object` options for TLS, and `--tls-creds` / `--tls-authz` resolved against them, into the
 * server's TLS settings (src/nbd/tls.ts). The syntax is QEMU's: `TYPE,id=ID,key=value,...`, a literal comma
 * written ",,". Types taken:
 *
 *   tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on|off]   (verify-peer defaults to on)
 *   tls-creds-psk,id=ID,dir=DIR,endpoint=server
 *   authz-simple,id=ID,identity=DN
 *   authz-list-file,id=ID,filename=FILE[,refresh=on|off]                (refresh defaults to on)
 *
 * Credentials are read (and checked) here, at start-up, so that a missing file is an error of the command
 * and not of the first client; QEMU's messages where QEMU has one.
 */
import { type Authz, loadAuthzList } from "../nbd/tls-authz.js";
import { loadPskCredentials, loadX509Credentials, type TlsSettings } from "../nbd/tls.js";
import { splitOptionList } from "./create-options.js";
import { CliError, messageOf } from "./errors.js";

interface QemuObject {
  type: string;
  id: string;
  props: Map<string, string>;
}

/** The properties each type accepts (all others are an error, as in QEMU). */
const PROPERTIES: Record<string, readonly string[]> = {
  "tls-creds-x509": ["dir", "endpoint", "verify-peer", "sanity-check"],
  "tls-creds-psk": ["dir", "endpoint", "verify-peer", "username"],
  "authz-simple": ["identity"],
  "authz-list-file": ["filename", "refresh"],
};

/** Properties QEMU's TLS objects have that refcow nbd does not take, with the reason. */
const UNSUPPORTED_PROPERTIES: Record<string, string> = {
  priority: "a GnuTLS priority string (refcow's TLS is Node's OpenSSL)",
  passwordid: "keys protected by a password (use an unencrypted server-key.pem)",
};

/** Types QEMU has that refcow nbd does not take, with a word on what to use instead. */
const UNSUPPORTED_TYPES: Record<string, string> = {
  "tls-creds-anon": "anonymous TLS authenticates no one; use tls-creds-x509 or tls-creds-psk",
  "authz-list": "use authz-list-file, with the same rules in a JSON file",
  "authz-pam": "PAM is not available; use authz-simple or authz-list-file",
  secret: "keys protected by a password are not supported; use an unencrypted server-key.pem",
};

export function parseObject(text: string): QemuObject {
  if (text.trimStart().startsWith("{")) throw new CliError("--object in JSON form is not supported by refcow nbd; use TYPE,id=ID,key=value,...");
  const parts = splitOptionList(text);
  const first = parts.shift();
  const type = first && first[1] === undefined ? first[0] : first?.[0] === "qom-type" ? first[1]! : "";
  if (!type) throw new CliError(`--object '${text}': expected TYPE,id=ID,...`);
  if (UNSUPPORTED_TYPES[type]) throw new CliError(`object type '${type}' is not supported by refcow nbd: ${UNSUPPORTED_TYPES[type]}`);
  const allowed = PROPERTIES[type];
  if (!allowed) throw new CliError(`invalid object type: ${type}`);
  const props = new Map<string, string>();
  let id: string | undefined;
  for (const [k, v] of parts) {
    if (v === undefined) throw new CliError(`Invalid parameter '${k}'`);
    if (k === "id") id = v;
    else if (allowed.includes(k)) props.set(k, v);
    else if (type.startsWith("tls-creds-") && UNSUPPORTED_PROPERTIES[k]) throw new CliError(`property '${type}.${k}' is not supported by refcow nbd: ${UNSUPPORTED_PROPERTIES[k]}`);
    else throw new CliError(`Property '${type}.${k}' not found`);
  }
  if (!id) throw new CliError("Parameter 'id' is missing");
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) throw new CliError(`Parameter 'id' expects an identifier`);
  return { type, id, props };
}

/** QEMU's boolean property values. */
function parseBool(o: QemuObject, key: string, fallback: boolean): boolean {
  const v = o.props.get(key);
  if (v === undefined) return fallback;
  if (["on", "yes", "true", "y"].includes(v)) return true;
  if (["off", "no", "false", "n"].includes(v)) return false;
  throw new CliError(`Parameter '${key}' expects 'on' or 'off'`);
}

function required(o: QemuObject, key: string): string {
  const v = o.props.get(key);
  if (v === undefined || v === "") throw new CliError(`Parameter '${key}' is missing`);
  return v;
}

/**
 * The TLS settings the options ask for, or undefined without --tls-creds. `objects` are the --object values
 * in order, `creds` and `authz` the ids of --tls-creds and --tls-authz.
 */
export function tlsSettingsOf(objects: readonly string[], creds: string | undefined, authz: string | undefined): TlsSettings | undefined {
  const byId = new Map<string, QemuObject>();
  for (const text of objects) {
    const o = parseObject(text);
    if (byId.has(o.id)) throw new CliError(`attempt to add duplicate property '${o.id}' to object (type 'container')`);
    byId.set(o.id, o);
  }
  if (creds === undefined) {
    if (authz !== undefined) throw new CliError("--tls-authz is not permitted without --tls-creds");
    return undefined;
  }
  const c = byId.get(creds);
  if (!c) throw new CliError(`No TLS credentials with id '${creds}'`);
  if (c.type !== "tls-creds-x509" && c.type !== "tls-creds-psk") throw new CliError(`Object with id '${creds}' is not TLS credentials`);
  const endpoint = c.props.get("endpoint") ?? "client";
  if (endpoint !== "server" && endpoint !== "client") throw new CliError(`Parameter 'endpoint' does not accept value '${endpoint}'`);
  if (endpoint !== "server") throw new CliError("Expecting TLS credentials with a server endpoint");
  const dir = required(c, "dir");
  let settings: TlsSettings;
  try {
    settings = { creds: c.type === "tls-creds-x509" ? loadX509Credentials(c.id, dir, parseBool(c, "verify-peer", true)) : loadPskCredentials(c.id, dir) };
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(messageOf(e));
  }
  if (authz !== undefined) settings.authz = authzOf(byId, authz);
  return settings;
}

function authzOf(byId: Map<string, QemuObject>, id: string): Authz {
  const a = byId.get(id);
  if (!a) throw new CliError(`No authorization object with id '${id}'`);
  if (a.type === "authz-simple") return { kind: "simple", id, identity: required(a, "identity") };
  if (a.type === "authz-list-file") {
    const filename = required(a, "filename");
    try {
      return { kind: "list-file", id, filename, refresh: parseBool(a, "refresh", true), list: loadAuthzList(filename) };
    } catch (e) {
      throw new CliError(messageOf(e));
    }
  }
  throw new CliError(`Object with id '${id}' is not an authorization object`);
}
