/**
 * TLS credentials made at test time with openssl (never committed), laid out as QEMU's tls-creds objects and
 * libnbd's tls-certificates want them:
 *
 *   server/       ca-cert.pem server-cert.pem server-key.pem     (the server's x509 directory)
 *   client/       ca-cert.pem client-cert.pem client-key.pem     (a client the CA signed: CLIENT_DN)
 *   other/        the same, for another name (OTHER_DN)             (for authz refusals)
 *   nocert/       ca-cert.pem only                                  (a client without a certificate)
 *   rogue/        ca-cert.pem (the CA and a rogue CA of the same name), client-cert.pem signed by the rogue
 *   psk/keys.psk, psk-bad/keys.psk   `PSK_USER:hexkey`, the same user with another key
 *   psk-stranger/keys.psk            `STRANGER:hexkey` (the right key, for a user the server does not know)
 *
 * The server certificate names localhost and 127.0.0.1 (QEMU's client checks the name it connected to).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

export const CLIENT_DN = "C=GB,O=Example Org,CN=client.example";
export const OTHER_DN = "C=GB,O=Example Org,CN=someone.else";
export const PSK_USER = "refcow-test";
export const STRANGER = "mallory";

export interface TestCredentials {
  root: string;
  server: string;
  client: string;
  other: string;
  nocert: string;
  rogue: string;
  psk: string;
  pskBad: string;
  pskStranger: string;
  /** The PSK itself (hex), as in psk/keys.psk. */
  pskKey: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

function subjectOf(dn: string): string {
  return "/" + dn.split(",").join("/");
}

/** A CA: key and self-signed certificate, named `name`. */
function makeCa(work: string, base: string, name: string): void {
  openssl(
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", `${base}-key.pem`, "-out", `${base}-cert.pem`, "-days", "3", "-subj", `/CN=${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    work,
  );
}

/** A leaf certificate for `dn` signed by the CA `ca`, with `ext` lines (key usages, names). */
function makeLeaf(work: string, base: string, dn: string, ca: string, ext: string[]): void {
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${base}-key.pem`, "-out", `${base}.csr`, "-subj", subjectOf(dn)], work);
  fs.writeFileSync(path.join(work, `${base}.ext`), ext.join("\n") + "\n");
  openssl(["x509", "-req", "-in", `${base}.csr`, "-CA", `${ca}-cert.pem`, "-CAkey", `${ca}-key.pem`, "-CAcreateserial", "-out", `${base}-cert.pem`, "-days", "3", "-extfile", `${base}.ext`], work);
}

const LEAF = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"];

export function makeTestCredentials(root: string): TestCredentials {
  const work = path.join(root, "work");
  fs.mkdirSync(work, { recursive: true });
  makeCa(work, "ca", "refcow test CA");
  // Same name as the real CA: a client certificate it signs names the real CA as its issuer.
  makeCa(work, "rogue-ca", "refcow test CA");
  makeLeaf(work, "server", "C=GB,O=Example Org,CN=localhost", "ca", [...LEAF, "extendedKeyUsage=serverAuth", "subjectAltName=DNS:localhost,IP:127.0.0.1"]);
  makeLeaf(work, "client", CLIENT_DN, "ca", [...LEAF, "extendedKeyUsage=clientAuth"]);
  makeLeaf(work, "other", OTHER_DN, "ca", [...LEAF, "extendedKeyUsage=clientAuth"]);
  makeLeaf(work, "rogue", CLIENT_DN, "rogue-ca", [...LEAF, "extendedKeyUsage=clientAuth"]);

  const dir = (name: string, files: Record<string, string[]>): string => {
    const d = path.join(root, name);
    fs.mkdirSync(d, { recursive: true });
    for (const [to, from] of Object.entries(files)) {
      fs.writeFileSync(path.join(d, to), from.map((f) => fs.readFileSync(path.join(work, f))).join(""));
      fs.chmodSync(path.join(d, to), 0o600);
    }
    return d;
  };
  const pskKey = randomBytes(32).toString("hex");
  const creds: TestCredentials = {
    root,
    server: dir("server", { "ca-cert.pem": ["ca-cert.pem"], "server-cert.pem": ["server-cert.pem"], "server-key.pem": ["server-key.pem"] }),
    client: dir("client", { "ca-cert.pem": ["ca-cert.pem"], "client-cert.pem": ["client-cert.pem"], "client-key.pem": ["client-key.pem"] }),
    other: dir("other", { "ca-cert.pem": ["ca-cert.pem"], "client-cert.pem": ["other-cert.pem"], "client-key.pem": ["other-key.pem"] }),
    nocert: dir("nocert", { "ca-cert.pem": ["ca-cert.pem"] }),
    rogue: dir("rogue", { "ca-cert.pem": ["ca-cert.pem", "rogue-ca-cert.pem"], "client-cert.pem": ["rogue-cert.pem"], "client-key.pem": ["rogue-key.pem"] }),
    psk: path.join(root, "psk"),
    pskBad: path.join(root, "psk-bad"),
    pskStranger: path.join(root, "psk-stranger"),
    pskKey,
  };
  fs.mkdirSync(creds.psk, { recursive: true });
  fs.mkdirSync(creds.pskBad, { recursive: true });
  fs.mkdirSync(creds.pskStranger, { recursive: true });
  fs.writeFileSync(path.join(creds.pskStranger, "keys.psk"), `${STRANGER}:${pskKey}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(creds.psk, "keys.psk"), `${PSK_USER}:${pskKey}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(creds.pskBad, "keys.psk"), `${PSK_USER}:${randomBytes(32).toString("hex")}\n`, { mode: 0o600 });
  fs.rmSync(work, { recursive: true, force: true });
  return creds;
}
