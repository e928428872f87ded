/**
 * The metadata contexts of `refcow nbd` beyond base:allocation — qemu:allocation-depth (-A) and
 * qemu:dirty-bitmap:NAME (-B) — judged against qemu-nbd 7.2 on the same image through libnbd's nbdinfo, and
 * their negotiation on the wire (test/helpers/nbd-wire.ts): LIST and SET queries, context ids, one
 * BLOCK_STATUS chunk per selected context, REQ_ONE.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openImagePath } from "../../src/open/open-path.js";
import { nbdExport } from "../../src/nbd/export.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import {
  BASE_ALLOCATION,
  BaseAllocation,
  Cmd,
  CmdFlag,
  decodeMetaContextReply,
  encodeMetaContextRequest,
  Err,
  Opt,
  QEMU_ALLOCATION_DEPTH,
  Rep,
} from "../../src/nbd/protocol.js";
import { NbdServer } from "../../src/nbd/server.js";
import type { SyncDisk } from "../../src/disk/sync-disk.js";
import { accepts, killLeftoverServers, nbdUri, refcow, run, socketIn, startNbd } from "../helpers/nbd.js";
import { WireClient } from "../helpers/nbd-wire.js";
import { qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("nbd-contexts");
const KiB = 1024;
const MiB = 1024 * KiB;

/** qemu-nbd processes started here, killed at the end whatever happened. */
const qemuServers = new Set<ChildProcess>();

