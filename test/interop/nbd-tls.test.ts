/**
 * `refcow nbd` with TLS, judged against qemu-nbd given the same options: the same client commands — QEMU's
 * TLS client (qemu-io, qemu-img with --object tls-creds-*,endpoint=client) and libnbd's (nbdinfo, nbdcopy with
 * nbds:// URIs) — read and write the same data through both with X.509 (an authz list in force) and with
 * PSK, on Unix sockets and on TCP; and every client that qemu-nbd refuses (no TLS, no certificate, a
 * certificate a rogue CA signed, a name the authz list does not hold, a wrong PSK, an unknown PSK user)
 * refcow refuses with the same client-side error class, while it goes on serving the others. The images are
 * then compared with qemu-img compare and checked with qemu-img check. Credentials are made at test time.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClientTls, NbdClient } from "../../src/nbd/client.js";
import { accepts, killLeftoverServers, REFCOW_BIN, run } from "../helpers/nbd.js";
import { qemuCheck, qemuCompare, qemuImg, tempDir } from "../helpers/qemu.js";
import { CLIENT_DN, makeTestCredentials, PSK_USER, STRANGER, type TestCredentials } from "../helpers/tls-creds.js";

const dir = tempDir("nbd-tls-interop");
const SIZE = 4 << 20;
let creds: TestCredentials;
const children = new Set<ChildProcess>();

afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  killLeftoverServers();
  fs.rmSync(dir, { recursive: true, force: true });
});

beforeAll(() => {
  creds = makeTestCredentials(path.join(dir, "creds"));
});

type Where = { socket: string } | { port: number };

interface Server {
  name: "refcow" | "qemu-nbd";
  where: Where;
  image: string;
  child: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.once("error", reject);
  });
}

function reachable(where: Where): Promise<boolean> {
  if ("socket" in where) return accepts(where.socket);
  return new Promise((resolve) => {
    const c = net.createConnection({ port: where.port, host: "127.0.0.1" }, () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/** Starts refcow nbd or qemu-nbd (persistent) on `image` with the same TLS options; resolves once it listens. */
async function startServer(name: Server["name"], image: string, where: Where, tlsArgs: string[], extra: string[] = [], warmUp = false): Promise<Server> {
  const listen = "socket" in where ? ["-k", where.socket] : ["-b", "127.0.0.1", "-p", String(where.port)];
  const args = ["-t", ...listen, ...tlsArgs, "-f", "qcow2", ...extra, image];
  const refcowArgs = [REFCOW_BIN, "nbd", "-v", ...(warmUp ? [] : ["--no-warm-up"]), ...args];
  const child = name === "refcow" ? spawn(process.execPath, refcowArgs, { stdio: ["ignore", "ignore", "pipe"] }) : spawn("qemu-nbd", args, { stdio: ["ignore", "ignore", "pipe"] });
  children.add(child);
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited before serving: ${err}`);
    if (await reachable(where)) {
      return {
        name,
        where,
        image,
        child,
        stderr: () => err,
        stop: async () => {
          child.kill("SIGTERM");
          await exited;
        },
      };
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGKILL");
  throw new Error(`${name} did not start listening: ${err}`);
}

/** How a client authenticates. */
type ClientCreds = { x509: string } | { psk: string; user: string } | "none";

function nbdUriOf(where: Where, c: ClientCreds): string {
  const query: string[] = [];
  if ("socket" in where) query.push(`socket=${where.socket}`);
  if (c !== "none" && "x509" in c) query.push(`tls-certificates=${c.x509}`);
  if (c !== "none" && "psk" in c) query.push(`tls-psk-file=${path.join(c.psk, "keys.psk")}`);
  const scheme = `nbd${c === "none" ? "" : "s"}${"socket" in where ? "+unix" : ""}`;
  // libnbd takes the PSK user from the URI's user part.
  const user = c !== "none" && "psk" in c ? `${c.user}@` : "";
  const host = "socket" in where ? "" : `127.0.0.1:${where.port}`;
  return `${scheme}://${user}${host}/?${query.join("&")}`;
}

