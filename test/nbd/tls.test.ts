/**
 * The NBD server with TLS and what a public port meets, on the wire (test/helpers/nbd-wire.ts, Node's TLS as
 * the client): STARTTLS before anything else, the handshake starting over inside TLS, X.509 clients checked
 * against the CA and the authz list, PSK clients against keys.psk; and the abuse — a handshake that never
 * finishes, options too long or too many, connections beyond the places, a write payload before
 * negotiation, plaintext after STARTTLS — each refused cleanly and logged once, while a client connected
 * all along keeps being served and the image stays untouched. Credentials are made by openssl at test time.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type * as tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import type { NbdExport } from "../../src/nbd/export.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import { Cmd, encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption, encodeRequest, Info, Opt, Rep } from "../../src/nbd/protocol.js";
import { NbdServer, type NbdServerOptions } from "../../src/nbd/server.js";
import { distinguishedName, globMatch } from "../../src/nbd/tls-authz.js";
import { loadPskCredentials, loadX509Credentials, parsePskFile } from "../../src/nbd/tls.js";
import { WireClient } from "../helpers/nbd-wire.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";
import { CLIENT_DN, makeTestCredentials, OTHER_DN, PSK_USER, type TestCredentials } from "../helpers/tls-creds.js";
import { X509Certificate } from "node:crypto";

const MiB = 1 << 20;
const SIZE = 4 * MiB;
const dir = tempDir("nbd-tls");
const image = path.join(dir, "tls.qcow2");
let creds: TestCredentials;
let img: ReturnType<typeof openImagePath>;
const servers: NbdServer[] = [];

function exportOf(): NbdExport {
  return {
    name: "",
    description: "tls test",
    port: inlinePort(img),
    readOnly: false,
    cache: "writeback",
    discard: "unmap",
    detectZeroes: "off",
    multiConn: true,
    allocationDepth: false,
    bitmaps: [],
  };
}

/** A server on its own socket, its log lines kept. */
async function serve(name: string, opts: NbdServerOptions): Promise<{ server: NbdServer; sock: string; logs: string[] }> {
  const logs: string[] = [];
  const server = new NbdServer(exportOf(), { persistent: true, shared: 8, ...opts, log: (m) => logs.push(m) });
  const sock = path.join(dir, `${name}.sock`);
  await server.listen({ socket: sock });
  servers.push(server);
  return { server, sock, logs };
}

function x509Client(d: string): tls.ConnectionOptions {
  const file = (n: string): Buffer | undefined => (fs.existsSync(path.join(d, n)) ? fs.readFileSync(path.join(d, n)) : undefined);
  return { ca: file("ca-cert.pem"), cert: file("client-cert.pem"), key: file("client-key.pem"), servername: "localhost" };
}

function pskClient(identity: string, keyHex: string): tls.ConnectionOptions {
  return {
    pskCallback: () => ({ identity, psk: Buffer.from(keyHex, "hex") }),
    // No certificate to check: the PSK authenticates the server.
    checkServerIdentity: () => undefined,
    ciphers: "ECDHE-PSK-AES128-GCM-SHA256:PSK-AES128-GCM-SHA256",
  };
}

async function opened(sock: string, tlsOpts: tls.ConnectionOptions): Promise<WireClient> {
  const c = await WireClient.connect(sock);
  await c.open({ tls: tlsOpts });
  return c;
}

/** The client's connection is closed by the server before it learns anything of the export. */
async function expectRefusedAfterTls(sock: string, tlsOpts: tls.ConnectionOptions): Promise<void> {
  const c = await WireClient.connect(sock);
  await c.greeting();
  c.send(encodeClientFlags(3));
  // With TLS 1.3 the client's handshake ends before the server has judged its certificate: the refusal
  // is the connection closing, at the latest on the first option.
  let refused = false;
  try {
    await c.startTls(tlsOpts);
    await c.option(Opt.LIST);
  } catch {
    refused = true;
  }
  expect(refused).toBe(true);
  await c.closed();
}

async function readBack(c: WireClient, offset: number, length: number, handle: bigint): Promise<Buffer> {
  c.request(Cmd.READ, handle, offset, length);
  const r = await c.reply();
  expect(r!.error).toBe(0);
  return WireClient.assemble(r!, offset, length);
}