afterAll(() => {
  killLeftoverServers();
  for (const c of qemuServers) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * A chain of three qcow2 layers, each shorter than the one above, with data, compressed, zero clusters,
 * discarded clusters and (extended L2) subclusters in each, so that every depth from 0 to 3 shows up,
 * including ranges past the end of a shorter backing file.
 */
function makeChain(): string {
  const base = path.join(dir, "base.qcow2");
  const mid = path.join(dir, "mid.qcow2");
  const top = path.join(dir, "top.qcow2");
  qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=16384,extended_l2=on", base, String(MiB)]);
  qemuIo(base, ["write -P 1 0 8k", "write -c -P 2 64k 16k", "write -z 128k 64k", "write -P 5 300k 1k"]);
  qemuImg(["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", "-o", "cluster_size=65536", mid, String(1536 * KiB)]);
  qemuIo(mid, ["write -P 3 4k 2k", "discard 0 64k", "write -z 1200k 4k", "write -P 6 700k 100k"]);
  qemuImg(["create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", "-o", "cluster_size=16384,extended_l2=on", top, String(2 * MiB)]);
  qemuIo(top, ["write -P 4 6k 1k", "write -z 400k 12k", "write -P 4 1700k 4k", "write -P 7 720k 8k"]);
  return top;
}

async function waitForSocket(socket: string, child: ChildProcess, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited before serving`);
    if (await accepts(socket)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what} did not create ${socket}`);
}

/** Runs nbdinfo with `args` against qemu-nbd, then refcow nbd (each serve mode), with the same server options. */
async function nbdinfoBoth(image: string, serverArgs: string[], args: string[]): Promise<{ qemu: string; refcow: Record<"inline" | "ring", string> }> {
  const name = `q${Math.random().toString(36).slice(2, 8)}`;
  const qSock = socketIn(dir, name);
  fs.rmSync(qSock, { force: true });
  const q = spawn("qemu-nbd", ["-k", qSock, "-t", ...serverArgs, image], { stdio: "ignore" });
  qemuServers.add(q);
  let qemu: string;
  try {
    await waitForSocket(qSock, q, "qemu-nbd");
    const out = await run("nbdinfo", [...args, nbdUri(qSock)]);
    expect(out.status, out.stderr).toBe(0);
    qemu = out.stdout.replaceAll(qSock, "SOCKET");
  } finally {
    q.kill("SIGTERM");
  }
  const refcowOut = { inline: "", ring: "" };
  for (const mode of ["inline", "ring"] as const) {
    const server = await startNbd(socketIn(dir, `${name}-${mode}`), ["-t", `--serve=${mode}`, "--no-warm-up", ...serverArgs, image]);
    let out;
    try {
      out = await run("nbdinfo", [...args, server.uri]);
    } finally {
      server.child.kill("SIGTERM");
    }
    const end = await server.exited;
    expect(out.status, `${mode}: ${out.stderr}; the server's: ${end.stderr}`).toBe(0);
    expect(end, mode).toEqual({ code: 0, signal: null, stderr: "" });
    refcowOut[mode] = out.stdout.replaceAll(server.socket, "SOCKET");
  }
  return { qemu, refcow: refcowOut };
}

describe("qemu:allocation-depth and base:allocation, against qemu-nbd", () => {
  let top: string;
  beforeAll(() => {
    top = makeChain();
  });

  it("nbdinfo --map=qemu:allocation-depth over -A equals qemu-nbd's, every depth present", async () => {
    const r = await nbdinfoBoth(top, ["-r", "-f", "qcow2", "-A"], ["--map=qemu:allocation-depth"]);
    const depths = new Set(r.qemu.trim().split("\n").map((l) => l.trim().split(/\s+/)[2]));
    expect([...depths].sort()).toEqual(["0", "1", "2", "3"]);
    expect(r.refcow.inline).toBe(r.qemu);
    expect(r.refcow.ring).toBe(r.qemu);
  }, 60_000);

  it("nbdinfo --map (base:allocation) over -A equals qemu-nbd's", async () => {
    const r = await nbdinfoBoth(top, ["-r", "-f", "qcow2", "-A"], ["--map"]);
    expect(r.refcow.inline).toBe(r.qemu);
    expect(r.refcow.ring).toBe(r.qemu);
  }, 60_000);

  it("nbdinfo --list --content equals qemu-nbd's, with and without -A", async () => {
    for (const extra of [[], ["-A"]]) {
      const r = await nbdinfoBoth(top, ["-r", "-f", "qcow2", ...extra], ["--list", "--content"]);
      expect(r.qemu).toContain(extra.length ? "qemu:allocation-depth" : "base:allocation");
      expect(r.refcow.inline).toBe(r.qemu);
      expect(r.refcow.ring).toBe(r.qemu);
    }
  }, 60_000);

  it("a single qcow2 layer and a raw image: depth 1 where allocated, 0 elsewhere, as qemu-nbd", async () => {
    const single = path.join(dir, "single.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", single, String(3 * MiB)]);
    qemuIo(single, ["write -P 1 64k 64k", "write -z 1m 128k", "write -z -u 2m 64k"]);
    const raw = path.join(dir, "single.raw");
    qemuImg(["create", "-q", "-f", "raw", raw, String(MiB)]);
    qemuIo(raw, ["write -P 1 0 4k"]);
    for (const [image, fmt] of [[single, "qcow2"], [raw, "raw"]] as const) {
      const r = await nbdinfoBoth(image, ["-r", "-f", fmt, "-A"], ["--map=qemu:allocation-depth"]);
      expect(r.refcow.inline).toBe(r.qemu);
      expect(r.refcow.ring).toBe(r.qemu);
    }
  }, 60_000);
});