/** qemu-io / qemu-img arguments: the client's --object and the nbd driver's --image-opts. */
function qemuOpts(where: Where, c: ClientCreds): string[] {
  const server = "socket" in where ? `server.type=unix,server.path=${where.socket}` : `server.type=inet,server.host=127.0.0.1,server.port=${where.port}`;
  if (c === "none") return ["--image-opts", `driver=nbd,${server}`];
  const object = "x509" in c ? `tls-creds-x509,id=tls0,dir=${c.x509},endpoint=client` : `tls-creds-psk,id=tls0,dir=${c.psk},endpoint=client,username=${c.user}`;
  // On a Unix socket there is no host name to check the server's certificate against: name it.
  const hostname = "socket" in where && "x509" in c ? ",tls-hostname=localhost" : "";
  return ["--object", object, "--image-opts", `driver=nbd,${server},tls-creds=tls0${hostname}`];
}

/** The class of a client's failure: what the two servers must agree on (the wording may differ). */
function errorClass(r: { status: number; stderr: string; stdout: string }): string {
  if (r.status === 0) return "ok";
  const text = r.stderr + r.stdout;
  if (/requires TLS|not permitted before TLS|TLS negotiation required/.test(text)) return "tls required";
  if (/gnutls_handshake|TLS handshake failed/.test(text)) return "tls handshake failed";
  if (/gnutls_record_(recv|send)|(read from|write to) TLS channel/.test(text)) return "closed after the tls handshake";
  return `other: ${text.trim()}`;
}

const nbdinfo = (where: Where, c: ClientCreds) => run("nbdinfo", ["--size", nbdUriOf(where, c)]);
const qemuIoOver = (where: Where, c: ClientCreds, cmds: string[]) => run("qemu-io", [...qemuOpts(where, c), ...cmds.flatMap((x) => ["-c", x])]);

/** qemu-io's output without its timings. */
function ioOutput(s: string): string {
  return s
    .split("\n")
    .filter((l) => !/ops\/sec|bytes, \d+ ops;/.test(l))
    .join("\n");
}

/**
 * The same session of clients against one server: nbdcopy writes the whole disk, qemu-io writes over parts
 * and reads them back, nbdinfo tells the size, then qemu-img convert and nbdcopy read the disk out.
 * Returns what each printed and the two copies read out.
 */
async function session(s: Server, c: ClientCreds, source: string): Promise<{ outputs: string[]; copies: Buffer[] }> {
  const tag = `${s.name}-${path.basename(s.image, ".qcow2")}`;
  const outputs: string[] = [];
  const copyIn = await run("nbdcopy", [source, nbdUriOf(s.where, c)]);
  expect(copyIn.status, `${tag} nbdcopy in: ${copyIn.stderr}`).toBe(0);
  const io = await qemuIoOver(s.where, c, ["write -P 0x5a 65536 131072", "write -z 1048576 65536", "read -P 0x5a 65536 131072", "read -P 0 1048576 65536", "flush"]);
  expect(io.status, `${tag} qemu-io: ${io.stderr}`).toBe(0);
  outputs.push(ioOutput(io.stdout));
  const size = await nbdinfo(s.where, c);
  expect(size.status, `${tag} nbdinfo: ${size.stderr}`).toBe(0);
  outputs.push(size.stdout);
  const out1 = path.join(dir, `${tag}-convert.raw`);
  const conv = await run("qemu-img", ["convert", ...qemuOpts(s.where, c), "-O", "raw", out1]);
  expect(conv.status, `${tag} qemu-img convert: ${conv.stderr}`).toBe(0);
  const out2 = path.join(dir, `${tag}-copy.raw`);
  const copyOut = await run("nbdcopy", [nbdUriOf(s.where, c), out2]);
  expect(copyOut.status, `${tag} nbdcopy out: ${copyOut.stderr}`).toBe(0);
  return { outputs, copies: [fs.readFileSync(out1), fs.readFileSync(out2)] };
}

function newImage(name: string): string {
  const file = path.join(dir, name);
  qemuImg(["create", "-q", "-f", "qcow2", file, String(SIZE)]);
  return file;
}