beforeAll(() => {
  creds = makeTestCredentials(path.join(dir, "creds"));
  createImagePath(image, { size: SIZE });
  img = openImagePath(image, { cache: "writeback" });
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  img.close();
  expect(qemuCheck(image).status).toBe(0);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("credentials and identities", () => {
  it("keys.psk lines, the distinguished name as QEMU compares it, glob rules", () => {
    expect(parsePskFile("alice:00ff\n\nbob:ABCD\n", "k")).toEqual({ alice: "00ff", bob: "abcd" });
    expect(() => parsePskFile("alice:xyz\n", "k")).toThrow(/k:1: expected 'identity:hexkey'/);
    expect(() => parsePskFile("\n", "k")).toThrow(/no keys/);
    const cert = new X509Certificate(fs.readFileSync(path.join(creds.client, "client-cert.pem")));
    expect(distinguishedName(cert)).toBe(CLIENT_DN);
    expect(globMatch("C=GB,O=Example Org,CN=*.example", CLIENT_DN)).toBe(true);
    expect(globMatch("C=GB,*,CN=client.exampl?", CLIENT_DN)).toBe(true);
    expect(globMatch("C=[A-F]*", CLIENT_DN)).toBe(false);
    expect(globMatch("C=[!A-F]*", CLIENT_DN)).toBe(true);
    expect(globMatch("*.example", "x.example.org")).toBe(false);
    expect(() => loadX509Credentials("t", creds.psk, true)).toThrow(/Unable to access credentials .*ca-cert\.pem: No such file or directory/);
    expect(() => loadPskCredentials("t", creds.server)).toThrow(/keys\.psk: No such file or directory/);
    // A key that is not the certificate's is found at load time, not by the first client.
    const mixed = path.join(dir, "mixed");
    fs.mkdirSync(mixed);
    for (const f of ["ca-cert.pem", "server-cert.pem"]) fs.copyFileSync(path.join(creds.server, f), path.join(mixed, f));
    fs.copyFileSync(path.join(creds.client, "client-key.pem"), path.join(mixed, "server-key.pem"));
    expect(() => loadX509Credentials("t", mixed, true)).toThrow(/Unable to load the credentials/);
  });
});

describe("x509", () => {
  let sock: string;
  let logs: string[];
  beforeAll(async () => {
    ({ sock, logs } = await serve("x509", {
      tls: { creds: loadX509Credentials("tls0", creds.server, true), authz: { kind: "simple", id: "auth0", identity: CLIENT_DN } },
    }));
  });

  it("options before STARTTLS get ERR_TLS_REQD; after it the handshake starts over inside TLS", async () => {
    const c = await WireClient.connect(sock);
    await c.greeting();
    c.send(encodeClientFlags(3));
    const before: [number, Uint8Array?][] = [
      [Opt.LIST],
      [Opt.STRUCTURED_REPLY],
      [Opt.INFO, encodeInfoRequest({ name: "", infos: [Info.NAME] })],
      [Opt.SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "", queries: ["base:allocation"] })],
      [Opt.GO, encodeInfoRequest({ name: "", infos: [] })],
      [77],
    ];
    for (const [opt, data] of before) {
      const r = await c.option(opt, data);
      expect(r.map((x) => x.type), `option ${opt}`).toEqual([Rep.ERR_TLS_REQD]);
    }
    expect((await c.option(Opt.STARTTLS, new Uint8Array(1)))[0]!.type).toBe(Rep.ERR_INVALID);
    await c.startTls(x509Client(creds.client));
    expect((await c.option(Opt.STARTTLS))[0]!.type).toBe(Rep.ERR_INVALID);
    expect((await c.option(Opt.LIST)).map((r) => r.type)).toEqual([Rep.SERVER, Rep.ACK]);
    // STRUCTURED_REPLY asked in the clear (and refused) counts for nothing: SET_META_CONTEXT needs it again.
    expect((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "", queries: ["base:allocation"] })))[0]!.type).toBe(Rep.ERR_INVALID);
    const go = await c.option(Opt.GO, encodeInfoRequest({ name: "", infos: [] }));
    expect(go[go.length - 1]!.type).toBe(Rep.ACK);
    const data = Buffer.alloc(64 << 10, 0x5a);
    c.request(Cmd.WRITE, 1n, MiB, data.length, 0, data);
    expect((await c.reply())!.error).toBe(0);
    c.request(Cmd.READ, 2n, MiB, data.length);
    const r = await c.reply((h) => (h === 2n ? data.length : 0));
    expect(Buffer.compare(r!.data![0]!.bytes, data)).toBe(0);
    c.request(Cmd.DISC, 3n, 0, 0);
    await c.closed();
  });

  it("handshakes at once, good and bad mixed: each client gets its own verdict", async () => {
    const good = Array.from({ length: 4 }, () => opened(sock, x509Client(creds.client)));
    const bad = Array.from({ length: 3 }, (_, i) => expectRefusedAfterTls(sock, x509Client([creds.nocert, creds.rogue, creds.other][i]!)));
    const clients = await Promise.all(good);
    await Promise.all(bad);
    for (const [i, c] of clients.entries()) {
      expect((await readBack(c, MiB, 4096, BigInt(i + 1))).length).toBe(4096);
      c.destroy();
    }
  });

  it("ABORT is answered in the clear; EXPORT_NAME in the clear closes the connection", async () => {
    const a = await WireClient.connect(sock);
    await a.greeting();
    a.send(encodeClientFlags(3));
    expect((await a.option(Opt.ABORT))[0]!.type).toBe(Rep.ACK);
    await a.closed();
    const e = await WireClient.connect(sock);
    await e.greeting();
    e.send(encodeClientFlags(3));
    e.send(encodeOption(Opt.EXPORT_NAME));
    expect(await e.optionReply()).toBeNull();
    await e.closed();
  });

  it("refused: no certificate, a certificate the CA did not sign, a name authz does not hold — each logged once", async () => {
    const cases: [string, RegExp][] = [
      [creds.nocert, /No certificate was found/],
      [creds.rogue, /Verify failed: /],
      [creds.other, new RegExp(`TLS x509 authz check for ${OTHER_DN} is denied`)],
    ];
    for (const [d, line] of cases) {
      const before = logs.length;
      await expectRefusedAfterTls(sock, x509Client(d));
      // The server logs when it closes; wait for the close to have been handled.
      await new Promise((r) => setImmediate(r));
      expect(logs.slice(before), d).toHaveLength(1);
      expect(logs[before], d).toMatch(line);
    }
    const c = await opened(sock, x509Client(creds.client));
    c.destroy();
  });
});