describe("qemu:dirty-bitmap:NAME (-B), against qemu-nbd", () => {
  let image: string;
  beforeAll(() => {
    image = path.join(dir, "bitmaps.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", image, String(4 * MiB)]);
    qemuImg(["bitmap", "--add", image, "b0"]);
    qemuIo(image, ["write -P 1 0 4k", "write -P 2 200k 300k", "write -z 1m 64k", "discard 3m 128k"]);
    qemuImg(["bitmap", "--add", "-g", "16384", image, "b1"]);
    qemuImg(["bitmap", "--add", image, "empty"]);
    qemuImg(["bitmap", "--disable", image, "empty"]);
    qemuIo(image, ["write -P 3 2m 20k", "write -P 4 3800k 1k"]);
  });

  it("nbdinfo --map=qemu:dirty-bitmap:NAME over -B NAME equals qemu-nbd's, for each bitmap", async () => {
    for (const b of ["b0", "b1", "empty"]) {
      const r = await nbdinfoBoth(image, ["-r", "-f", "qcow2", "-B", b], [`--map=qemu:dirty-bitmap:${b}`]);
      if (b !== "empty") expect(r.qemu).toMatch(/\bdirty\b/);
      expect(r.refcow.inline).toBe(r.qemu);
      expect(r.refcow.ring).toBe(r.qemu);
    }
  }, 60_000);

  it("nbdinfo --list --content over -A -B b0 -B b1 equals qemu-nbd's", async () => {
    const r = await nbdinfoBoth(image, ["-r", "-f", "qcow2", "-A", "-B", "b0", "-B", "b1"], ["--list", "--content"]);
    expect(r.qemu).toContain("qemu:dirty-bitmap:b1");
    expect(r.refcow.inline).toBe(r.qemu);
    expect(r.refcow.ring).toBe(r.qemu);
  }, 60_000);

  it("-B of a bitmap left in use fails at start in one line, in qemu-nbd's words", async () => {
    const used = path.join(dir, "in-use.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", used, String(MiB)]);
    qemuImg(["bitmap", "--add", used, "b0"]);
    // A writable qemu-nbd marks the bitmap in use on open; killed, it leaves the mark. A client that got
    // through the handshake shows that the open is over.
    const sock = socketIn(dir, "in-use");
    const q = spawn("qemu-nbd", ["-k", sock, "-t", "-f", "qcow2", used], { stdio: "ignore" });
    qemuServers.add(q);
    await waitForSocket(sock, q, "qemu-nbd");
    expect((await run("nbdinfo", ["--size", nbdUri(sock)])).stdout.trim()).toBe(String(MiB));
    q.kill("SIGKILL");
    await new Promise((r) => q.once("exit", r));
    const info = JSON.parse(qemuImg(["info", "--output=json", used])) as { "format-specific": { data: { bitmaps: { flags: string[] }[] } } };
    expect(info["format-specific"].data.bitmaps[0]!.flags).toContain("in-use");
    const theirs = await run("qemu-nbd", ["-r", "-B", "b0", "-k", socketIn(dir, "in-use-q"), used], { timeoutMs: 20_000 });
    expect(theirs.stderr.trim()).toBe("qemu-nbd: Bitmap 'b0' is inconsistent and cannot be used");
    const mine = await refcow(["nbd", "-r", "-B", "b0", "-k", socketIn(dir, "in-use-r"), used]);
    expect(mine.status).toBe(1);
    expect(mine.stderr.split("\n").filter(Boolean)).toEqual(["refcow: Bitmap 'b0' is inconsistent and cannot be used"]);
  }, 60_000);
});

describe("-B of a bitmap the image does not have", () => {
  it("fails at start with one line in qemu-nbd's words, status 1", async () => {
    const image = path.join(dir, "nobitmap.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", image, String(MiB)]);
    const theirs = await run("qemu-nbd", ["-r", "-B", "nope", "-k", socketIn(dir, "nope-q"), image]);
    expect(theirs.status).toBe(1);
    expect(theirs.stderr.trim()).toBe("qemu-nbd: Bitmap 'nope' is not found");
    for (const args of [["-B", "nope"], ["-A", "-B", "nope", "--serve=ring"]]) {
      const mine = await refcow(["nbd", "-r", ...args, "-k", socketIn(dir, "nope-r"), image]);
      expect(mine.status).toBe(1);
      expect(mine.stdout).toBe("");
      expect(mine.stderr).toBe("refcow: Bitmap 'nope' is not found\n");
    }
    expect(fs.existsSync(socketIn(dir, "nope-r"))).toBe(false);
    const withSnapshot = await refcow(["nbd", "-l", "s1", "-B", "b0", "-k", socketIn(dir, "nope-r"), image]);
    expect(withSnapshot.status).toBe(1);
    expect(withSnapshot.stderr).toBe("refcow: -B (--bitmap) cannot be used with -l (--load-snapshot) by refcow nbd\n");
  }, 60_000);
});