interface Kind {
  name: string;
  serverArgs: () => string[];
  good: () => ClientCreds;
  /** Each refused client, and how it fails with qemu-nbd: the class both servers must produce. */
  refused: () => [string, ClientCreds, string][];
}

const KINDS: Kind[] = [
  {
    name: "x509 with an authz list",
    serverArgs: () => [
      "--object", `tls-creds-x509,id=tls0,dir=${creds.server},endpoint=server,verify-peer=on`,
      "--object", `authz-simple,id=auth0,identity=${CLIENT_DN.replace(/,/g, ",,")}`,
      "--tls-creds=tls0", "--tls-authz=auth0",
    ],
    good: () => ({ x509: creds.client }),
    refused: () => [
      ["no TLS", "none", "tls required"],
      ["no client certificate", { x509: creds.nocert }, "closed after the tls handshake"],
      ["a certificate a rogue CA signed", { x509: creds.rogue }, "closed after the tls handshake"],
      ["a name the authz list does not hold", { x509: creds.other }, "closed after the tls handshake"],
    ],
  },
  {
    name: "psk",
    serverArgs: () => ["--object", `tls-creds-psk,id=tls0,dir=${creds.psk},endpoint=server`, "--tls-creds", "tls0"],
    good: () => ({ psk: creds.psk, user: PSK_USER }),
    refused: () => [
      ["no TLS", "none", "tls required"],
      ["a wrong key", { psk: creds.pskBad, user: PSK_USER }, "tls handshake failed"],
      ["an unknown user", { psk: creds.pskStranger, user: STRANGER }, "tls handshake failed"],
    ],
  },
];

describe.each(KINDS)("$name", (kind) => {
  it.each([
    ["unix", "inline"],
    ["tcp", "ring"],
  ] as const)("over %s (refcow --serve=%s): qemu-io, qemu-img, nbdinfo and nbdcopy read and write the same through refcow nbd as through qemu-nbd", async (transport, serveMode) => {
    const source = path.join(dir, "source.raw");
    fs.writeFileSync(source, randomBytes(SIZE));
    const results = [];
    for (const name of ["refcow", "qemu-nbd"] as const) {
      const image = newImage(`${name}-${kind.name.split(" ")[0]}-${transport}.qcow2`);
      const where: Where = transport === "unix" ? { socket: path.join(dir, `${name}.sock`) } : { port: await freePort() };
      const s = await startServer(name, image, where, kind.serverArgs(), name === "refcow" ? [`--serve=${serveMode}`] : []);
      try {
        results.push(await session(s, kind.good(), source));
      } finally {
        await s.stop();
      }
      expect(qemuCheck(image).status, `${name}: qemu-img check`).toBe(0);
    }
    const [mine, theirs] = results;
    expect(mine!.outputs).toEqual(theirs!.outputs);
    for (const copy of [...mine!.copies, ...theirs!.copies]) expect(copy.equals(mine!.copies[0]!)).toBe(true);
    // What the clients wrote: the source, then qemu-io's pattern and zeroes.
    const expected = fs.readFileSync(source);
    expected.fill(0x5a, 65536, 65536 + 131072);
    expected.fill(0, 1048576, 1048576 + 65536);
    expect(mine!.copies[0]!.equals(expected)).toBe(true);
    expect(qemuCompare(path.join(dir, `refcow-${kind.name.split(" ")[0]}-${transport}.qcow2`), path.join(dir, `qemu-nbd-${kind.name.split(" ")[0]}-${transport}.qcow2`))).toBe(true);
  }, 120_000);

  it("each client qemu-nbd refuses, refcow nbd refuses alike, and goes on serving the others", async () => {
    const classes: Record<string, Record<string, string>> = {};
    for (const name of ["refcow", "qemu-nbd"] as const) {
      const image = newImage(`${name}-${kind.name.split(" ")[0]}-refusals.qcow2`);
      const where: Where = { socket: path.join(dir, `${name}-refusals.sock`) };
      const s = await startServer(name, image, where, kind.serverArgs());
      try {
        const seen: Record<string, string> = {};
        for (const [what, c, expected] of kind.refused()) {
          seen[`nbdinfo, ${what}`] = errorClass(await nbdinfo(where, c));
          seen[`qemu-io, ${what}`] = errorClass(await qemuIoOver(where, c, ["read 0 4096"]));
          expect([seen[`nbdinfo, ${what}`], seen[`qemu-io, ${what}`]], `${name}: ${what}`).toEqual([expected, expected]);
          // The server is still there for a client it accepts.
          const ok = await nbdinfo(where, kind.good());
          expect(ok.status, `${name} after ${what}: ${ok.stderr}`).toBe(0);
          expect(ok.stdout.trim()).toBe(String(SIZE));
        }
        classes[name] = seen;
      } finally {
        await s.stop();
      }
      expect(qemuCheck(image).status).toBe(0);
      if (name === "refcow") {
        // Each refusal is one line of refcow's -v log.
        const lines = s.stderr().split("\n").filter((l) => l.startsWith("refcow nbd: handshake:"));
        expect(lines.length, s.stderr()).toBeGreaterThanOrEqual(kind.refused().length);
      }
    }
    expect(classes.refcow).toEqual(classes["qemu-nbd"]);
  }, 120_000);
});