describe("write payloads in TLS records of their own", () => {
  it("a payload whole in its own record, split over two, or sharing one with the next request: each lands whole", async () => {
    const { sock } = await serve("records", { tls: { creds: loadPskCredentials("tls0", creds.psk) } });
    const c = await opened(sock, pskClient(PSK_USER, creds.pskKey));
    const payload = (k: number): Buffer => Buffer.alloc(4096, 0x10 + k);
    // In the last MiB of the image, which no other test writes.
    const at = (k: number): number => 3 * MiB + (k - 1) * 8192;
    const header = (handle: bigint, k: number, length: number): Uint8Array => encodeRequest({ type: Cmd.WRITE, flags: 0, handle, offset: at(k), length });
    // Each send() is one TLS record, which the server receives as one read.
    c.send(header(1n, 1, 4096));
    c.send(payload(1));
    expect((await c.reply())!.error).toBe(0);
    c.send(header(2n, 2, 4096));
    c.send(payload(2).subarray(0, 1000));
    c.send(payload(2).subarray(1000));
    expect((await c.reply())!.error).toBe(0);
    c.send(header(3n, 3, 4096));
    c.send(Buffer.concat([payload(3), header(4n, 4, 4096)]));
    c.send(payload(4));
    expect((await c.reply())!.error).toBe(0);
    expect((await c.reply())!.error).toBe(0);
    for (const k of [1, 2, 3, 4]) expect((await readBack(c, at(k), 4096, BigInt(10 + k))).equals(payload(k)), `write ${k}`).toBe(true);
    c.destroy();
  });
});