// ------------------------------------------------------------------------------------------- on the wire

/** The two bitmaps of the wire tests' export, as dirty ranges [start, end). */
const DIRTY: Record<string, [number, number][]> = {
  b0: [
    [64 * KiB, 192 * KiB],
    [512 * KiB, 576 * KiB],
  ],
  b1: [[0, 4 * KiB]],
};

/**
 * A stand-in for the engine's bitmaps on a real image: runs covering [offset, offset + length) exactly,
 * adjacent equal runs merged (Qcow2Image.bitmapExtents' contract), from the ranges of DIRTY.
 */
function fakeBitmapExtents(name: string, offset: number, length: number): { length: number; dirty: boolean }[] {
  const out: { length: number; dirty: boolean }[] = [];
  const end = offset + length;
  const push = (len: number, dirty: boolean): void => {
    if (len <= 0) return;
    const last = out[out.length - 1];
    if (last && last.dirty === dirty) last.length += len;
    else out.push({ length: len, dirty });
  };
  let pos = offset;
  for (const [s, e] of DIRTY[name]!) {
    if (e <= pos || s >= end) continue;
    push(Math.max(s, pos) - pos, false);
    push(Math.min(e, end) - Math.max(s, pos), true);
    pos = Math.min(e, end);
  }
  push(end - pos, false);
  return out;
}