describe("the warm-up over TLS", () => {
  it("refcow's own NBD client (the warm-up's) upgrades with STARTTLS as qemu-nbd expects, with X.509 and with PSK", async () => {
    const keyHex = fs.readFileSync(path.join(creds.psk, "keys.psk"), "utf8").trim().split(":")[1]!;
    const cases: [string, string[], ClientTls][] = [
      ["x509", ["--object", `tls-creds-x509,id=tls0,dir=${creds.server},endpoint=server,verify-peer=off`, "--tls-creds=tls0"], { anyServerCertificate: true }],
      ["psk", ["--object", `tls-creds-psk,id=tls0,dir=${creds.psk},endpoint=server`, "--tls-creds=tls0"], { psk: { identity: PSK_USER, key: Buffer.from(keyHex, "hex") } }],
    ];
    for (const [kind, args, secure] of cases) {
      const image = newImage(`own-client-${kind}.qcow2`);
      const where = { socket: path.join(dir, `own-client-${kind}.sock`) };
      const s = await startServer("qemu-nbd", image, where, args);
      try {
        // Without TLS, qemu-nbd refuses the export: the client's STARTTLS is what lets it in.
        await expect(NbdClient.connect(where.socket)).rejects.toThrow(/NBD_OPT_GO refused/);
        const c = await NbdClient.connect(where.socket, secure);
        expect(c.encrypted).toBe(true);
        expect(c.size).toBe(SIZE);
        await c.write(65536, new Uint8Array(8192).fill(0x3c));
        await c.flush();
        expect(Buffer.from(await c.read(65536, 8192)).equals(Buffer.alloc(8192, 0x3c))).toBe(true);
        await c.close();
      } finally {
        await s.stop();
      }
      expect(qemuCheck(image).status).toBe(0);
      const io = await run("qemu-io", ["-f", "qcow2", "-c", "read -P 0x3c 65536 8192", "-c", "read -P 0 0 65536", image]);
      expect(io.status, io.stderr).toBe(0);
      expect(io.stdout).not.toMatch(/Pattern verification failed/);
    }
  }, 120_000);

  it("refcow nbd warmed up over TLS (X.509, verify-peer and an authz list in force) serves qemu-io and still refuses what it refused", async () => {
    const image = newImage("warm.qcow2");
    const where = { socket: path.join(dir, "warm.sock") };
    const s = await startServer("refcow", image, where, KINDS[0]!.serverArgs(), [], true);
    try {
      const io = await qemuIoOver(where, { x509: creds.client }, ["write -P 0x7e 0 65536", "read -P 0x7e 0 65536", "flush"]);
      expect(io.status, io.stderr).toBe(0);
      expect(io.stdout).not.toMatch(/Pattern verification failed/);
      expect(errorClass(await nbdinfo(where, { x509: creds.other }))).toBe("closed after the tls handshake");
      expect(errorClass(await nbdinfo(where, "none"))).toBe("tls required");
    } finally {
      await s.stop();
    }
    expect(s.stderr()).not.toMatch(/warm-up failed/);
    expect(qemuCheck(image).status).toBe(0);
  }, 120_000);
});

