/**
 * Seeded fuzzing of the NBD server with malformed client traffic. Each case is one connection: a client
 * stream built from a plausible one (client flags, options with valid or broken data, then requests of
 * every command with odd flags, offsets and lengths, truncated payloads) and then mutated (bytes flipped,
 * inserted, cut). Cases run four at a time against one export of a worker-served image.
 *
 * A case fails when the server hangs (the connection is not closed within a few seconds of the client's
 * end of stream), sends something other than the greeting first, or reports an unexpected exception. At the
 * end a well-behaved client must still be served, the image must close cleanly and `qemu-img check` must
 * find it sound.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { inlinePort } from "../../src/nbd/inline-port.js";
import { RingPort } from "../../src/nbd/ring-port.js";
import { NbdServer } from "../../src/nbd/server.js";
import {
  BASE_ALLOCATION,
  QEMU_ALLOCATION_DEPTH,
  Cmd,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequest,
  NBDMAGIC,
  Opt,
} from "../../src/nbd/protocol.js";
import { closeAllWorkers, type DiskClient, openServedImage } from "../../src/worker/index.js";
import { WireClient } from "../helpers/nbd-wire.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";

const SIZE = 4 << 20;
const CASE_TIMEOUT_MS = 5000;
const PARALLEL = 4;

export interface NbdFuzzSummary {
  cases: number;
  /** How the server ended the connections: by the client's close, by its own close. */
  bytesSent: number;
  failure?: string;
}

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    // xorshift32
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

function offsetOf(r: Rng): number {
  return r.pick([0, 512, 4096, 65536 - 1, SIZE - 4096, SIZE - 1, SIZE, SIZE + 512, 2 ** 40, 2 ** 53 + 2, r.int(SIZE)]);
}

function lengthOf(r: Rng): number {
  return r.pick([0, 1, 511, 512, 4096, 65536, 1 << 20, 32 << 20, (32 << 20) + 1, 0xffffffff, r.int(1 << 16)]);
}

/** A plausible client stream for one connection. */
function clientStream(r: Rng): Uint8Array[] {
  const parts: Uint8Array[] = [];
  parts.push(encodeClientFlags(r.chance(0.9) ? r.pick([1, 3]) : r.next()));
  const options = r.int(5);
  for (let i = 0; i < options; i++) {
    const opt = r.chance(0.85) ? r.pick(Object.values(Opt)) : r.int(64);
    let data: Uint8Array;
    switch (r.int(4)) {
      case 0:
        data = encodeInfoRequest({ name: r.chance(0.8) ? "" : "x", infos: [r.int(5), r.int(5)] });
        break;
      case 1:
        data = encodeMetaContextRequest({ exportName: "", queries: r.chance(0.5) ? [BASE_ALLOCATION] : ["base:", "qemu:", "qemu:x"] });
        break;
      case 2:
        data = new Uint8Array(0);
        break;
      default:
        data = r.bytes(r.int(40));
    }
    parts.push(encodeOption(opt, data));
  }
  // Into transmission: GO (or the old EXPORT_NAME) most of the time.
  if (r.chance(0.8)) {
    if (r.chance(0.3)) parts.push(encodeOption(Opt.STRUCTURED_REPLY));
    if (r.chance(0.3)) parts.push(encodeOption(Opt.SET_META_CONTEXT, encodeMetaContextRequest({ exportName: "", queries: [BASE_ALLOCATION, QEMU_ALLOCATION_DEPTH] })));
    parts.push(r.chance(0.8) ? encodeOption(Opt.GO, encodeInfoRequest({ name: "", infos: [] })) : encodeOption(Opt.EXPORT_NAME));
    const requests = r.int(12);
    for (let i = 0; i < requests; i++) {
      const type = r.chance(0.9) ? r.pick(Object.values(Cmd)) : r.int(1 << 16);
      const flags = r.chance(0.7) ? 0 : r.int(1 << 6);
      let length = lengthOf(r);
      if (type === Cmd.WRITE && length > 1 << 20 && r.chance(0.7)) length = r.int(8192);
      parts.push(encodeRequest({ type, flags, handle: BigInt(r.next()), offset: offsetOf(r), length }));
      if (type === Cmd.WRITE) parts.push(r.bytes(r.chance(0.9) ? Math.min(length, 1 << 16) : r.int(64)));
    }
  }
  return parts;
}

/** Flips, inserts or cuts bytes of the stream. */
function mutate(r: Rng, stream: Uint8Array): Uint8Array {
  let b = Buffer.from(stream);
  const n = r.int(4);
  for (let i = 0; i < n && b.length > 0; i++) {
    switch (r.int(3)) {
      case 0:
        b[r.int(b.length)] ^= 1 << r.int(8);
        break;
      case 1: {
        const at = r.int(b.length);
        b = Buffer.concat([b.subarray(0, at), Buffer.from(r.bytes(1 + r.int(16))), b.subarray(at)]);
        break;
      }
      default:
        b = b.subarray(0, r.int(b.length));
    }
  }
  return b;
}

