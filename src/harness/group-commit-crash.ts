/**
 * Crash harness of group commit (open/serving-cache.ts): the request ring's serve loop, holding several requests at
 * once, over an image on a fault-injecting file. Batches of requests (4 KiB writes into 8 KiB clusters, so
 * that new clusters are filled around the data and, after a snapshot taken through the ring, copied: COW;
 * write-zeroes; in writeback, FLUSH requests) are submitted together and served in one go, as a guest's queue
 * or an NBD client at depth submits them. At every operation the image issues on its file, the number of
 * completions the ring has published so far is noted. Then, at every crash point (before each operation, and
 * at the end), the state a power loss could leave with the least on the disk (nothing after the last flush
 * reached it) and the one with the most (every write after it did) is recovered with the scheme and read:
 *
 *   every request whose completion was visible at the crash and that promised durability (with
 *   cache=writethrough every write; with writeback every write submitted before a FLUSH whose completion was
 *   visible) reads back as it wrote, or as a later request to the same place wrote.
 *
 * That is "no completion is visible before its flush": a completion published before the group's flush has
 * returned would show up here as a crash point where the write it promised is lost.
 */
import type { CacheMode } from "../engine/types.js";
import { FaultFile } from "../io/fault-file.js";
import { MemoryFile } from "../io/memory-file.js";
import { Qcow2Image } from "../open/qcow2.js";
import { servingCache } from "../open/serving-cache.js";
import { DiskClient } from "../worker/disk-client.js";
import { C, createRing } from "../worker/ring.js";
import { RingServer } from "../worker/serve-loop.js";
import { seededRandom } from "./crash.js";

const CLUSTER = 8192;
const BLOCK = 4096;
const CLUSTERS = 24;
const SIZE = CLUSTERS * CLUSTER;
const BLOCKS = SIZE / BLOCK;

export interface GroupCommitCrashOptions {
  scheme: string;
  cache: "writethrough" | "writeback";
  seed: number;
  /** Batches of requests submitted together (a snapshot is taken through the ring after the first third). */
  batches?: number;
  /** Requests per batch. */
  batchSize?: number;
}

export interface GroupCommitCrashReport {
  /** Crash states recovered and read. */
  states: number;
  /** Durable requests checked over all states (a measure of coverage). */
  durableChecks: number;
  /** Group flushes the serve loop issued, and requests it served. */
  commits: number;
  requests: number;
  failures: string[];
}

/** One request of the workload, in submission order. */
interface Sent {
  kind: "write" | "zero" | "flush" | "snapshot";
  block: number;
  data?: Uint8Array;
}

/** The fault-injecting file, noting before each operation how many completions the ring had published. */
class WatchedFile extends FaultFile {
  /** visible[i]: completions published when operation i was issued. */
  readonly visible: number[] = [];
  completions: () => number = () => 0;

  override write(data: Uint8Array, offset: number, purpose?: Parameters<FaultFile["write"]>[2]): void {
    this.visible[this.log.length] = this.completions();
    super.write(data, offset, purpose);
  }
  override zeroRange(offset: number, length: number, purpose?: Parameters<FaultFile["zeroRange"]>[2]): void {
    this.visible[this.log.length] = this.completions();
    super.zeroRange(offset, length, purpose);
  }
  override flush(): void {
    this.visible[this.log.length] = this.completions();
    super.flush();
  }
  override truncate(size: number): void {
    this.visible[this.log.length] = this.completions();
    super.truncate(size);
  }
}