describe("refcow nbd's TLS options", () => {
  it("bad --object and --tls-* options are refused at start, with QEMU's words where QEMU has them", async () => {
    const image = newImage("options.qcow2");
    const sock = path.join(dir, "options.sock");
    const cases: [string[], RegExp][] = [
      [["--tls-creds=nope"], /No TLS credentials with id 'nope'/],
      [["--object", `tls-creds-x509,id=t,dir=${creds.server}`, "--tls-creds=t"], /Expecting TLS credentials with a server endpoint/],
      [["--object", `tls-creds-x509,id=t,dir=${creds.psk},endpoint=server`, "--tls-creds=t"], /Unable to access credentials .*ca-cert\.pem: No such file or directory/],
      [["--object", `tls-creds-psk,id=t,dir=${creds.server},endpoint=server`, "--tls-creds=t"], /keys\.psk: No such file or directory/],
      [["--object", `tls-creds-x509,id=t,dir=${creds.server},endpoint=server,bogus=1`, "--tls-creds=t"], /Property 'tls-creds-x509.bogus' not found/],
      [["--object", `tls-creds-x509,id=t,dir=${creds.server},endpoint=server,priority=NORMAL`, "--tls-creds=t"], /property 'tls-creds-x509.priority' is not supported by refcow nbd/],
      [["--object", "authz-simple,id=a,identity=x", "--tls-authz=a"], /--tls-authz is not permitted without --tls-creds/],
      [["--object", `tls-creds-psk,id=t,dir=${creds.psk},endpoint=server`, "--tls-creds=t", "--tls-authz=t"], /Object with id 't' is not an authorization object/],
      [["--object", "tls-creds-anon,id=t,endpoint=server", "--tls-creds=t"], /object type 'tls-creds-anon' is not supported/],
      [["--object", `authz-list-file,id=a,filename=${path.join(dir, "missing.json")}`, "--object", `tls-creds-psk,id=t,dir=${creds.psk},endpoint=server`, "--tls-creds=t", "--tls-authz=a"], /missing\.json: No such file or directory/],
      [["--handshake-limit=soon"], /Invalid handshake limit 'soon'/],
    ];
    for (const [args, message] of cases) {
      const r = await run(process.execPath, [REFCOW_BIN, "nbd", "-k", sock, ...args, image]);
      expect(r.status, args.join(" ")).not.toBe(0);
      expect(r.stderr, args.join(" ")).toMatch(message);
    }
  }, 120_000);

  it("authz-list-file: glob and exact rules, the list's own policy, re-read for each client", async () => {
    const image = newImage("list.qcow2");
    const list = path.join(dir, "authz.json");
    const write = (rules: unknown[], policy = "deny"): void => fs.writeFileSync(list, JSON.stringify({ rules, policy }));
    write([{ match: "C=GB,O=Example Org,CN=*.example", policy: "allow", format: "glob" }]);
    const where: Where = { socket: path.join(dir, "list.sock") };
    const s = await startServer("refcow", image, where, [
      "--object", `tls-creds-x509,id=tls0,dir=${creds.server},endpoint=server`,
      "--object", `authz-list-file,id=auth0,filename=${list}`,
      "--tls-creds=tls0", "--tls-authz=auth0",
    ]);
    try {
      expect((await nbdinfo(where, { x509: creds.client })).status).toBe(0);
      expect((await nbdinfo(where, { x509: creds.other })).status).not.toBe(0);
      write([{ match: CLIENT_DN, policy: "deny" }], "allow");
      expect((await nbdinfo(where, { x509: creds.client })).status).not.toBe(0);
      expect((await nbdinfo(where, { x509: creds.other })).status).toBe(0);
    } finally {
      await s.stop();
    }
  }, 120_000);
});