/** Runs one case; resolves with an error message when it failed. */
function runCase(sock: string, bytes: Uint8Array, r: Rng): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.createConnection(sock);
    let got = Buffer.alloc(0);
    let settled = false;
    const finish = (why?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      if (!why && got.length >= 8 && got.readBigUInt64BE(0) !== NBDMAGIC) why = "the server's first bytes are not NBDMAGIC";
      resolve(why);
    };
    const timer = setTimeout(() => finish(`no close within ${CASE_TIMEOUT_MS} ms of the client's end of stream`), CASE_TIMEOUT_MS);
    s.on("data", (d: Buffer) => {
      // Keep only the start (the greeting check) so a large read reply costs no memory.
      if (got.length < 64) got = Buffer.concat([got, d]).subarray(0, 64);
    });
    s.on("error", () => finish());
    s.on("close", () => finish());
    s.on("connect", () => {
      // In a few pieces, so that messages straddle reads.
      let at = 0;
      while (at < bytes.length) {
        const n = 1 + r.int(Math.max(1, bytes.length - at));
        s.write(bytes.subarray(at, at + n));
        at += n;
      }
      if (r.chance(0.2)) s.destroy();
      else s.end();
    });
  });
}

/**
 * `mode`: the server's transmission over the ring (the engine in its worker, a DiskClient) or inline (the
 * engine in this thread, an InlinePort: refcow nbd's default).
 */
export async function fuzzNbd(opts: { seed: number; runs: number; mode?: "ring" | "inline"; log?: (line: string) => void }): Promise<NbdFuzzSummary> {
  const dir = tempDir("nbd-fuzz");
  const image = path.join(dir, "fuzz.qcow2");
  createImagePath(image, { size: SIZE, clusterSize: 65536 });
  const inline = opts.mode === "inline" ? openImagePath(image, { cache: "writeback" }) : undefined;
  const client = inline ? undefined : await openServedImage(image, { cache: "writeback" });
  const port = inline ? inlinePort(inline) : new RingPort(client!, "writeback");
  const unexpected: string[] = [];
  const server = new NbdServer(
    { name: "", description: "fuzz", port, readOnly: false, cache: "writeback", discard: "unmap", detectZeroes: "on", multiConn: true, allocationDepth: true, bitmaps: [], fastZero: () => false },
    {
      shared: PARALLEL,
      persistent: true,
      log: (m) => {
        // Protocol violations are the point; anything else escaping a connection is a bug.
        if (m.startsWith("connection failed") || m.startsWith("internal error")) unexpected.push(m);
      },
    },
  );
  const sock = path.join(dir, "fuzz.sock");
  await server.listen({ socket: sock });
  const rng = new Rng(opts.seed);
  const summary: NbdFuzzSummary = { cases: 0, bytesSent: 0 };
  try {
    for (let i = 0; i < opts.runs && !summary.failure; i += PARALLEL) {
      const batch: Promise<string | undefined>[] = [];
      for (let k = 0; k < PARALLEL && i + k < opts.runs; k++) {
        const stream = Buffer.concat(clientStream(rng));
        const bytes = rng.chance(0.7) ? mutate(rng, stream) : stream;
        summary.bytesSent += bytes.length;
        const caseNo = i + k;
        batch.push(runCase(sock, bytes, rng).then((why) => (why ? `case ${caseNo} (seed ${opts.seed}): ${why}` : undefined)));
      }
      for (const why of await Promise.all(batch)) if (why && !summary.failure) summary.failure = why;
      summary.cases += batch.length;
      if (unexpected.length && !summary.failure) summary.failure = `unexpected server error near case ${i}: ${unexpected[0]}`;
      if (opts.log && summary.cases % 1000 === 0) opts.log(`nbd fuzz: ${summary.cases} cases`);
    }
    // Still serving a well-behaved client, once the fuzz connections (a client that vanished leaves its
    // received requests to be served) are gone.
    for (let i = 0; i < 600 && server.connections > 0; i++) await new Promise((r) => setTimeout(r, 50));
    if (!summary.failure && server.connections > 0) summary.failure = `${server.connections} fuzz connections still open 30 s after the last case`;
    if (!summary.failure) {
      const c = await WireClient.connect(sock);
      await c.open({ structured: true });
      c.request(Cmd.WRITE, 1n, 0, 4096, 0, new Uint8Array(4096).fill(0xc3));
      c.request(Cmd.READ, 2n, 0, 4096);
      // Replies may come in any order: pair them by handle.
      const replies = [await c.reply(), await c.reply()];
      const w = replies.find((x) => x?.handle === 1n);
      const rd = replies.find((x) => x?.handle === 2n);
      if (w?.error !== 0 || rd?.error !== 0 || !WireClient.assemble(rd, 0, 4096).every((b) => b === 0xc3)) {
        summary.failure = `after the fuzz cases a well-behaved client was not served correctly: write ${w?.error}, read ${rd?.error} ${rd?.message ?? ""}`;
      }
      c.request(Cmd.DISC, 3n, 0, 0);
      await c.closed();
    }
  } finally {
    await server.stop();
    if (inline) inline.close();
    else await client!.close();
    await closeAllWorkers();
  }
  const check = qemuCheck(image);
  if (!summary.failure && check.status !== 0) summary.failure = `qemu-img check after the fuzz cases: ${check.out}`;
  fs.rmSync(dir, { recursive: true, force: true });
  return summary;
}