export async function runGroupCommitCrash(o: GroupCommitCrashOptions): Promise<GroupCommitCrashReport> {
  const batches = o.batches ?? 6;
  const batchSize = o.batchSize ?? 8;
  const base = new MemoryFile();
  Qcow2Image.create(base, { size: SIZE, clusterSize: CLUSTER });
  const file = new WatchedFile(base.contents(), `group-commit-${o.scheme}-${o.cache}-${o.seed}`);
  const serving = servingCache(o.cache);
  const img = Qcow2Image.open(file, { scheme: o.scheme, cache: serving.engine, random: seededRandom(o.seed * 31 + 7) });
  const sab = createRing({ slots: 64 });
  const ctl = new Int32Array(sab, 0, 64);
  file.completions = () => Atomics.load(ctl, C.CQ_TAIL);
  const server = new RingServer(sab, img, { spinUs: 0, durableWrites: serving.durableWrites });
  const client = new DiskClient(sab, "group-commit", { spinUs: 0 });
  const rnd = seededRandom(o.seed);
  const sent: Sent[] = [];

  for (let b = 0; b < batches; b++) {
    const pending: Promise<unknown>[] = [];
    if (b === Math.floor(batches / 3)) {
      sent.push({ kind: "snapshot", block: -1 });
      pending.push(client.snapshotCreate(`s${b}`));
    }
    for (let i = 0; i < batchSize; i++) {
      const block = Math.floor(rnd() * BLOCKS);
      const r = rnd();
      if (o.cache === "writeback" && r < 0.2) {
        sent.push({ kind: "flush", block: -1 });
        pending.push(client.flush());
      } else if (r < 0.3) {
        sent.push({ kind: "zero", block, data: new Uint8Array(BLOCK) });
        pending.push(client.writeZeroes(block * BLOCK, BLOCK));
      } else {
        const data = new Uint8Array(BLOCK).fill(1 + Math.floor(rnd() * 250));
        data[0] = sent.length & 0xff;
        data[1] = sent.length >> 8;
        sent.push({ kind: "write", block, data });
        pending.push(client.write(block * BLOCK, data));
      }
    }
    // The whole batch is in the ring before the server runs: it is served as one group.
    server.serveAvailable();
    await Promise.race([Promise.all(pending), new Promise((_, reject) => setTimeout(() => reject(new Error("internal: a batch was not completed")), 10_000))]);
    if (Atomics.load(ctl, C.CQ_TAIL) !== sent.length) throw new Error(`internal: ${Atomics.load(ctl, C.CQ_TAIL)} completions for ${sent.length} requests`);
  }
  const commits = server.commits;
  const requests = server.requests;
  // Close through the ring (CLOSE flushes and closes the image), stepping the server until it is served.
  let closed = false;
  const closing = client.close().finally(() => (closed = true));
  while (!closed) {
    server.serveAvailable();
    if (server.closed) client.ring.serverEnded();
    await new Promise((r) => setImmediate(r));
  }
  await closing;

  const report: GroupCommitCrashReport = { states: 0, durableChecks: 0, commits, requests, failures: [] };
  const end = file.log.length;
  for (let at = 0; at <= end; at++) {
    const visible = at < end ? (file.visible[at] ?? sent.length) : sent.length;
    const required = durableBefore(sent, visible, o.cache);
    const pendingWrites = file.unflushedWrites(at);
    for (const applied of pendingWrites.length ? [[], pendingWrites] : [[]]) {
      const state = { at, applied };
      report.states++;
      const failure = checkState(file.materialize(state), o, sent, required);
      report.durableChecks += required.length;
      if (failure) {
        report.failures.push(`${o.scheme}/${o.cache} seed ${o.seed}: ${file.describe(state)}; ${visible} completions visible: ${failure}`);
        if (report.failures.length >= 5) return report;
      }
    }
  }
  return report;
}

/** Indices of the requests that must be durable once the first `visible` completions are visible. */
function durableBefore(sent: readonly Sent[], visible: number, cache: CacheMode): number[] {
  const out: number[] = [];
  if (cache === "writethrough") {
    for (let i = 0; i < visible; i++) if (sent[i]!.kind === "write" || sent[i]!.kind === "zero") out.push(i);
    return out;
  }
  let lastFlush = -1;
  for (let i = 0; i < visible; i++) if (sent[i]!.kind === "flush") lastFlush = i;
  for (let i = 0; i < lastFlush; i++) if (sent[i]!.kind === "write" || sent[i]!.kind === "zero") out.push(i);
  return out;
}

/** Recovers the state and reads each required block: its data, or a later request's to the same block. Undefined: all good. */
function checkState(state: MemoryFile, o: GroupCommitCrashOptions, sent: readonly Sent[], required: readonly number[]): string | undefined {
  let img: Qcow2Image;
  try {
    img = Qcow2Image.open(state, { scheme: o.scheme, cache: "writeback", random: seededRandom(o.seed) });
  } catch (e) {
    return `recovery failed: ${(e as Error).message}`;
  }
  try {
    // The last required request of each block: earlier ones may be overwritten by it.
    const lastRequired = new Map<number, number>();
    for (const i of required) lastRequired.set(sent[i]!.block, i);
    const buf = new Uint8Array(BLOCK);
    for (const [block, i] of lastRequired) {
      img.readInto(buf, block * BLOCK);
      let ok = false;
      for (let j = i; j < sent.length && !ok; j++) {
        const s = sent[j]!;
        if (s.block === block && s.data && Buffer.from(s.data).equals(buf)) ok = true;
      }
      if (!ok) return `block ${block} lost request ${i} (${sent[i]!.kind}), whose completion was visible`;
    }
    return undefined;
  } catch (e) {
    return `reading the recovered image failed: ${(e as Error).message}`;
  } finally {
    img.close();
  }
}