describe("psk", () => {
  let sock: string;
  let logs: string[];
  beforeAll(async () => {
    ({ sock, logs } = await serve("psk", { tls: { creds: loadPskCredentials("tls0", creds.psk) } }));
  });

  it("the identity with its key is served; a wrong key or an unknown identity fails the TLS handshake", async () => {
    const c = await opened(sock, pskClient(PSK_USER, creds.pskKey));
    expect((await readBack(c, 0, 4096, 1n)).equals(Buffer.alloc(4096))).toBe(true);
    for (const [id, key] of [[PSK_USER, "00".repeat(32)], ["mallory", creds.pskKey]] as const) {
      const before = logs.length;
      const bad = await WireClient.connect(sock);
      await bad.greeting();
      bad.send(encodeClientFlags(3));
      await expect(bad.startTls(pskClient(id, key))).rejects.toThrow();
      await bad.closed();
      await new Promise((r) => setImmediate(r));
      expect(logs.slice(before)).toHaveLength(1);
      expect(logs[before]).toMatch(/TLS handshake failed/);
    }
    expect((await readBack(c, 0, 4096, 2n)).length).toBe(4096);
    c.destroy();
  });
});

describe("abuse", () => {
  let sock: string;
  let logs: string[];
  /** Connected over TLS before the abuse begins, and read from after each case. */
  let bystander: WireClient;
  let handle = 100n;
  const psk = (): tls.ConnectionOptions => pskClient(PSK_USER, creds.pskKey);
  const marker = Buffer.alloc(4096, 0xc3);

  beforeAll(async () => {
    ({ sock, logs } = await serve("abuse", { tls: { creds: loadPskCredentials("tls0", creds.psk) }, shared: 3, maxWaiting: 2 }));
    bystander = await opened(sock, psk());
    bystander.request(Cmd.WRITE, handle++, 2 * MiB, marker.length, 0, marker);
    expect((await bystander.reply())!.error).toBe(0);
  });

  afterAll(async () => {
    // The image holds what the bystander wrote and nothing any abuser sent.
    expect((await readBack(bystander, 2 * MiB, marker.length, handle++)).equals(marker)).toBe(true);
    expect((await readBack(bystander, 0, MiB, handle++)).equals(Buffer.alloc(MiB))).toBe(true);
    bystander.destroy();
  });

  async function bystanderStillServed(): Promise<void> {
    expect((await readBack(bystander, 2 * MiB, marker.length, handle++)).equals(marker)).toBe(true);
  }

  /** Waits for the server's log to have one more line, and returns it. */
  async function nextLog(before: number, lines = logs): Promise<string> {
    while (lines.length === before) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20));
    expect(lines.slice(before)).toHaveLength(1);
    return lines[before]!;
  }

  it("a handshake that never finishes is cut at the deadline: idle after the greeting, or silent after STARTTLS", async () => {
    const d = await serve("deadline", { tls: { creds: loadPskCredentials("tls0", creds.psk) }, handshakeLimitMs: 300 });
    const served = await opened(d.sock, psk());
    for (const stage of ["greeting", "starttls"]) {
      const before = d.logs.length;
      const c = await WireClient.connect(d.sock);
      await c.greeting();
      if (stage === "starttls") {
        c.send(encodeClientFlags(3));
        expect((await c.option(Opt.STARTTLS))[0]!.type).toBe(Rep.ACK);
      }
      await c.closed();
      expect(await nextLog(before, d.logs), stage).toMatch(/not finished within 0.3 s/);
    }
    // A client past the handshake has no deadline.
    expect((await readBack(served, 0, 4096, 1n)).length).toBe(4096);
    served.destroy();
    await bystanderStillServed();
  });

  it("option data over the bound gets ERR_TOO_BIG and the connection closes, its data unread", async () => {
    const before = logs.length;
    const c = await WireClient.connect(sock);
    await c.greeting();
    const o = Buffer.from(encodeOption(Opt.LIST));
    o.writeUInt32BE(0xffffffff, 12);
    c.send(Buffer.concat([encodeClientFlags(3), o]));
    const r = await c.optionReply();
    expect(r!.type).toBe(Rep.ERR_TOO_BIG);
    await c.closed();
    expect(await nextLog(before)).toMatch(/with 4294967295 bytes of data/);
    await bystanderStillServed();
  });

  it("more options than the bound: each answered, then the connection closes", async () => {
    const before = logs.length;
    const c = await WireClient.connect(sock);
    await c.greeting();
    const one = encodeOption(Opt.INFO, encodeInfoRequest({ name: "", infos: [] }));
    c.send(Buffer.concat([encodeClientFlags(3), ...Array.from({ length: 4097 }, () => one)]));
    let answered = 0;
    for (let r = await c.optionReply(); r; r = await c.optionReply()) {
      expect(r.type).toBe(Rep.ERR_TLS_REQD);
      answered++;
    }
    expect(answered).toBe(4096);
    expect(await nextLog(before)).toMatch(/more than 4096 options/);
    await bystanderStillServed();
  });

  it("plaintext sent after STARTTLS, before its reply, is refused: no reply, connection closed", async () => {
    const before = logs.length;
    const c = await WireClient.connect(sock);
    await c.greeting();
    c.send(Buffer.concat([encodeClientFlags(3), encodeOption(Opt.STARTTLS), encodeOption(Opt.GO, encodeInfoRequest({ name: "", infos: [] }))]));
    expect(await c.optionReply()).toBeNull();
    await c.closed();
    expect(await nextLog(before)).toMatch(/plaintext data after NBD_OPT_STARTTLS/);
    await bystanderStillServed();
  });

  it("plaintext options after STARTTLS's reply, instead of a TLS handshake, fail the handshake: connection closed", async () => {
    const before = logs.length;
    const c = await WireClient.connect(sock);
    await c.greeting();
    c.send(encodeClientFlags(3));
    expect((await c.option(Opt.STARTTLS))[0]!.type).toBe(Rep.ACK);
    c.send(encodeOption(Opt.GO, encodeInfoRequest({ name: "", infos: [] })));
    await c.closed();
    expect(await nextLog(before)).toMatch(/TLS handshake failed/);
    await bystanderStillServed();
  });

  it("a write payload sent before negotiating is refused before it is buffered", async () => {
    for (const flags of [false, true]) {
      const before = logs.length;
      const c = await WireClient.connect(sock);
      await c.greeting();
      const total = 64 * MiB;
      const header = encodeRequest({ type: Cmd.WRITE, flags: 0, handle: 1n, offset: 0, length: total });
      if (flags) c.send(encodeClientFlags(3));
      c.send(header);
      const chunk = Buffer.alloc(MiB, 0xee);
      let sent = 0;
      let closed = false;
      void c.closed().then(() => (closed = true));
      while (!closed && sent < total) {
        const ok = await new Promise<boolean>((resolve) => {
          if (c.socket.destroyed) return resolve(false);
          c.socket.write(chunk, (err) => resolve(!err));
        });
        if (!ok) break;
        sent += chunk.length;
      }
      await c.closed();
      // What the server took before closing is at most what the socket buffers hold, far from all of it.
      expect(sent, `flags sent first: ${flags}`).toBeLessThan(total);
      expect(await nextLog(before)).toMatch(flags ? /magic/i : /unknown client flags/);
    }
    await bystanderStillServed();
  });

  it("connections beyond the places wait, beyond the waiting room are closed at once (logged once per burst)", async () => {
    // Places: 3; the bystander holds one, two clients in transmission the others.
    const holders = await Promise.all([0, 1].map(() => opened(sock, psk())));
    const before = logs.length;
    const waiting = [await WireClient.connect(sock), await WireClient.connect(sock)];
    const extra = [await WireClient.connect(sock), await WireClient.connect(sock), await WireClient.connect(sock)];
    await Promise.all(extra.map((c) => c.closed()));
    await new Promise((r) => setTimeout(r, 20));
    expect(logs.slice(before)).toHaveLength(1);
    expect(logs[before]).toMatch(/refusing connections: 3 served and 2 waiting/);
    // A place frees: the first waiting client gets its greeting, and then the second.
    holders[0]!.destroy();
    await waiting[0]!.greeting();
    holders[1]!.destroy();
    await waiting[1]!.greeting();
    for (const w of waiting) w.destroy();
    await bystanderStillServed();
  });
});