describe("negotiation and BLOCK_STATUS on the wire", () => {
  let image: string;
  let server: NbdServer;
  let close: () => void;
  const sock = path.join(dir, "wire.sock");

  beforeAll(async () => {
    // base (1 MiB): data at [0, 64k); top (1 MiB): data at [256k, 320k).
    const base = path.join(dir, "wire-base.qcow2");
    image = path.join(dir, "wire-top.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", base, String(MiB)]);
    qemuIo(base, ["write -P 1 0 64k"]);
    qemuImg(["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", image, String(MiB)]);
    qemuIo(image, ["write -P 2 256k 64k"]);
    const img = openImagePath(image, { readOnly: true });
    close = () => img.close();
    const disk: SyncDisk = {
      get size() {
        return img.size;
      },
      readInto: (b, o) => img.readInto(b, o),
      write: (o, d) => img.write(o, d),
      writeZeroes: (o, l, opts) => img.writeZeroes(o, l, opts),
      discard: (o, l) => img.discard(o, l),
      flush: () => img.flush(),
      close: () => img.close(),
      blockStatus: (o, l, d) => img.blockStatus(o, l, d),
      allocationDepth: (o, l, m) => img.allocationDepth(o, l, m),
      bitmapList: () => Object.keys(DIRTY).map((name) => ({ name, granularity: 4096, enabled: true, inUse: false })),
      bitmapExtents: fakeBitmapExtents,
    };
    const exp = nbdExport(inlinePort(disk), {
      name: "",
      description: "",
      readOnly: true,
      cache: "writeback",
      discard: "ignore",
      detectZeroes: "off",
      multiConn: true,
      zeroClusters: 0,
      allocationDepth: true,
      bitmaps: ["b0", "b1"],
    });
    server = new NbdServer(exp, { shared: 4, persistent: true });
    await server.listen({ socket: sock });
  });

  afterAll(async () => {
    await server?.stop();
    close?.();
  });

  /** A connection after the greeting and STRUCTURED_REPLY, still negotiating. */
  async function negotiating(path = sock): Promise<WireClient> {
    const c = await WireClient.connect(path);
    await c.greeting();
    c.send(new Uint8Array([0, 0, 0, 3])); // C_FIXED_NEWSTYLE | C_NO_ZEROES
    expect((await c.option(Opt.STRUCTURED_REPLY))[0]!.type).toBe(Rep.ACK);
    return c;
  }

  /** The contexts a LIST or SET names, as [id, name], and whether it ended with ACK. */
  async function contexts(c: WireClient, option: number, queries: string[], exportName = ""): Promise<{ ids: [number, string][]; ack: boolean }> {
    const replies = await c.option(option, encodeMetaContextRequest({ exportName, queries }));
    const last = replies[replies.length - 1]!;
    const ids = replies.filter((r) => r.type === Rep.META_CONTEXT).map((r) => decodeMetaContextReply(r.data)).map(({ id, name }): [number, string] => [id, name]);
    return { ids, ack: last.type === Rep.ACK };
  }

  it("LIST: no query lists all; base:, qemu: and qemu:dirty-bitmap: are wildcards; unknown queries match nothing; ids are 0", async () => {
    const c = await negotiating();
    const all = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"];
    const names = async (queries: string[]): Promise<string[]> => {
      const r = await contexts(c, Opt.LIST_META_CONTEXT, queries);
      expect(r.ack).toBe(true);
      expect(r.ids.every(([id]) => id === 0)).toBe(true);
      return r.ids.map(([, n]) => n);
    };
    expect(await names([])).toEqual(all);
    expect(await names(["qemu:"])).toEqual(all.slice(1));
    expect(await names(["qemu:dirty-bitmap:"])).toEqual(all.slice(2));
    expect(await names(["base:"])).toEqual(["base:allocation"]);
    expect(await names(["qemu:dirty-bitmap:b1", "base:allocation"])).toEqual(["base:allocation", "qemu:dirty-bitmap:b1"]);
    expect(await names(["x-other:thing", "qemu:nope", "qemu:dirty-bitmap:zz", "base:nope", "nocolon", ""])).toEqual([]);
    expect((await contexts(c, Opt.LIST_META_CONTEXT, [], "other")).ack).toBe(false);
    c.destroy();
  });

  it("SET of wildcards or unknown contexts selects nothing, and BLOCK_STATUS is then EINVAL", async () => {
    for (const queries of [[], ["qemu:"], ["base:"], ["qemu:dirty-bitmap:"], ["qemu:dirty-bitmap:zz", "x-y:z"]]) {
      const c = await negotiating();
      const r = await contexts(c, Opt.SET_META_CONTEXT, queries);
      expect(r).toEqual({ ids: [], ack: true });
      await goAndExpectEinval(c);
    }
  });

  it("a failed SET (unknown export) drops the previous selection", async () => {
    const c = await negotiating();
    expect((await contexts(c, Opt.SET_META_CONTEXT, [BASE_ALLOCATION])).ids.length).toBe(1);
    expect((await contexts(c, Opt.SET_META_CONTEXT, [BASE_ALLOCATION], "other")).ack).toBe(false);
    await goAndExpectEinval(c);
  });

  async function goAndExpectEinval(c: WireClient): Promise<void> {
    const go = await c.option(Opt.GO, new Uint8Array([0, 0, 0, 0, 0, 0]));
    expect(go[go.length - 1]!.type).toBe(Rep.ACK);
    c.request(Cmd.BLOCK_STATUS, 1n, 0, 4096);
    const reply = (await c.reply())!;
    expect(reply.error).toBe(Err.EINVAL);
    expect(reply.statuses).toBeUndefined();
    c.destroy();
  }

  it("SET of every context: distinct ids, one chunk each in id order, extents within the request", async () => {
    const c = await negotiating();
    const set = await contexts(c, Opt.SET_META_CONTEXT, ["qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b0", QEMU_ALLOCATION_DEPTH, BASE_ALLOCATION, "qemu:"]);
    expect(set.ack).toBe(true);
    expect(set.ids.map(([, n]) => n)).toEqual(["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1"]);
    expect(new Set(set.ids.map(([id]) => id)).size).toBe(4);
    const idOf = Object.fromEntries(set.ids.map(([id, n]) => [n, id]));
    const go = await c.option(Opt.GO, new Uint8Array([0, 0, 0, 0, 0, 0]));
    expect(go[go.length - 1]!.type).toBe(Rep.ACK);

    const HZ = BaseAllocation.STATE_HOLE | BaseAllocation.STATE_ZERO;
    c.request(Cmd.BLOCK_STATUS, 7n, 100 * KiB, 500 * KiB);
    const r = (await c.reply())!;
    expect(r.error).toBe(0);
    expect(r.statuses).toEqual([
      // The top maps [256k, 320k); the base's data ends at 64k, so the rest reads as zeroes from it.
      { contextId: idOf["base:allocation"], extents: [{ length: 156 * KiB, flags: HZ }, { length: 64 * KiB, flags: 0 }, { length: 280 * KiB, flags: HZ }] },
      // Nothing is unallocated in the whole chain but the ranges neither layer maps.
      { contextId: idOf["qemu:allocation-depth"], extents: [{ length: 156 * KiB, flags: 0 }, { length: 64 * KiB, flags: 1 }, { length: 280 * KiB, flags: 0 }] },
      { contextId: idOf["qemu:dirty-bitmap:b0"], extents: [{ length: 92 * KiB, flags: 1 }, { length: 320 * KiB, flags: 0 }, { length: 64 * KiB, flags: 1 }, { length: 24 * KiB, flags: 0 }] },
      { contextId: idOf["qemu:dirty-bitmap:b1"], extents: [{ length: 500 * KiB, flags: 0 }] },
    ]);

    // REQ_ONE: exactly one extent per context, never longer than the request.
    c.request(Cmd.BLOCK_STATUS, 8n, 0, 32 * KiB, CmdFlag.REQ_ONE);
    const one = (await c.reply())!;
    expect(one.statuses!.map((s) => s.extents)).toEqual([
      [{ length: 32 * KiB, flags: 0 }],
      [{ length: 32 * KiB, flags: 2 }],
      [{ length: 32 * KiB, flags: 0 }],
      [{ length: 4 * KiB, flags: 1 }],
    ]);
    c.destroy();
  });

  it("two contexts give two chunks, the last one DONE, through the ring as inline", async () => {
    const ring = await startNbd(socketIn(dir, "wire-ring"), ["-t", "-r", "-A", "--serve=ring", "-f", "qcow2", image]);
    try {
      for (const path of [sock, ring.socket]) {
        const c = await WireClient.connect(path);
        await c.open({ queries: [QEMU_ALLOCATION_DEPTH, BASE_ALLOCATION] });
        c.request(Cmd.BLOCK_STATUS, 1n, 200 * KiB, 200 * KiB);
        const r = (await c.reply())!;
        expect(r.statuses!.map((s) => s.extents)).toEqual([
          [{ length: 56 * KiB, flags: BaseAllocation.STATE_HOLE | BaseAllocation.STATE_ZERO }, { length: 64 * KiB, flags: 0 }, { length: 80 * KiB, flags: BaseAllocation.STATE_HOLE | BaseAllocation.STATE_ZERO }],
          [{ length: 56 * KiB, flags: 0 }, { length: 64 * KiB, flags: 1 }, { length: 80 * KiB, flags: 0 }],
        ]);
        expect(r.statuses![0]!.contextId).not.toBe(r.statuses![1]!.contextId);
        c.request(Cmd.BLOCK_STATUS, 2n, 0, 64 * KiB, CmdFlag.REQ_ONE);
        expect((await c.reply())!.statuses!.map((s) => s.extents)).toEqual([[{ length: 64 * KiB, flags: 0 }], [{ length: 64 * KiB, flags: 2 }]]);
        c.destroy();
      }
    } finally {
      ring.child.kill("SIGTERM");
      expect((await ring.exited).code).toBe(0);
    }
  }, 60_000);
});
