/**
 * The request ring protocol with both sides in this thread: a DiskClient and a RingServer on the real
 * engine (Qcow2Image on a MemoryFile). The server is stepped with serveAvailable(), so every interleaving is
 * deterministic; fast-check drives random geometries, request sizes and splits against an in-process oracle.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RequestError, SnapshotError } from "../../src/engine/errors.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { DiskClient } from "../../src/worker/disk-client.js";
import { type RequestTiming, waitForServer } from "../../src/worker/ring-client.js";
import {
  C,
  createRing,
  Op,
  RingView,
  S,
  SF,
  SLOT_F64,
  SLOT_I32,
  SlotState,
  SpinPolicy,
  splitRange,
  Status,
  readText,
} from "../../src/worker/ring.js";
import { RingServer, serveRing } from "../../src/worker/serve-loop.js";

const MiB = 1024 * 1024;

function newImage(size = 4 * MiB, clusterSize = 65536): { file: MemoryFile; img: Qcow2Image } {
  const file = new MemoryFile();
  Qcow2Image.create(file, { size, clusterSize });
  return { file, img: Qcow2Image.open(file) };
}

/** A client and a server on one ring, in this thread. */
function pair(img: Qcow2Image, ringOpts: { slots?: number; slotDataBytes?: number } = {}, steps: number[] = [Infinity]) {
  const sab = createRing(ringOpts);
  const server = new RingServer(sab, img, { spinUs: 0 });
  // No spinning on the client: the server only runs when the test steps it.
  const client = new DiskClient(sab, "memory", { spinUs: 0 });
  /** Steps the server until `p` settles. */
  async function drive<T>(p: Promise<T>): Promise<T> {
    let done = false;
    p.then(
      () => (done = true),
      () => (done = true),
    );
    let step = 0;
    while (!done) {
      // Serve a varying number of requests per step, so the client sees partial progress.
      server.serveAvailable(steps[step++ % steps.length]);
      if (server.closed) client.ring.serverEnded();
      await new Promise((r) => setImmediate(r));
    }
    return p;
  }
  return { sab, server, client, drive };
}

function bytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function checkTiming(t: RequestTiming): void {
  expect(t.called).toBeLessThanOrEqual(t.submitted);
  expect(t.submitted).toBeLessThanOrEqual(t.workerStart);
  expect(t.workerStart).toBeLessThanOrEqual(t.workerEnd);
  expect(t.workerEnd).toBeLessThanOrEqual(t.completed);
  expect(t.chunks).toBeGreaterThanOrEqual(1);
}

describe("ring layout", () => {
  it("places control, slots and 4 KiB-aligned data shares as specified", () => {
    const sab = createRing({ slots: 8, slotDataBytes: 16384 });
    const v = new RingView(sab);
    expect(v.nslots).toBe(8);
    expect(v.slotData).toBe(16384);
    expect(v.dataArea % 4096).toBe(0);
    expect(v.dataArea).toBeGreaterThanOrEqual(256 + 8 * 128);
    expect(sab.byteLength).toBe(v.dataArea + 8 * 16384);
    for (let i = 0; i < 8; i++) {
      expect(v.slotI32[i * SLOT_I32 + S.DATA_OFFSET]).toBe(v.dataArea + i * 16384);
      expect(v.slotI32[i * SLOT_I32 + S.DATA_CAP]).toBe(16384);
    }
    expect(v.ctlF64[C.F64_CLOCK_BASE]).toBe(performance.timeOrigin);
  });

  it("refuses bad geometries", () => {
    expect(() => createRing({ slots: 3 })).toThrow(/power of two/);
    expect(() => createRing({ slotDataBytes: 1000 })).toThrow(/multiple of 4096/);
    expect(() => new RingView(new SharedArrayBuffer(4096))).toThrow(/not a refcow request ring/);
  });

  it("splits ranges at absolute multiples of the unit", () => {
    fc.assert(
      fc.property(fc.nat(1 << 24), fc.nat(1 << 20), fc.constantFrom(4096, 8192, 65536), (offset, length, unit) => {
        const parts = splitRange(offset, length, unit);
        let pos = offset;
        for (const [o, l] of parts) {
          expect(o).toBe(pos);
          expect(l).toBeGreaterThan(0);
          expect(l).toBeLessThanOrEqual(unit);
          pos += l;
          if (pos !== offset + length) expect(pos % unit).toBe(0);
        }
        expect(pos).toBe(offset + length);
      }),
    );
  });
});

describe("adaptive spin policy", () => {
  it("halves the budget when the awaited event follows a missed spin at once, and recovers on hits", () => {
    const p = new SpinPolicy(0.05);
    expect(p.next()).toBe(0.05);
    p.miss(10);
    p.arrived(10.001); // 1 µs after the spin gave up: the spin held the other side off
    expect(p.budget).toBe(0.025);
    p.miss(20);
    p.arrived(20.5); // long after: a slow request, not contention
    expect(p.budget).toBe(0.025);
    for (let i = 0; i < 10; i++) {
      p.miss(i);
      p.arrived(i);
    }
    expect(p.budget).toBe(0);
    // At 0 it probes with the maximum once in a while.
    const probes = Array.from({ length: SpinPolicy.PROBE_EVERY * 2 }, () => p.next()).filter((b) => b > 0);
    expect(probes).toEqual([0.05, 0.05]);
    p.hit();
    expect(p.budget).toBe(0.0125);
    p.hit();
    p.hit();
    expect(p.budget).toBe(0.05);
  });

  it("keeps a fixed budget when not adaptive", () => {
    const p = new SpinPolicy(0.05, false);
    p.miss(1);
    p.arrived(1);
    expect(p.next()).toBe(0.05);
  });
});

describe("raw protocol (no DiskClient)", () => {
  it("answers an unknown opcode with a protocol status and a message, and keeps serving", () => {
    const { img } = newImage();
    const sab = createRing({ slots: 2, slotDataBytes: 4096 });
    const server = new RingServer(sab, img, { spinUs: 0 });
    const v = new RingView(sab);
    expect(Atomics.load(v.ctl, C.SERVER_STATE)).toBe(1); // READY
    expect(v.ctlF64[C.F64_IMAGE_SIZE]).toBe(4 * MiB);
    const submit = (seq: number, op: number) => {
      const slot = seq & v.mask;
      v.slotI32[slot * SLOT_I32 + S.OPCODE] = op;
      v.slotI32[slot * SLOT_I32 + S.SEQ] = seq;
      v.slotI32[slot * SLOT_I32 + S.LENGTH] = 0;
      Atomics.store(v.slotI32, slot * SLOT_I32 + S.STATE, SlotState.SUBMITTED);
      Atomics.store(v.ctl, C.SQ_TAIL, seq + 1);
    };
    submit(0, 99);
    expect(server.serveAvailable()).toBe(1);
    expect(Atomics.load(v.ctl, C.CQ_TAIL)).toBe(1);
    expect(v.slotI32[S.STATUS]).toBe(Status.PROTOCOL);
    expect(v.slotI32[S.STATE]).toBe(SlotState.DONE);
    expect(readText(v.share(0, v.slotI32[S.RESULT_LEN]))).toMatch(/unknown opcode 99/);
    v.slotI32[S.STATE] = SlotState.FREE;
    submit(1, Op.NOP);
    expect(server.serveAvailable()).toBe(1);
    const b = 1 * SLOT_I32;
    expect(v.slotI32[b + S.STATUS]).toBe(Status.OK);
    expect(v.slotF64[1 * SLOT_F64 + SF.T_END]).toBeGreaterThanOrEqual(v.slotF64[1 * SLOT_F64 + SF.T_START]);
  });

  it("refuses a slot that was not marked SUBMITTED", () => {
    const { img } = newImage();
    const sab = createRing({ slots: 2, slotDataBytes: 4096 });
    const server = new RingServer(sab, img, { spinUs: 0 });
    const v = new RingView(sab);
    v.slotI32[S.OPCODE] = Op.NOP;
    Atomics.store(v.ctl, C.SQ_TAIL, 1);
    server.serveAvailable();
    expect(v.slotI32[S.STATUS]).toBe(Status.PROTOCOL);
    expect(readText(v.share(0, v.slotI32[S.RESULT_LEN]))).toMatch(/not SUBMITTED/);
  });

  it("reports a failed open through the ring", async () => {
    const sab = createRing();
    const r = serveRing(sab, () => Qcow2Image.open(new MemoryFile(new Uint8Array(1024))));
    expect(r.reason).toBe("open-failed");
    await expect(waitForServer(sab, "garbage")).rejects.toMatchObject({ name: "ImageFormatError" });
  });
});

type Req =
  | { kind: "write"; offset: number; length: number; seed: number }
  | { kind: "read"; offset: number; length: number }
  | { kind: "zero"; offset: number; length: number; unmap: boolean }
  | { kind: "discard"; offset: number; length: number }
  | { kind: "flush" };

const SIZE = 1 * MiB;
const CLUSTER = 4096;

function reqArb(): fc.Arbitrary<Req> {
  // Lengths up to 40 KiB against slot shares of 4-16 KiB: most requests are split; some run past the end.
  const range = fc.record({ offset: fc.nat(SIZE + 8192), length: fc.nat(40 * 1024) });
  return fc.oneof(
    { weight: 4, arbitrary: range.chain((r) => fc.nat(1000).map((seed) => ({ kind: "write" as const, ...r, seed }))) },
    { weight: 4, arbitrary: range.map((r) => ({ kind: "read" as const, ...r })) },
    { weight: 1, arbitrary: range.chain((r) => fc.boolean().map((unmap) => ({ kind: "zero" as const, ...r, unmap }))) },
    { weight: 1, arbitrary: range.map((r) => ({ kind: "discard" as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ kind: "flush" as const }) },
  );
}

/** Applies `r` to the in-process oracle; returns read bytes, or the error class name. */
function applyOracle(img: Qcow2Image, r: Req): Uint8Array | string | undefined {
  try {
    switch (r.kind) {
      case "write":
        img.write(r.offset, bytes(r.length, r.seed));
        return undefined;
      case "read":
        return img.read(r.offset, r.length);
      case "zero":
        img.writeZeroes(r.offset, r.length, { unmap: r.unmap });
        return undefined;
      case "discard":
        img.discard(r.offset, r.length);
        return undefined;
      case "flush":
        img.flush();
        return undefined;
    }
  } catch (e) {
    return (e as Error).name;
  }
}

function issue(client: DiskClient, r: Req): Promise<Uint8Array | undefined> {
  switch (r.kind) {
    case "write":
      return client.write(r.offset, bytes(r.length, r.seed)).then(() => undefined);
    case "read":
      return client.read(r.offset, r.length);
    case "zero":
      return client.writeZeroes(r.offset, r.length, { unmap: r.unmap }).then(() => undefined);
    case "discard":
      return client.discard(r.offset, r.length).then(() => undefined);
    case "flush":
      return client.flush().then(() => undefined);
  }
}

describe("DiskClient ↔ RingServer in one thread", () => {
  it("random concurrent requests, split and queued, give the in-process engine's bytes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(1, 2, 4, 8),
        fc.constantFrom(4096, 8192, 16384),
        fc.array(fc.array(reqArb(), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }),
        async (slots, slotDataBytes, batches, steps) => {
          const served = newImage(SIZE, CLUSTER);
          const oracle = newImage(SIZE, CLUSTER);
          const { client, drive } = pair(served.img, { slots, slotDataBytes }, steps);
          for (const batch of batches) {
            // Every request of a batch is made before any completes: they share slots and the queue.
            const expected = batch.map((r) => applyOracle(oracle.img, r));
            const settled = await drive(Promise.allSettled(batch.map((r) => issue(client, r))));
            settled.forEach((s, i) => {
              const exp = expected[i];
              if (typeof exp === "string") {
                expect(s.status).toBe("rejected");
                expect((s as PromiseRejectedResult).reason.name).toBe(exp);
              } else {
                if (s.status === "rejected") throw s.reason;
                if (exp instanceof Uint8Array) expect(Buffer.from(s.value!).equals(Buffer.from(exp))).toBe(true);
              }
            });
          }
          const all = await drive(client.read(0, SIZE));
          expect(Buffer.from(all).equals(Buffer.from(oracle.img.read(0, SIZE)))).toBe(true);
          await drive(client.close());
          // The served image, reopened, holds the same bytes.
          const again = Qcow2Image.open(new MemoryFile(served.file.contents()));
          expect(Buffer.from(again.read(0, SIZE)).equals(Buffer.from(oracle.img.read(0, SIZE)))).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("completes queued requests in call order when the ring is full, with sane timing", async () => {
    const { img } = newImage();
    const { client, drive } = pair(img, { slots: 1, slotDataBytes: 4096 });
    const order: number[] = [];
    const timings: RequestTiming[] = [];
    client.onTiming = (_op, t) => timings.push(t);
    const ps = [];
    for (let i = 0; i < 50; i++) {
      const p = i % 2 ? client.write(i * 4096, bytes(4096, i)) : client.nop();
      ps.push(p.then(() => order.push(i)));
    }
    expect(client.pendingRequests).toBe(50);
    await drive(Promise.all(ps));
    expect(order).toEqual([...Array(50).keys()]);
    expect(timings).toHaveLength(50);
    timings.forEach(checkTiming);
    // Later requests waited in the client queue: their submission came after their call.
    expect(timings[49].submitted).toBeGreaterThan(timings[49].called);
  });

  it("copies write data at call time, so the caller may reuse its buffer", async () => {
    const { img } = newImage();
    const { client, drive } = pair(img, { slots: 1, slotDataBytes: 4096 });
    const buf = new Uint8Array(10000);
    const ps = [];
    for (let i = 0; i < 5; i++) {
      buf.fill(i + 1);
      ps.push(client.write(i * 10000, buf)); // the ring holds one 4 KiB piece; the rest is queued
    }
    buf.fill(0xee);
    await drive(Promise.all(ps));
    for (let i = 0; i < 5; i++) expect(img.read(i * 10000, 10000).every((b) => b === i + 1)).toBe(true);
  });

  it("rebuilds the engine's error classes from status codes", async () => {
    const { file, img } = newImage();
    img.close();
    const ro = Qcow2Image.open(new MemoryFile(file.contents()), { readOnly: true });
    const { client, drive } = pair(ro);
    expect(client.readOnly).toBe(true);
    const w = drive(client.write(0, new Uint8Array(512)));
    await expect(w).rejects.toBeInstanceOf(RequestError);
    await expect(w).rejects.toThrow(/read-only/);
    const past = client.read(4 * MiB - 512, 1024);
    await expect(past).rejects.toBeInstanceOf(RequestError);
    await expect(past).rejects.toThrow(/past the end of the disk \(4194304 bytes\)/);
    await expect(drive(client.read(0, 512))).resolves.toHaveLength(512);
    const rw = pair(newImage().img);
    const apply = rw.drive(rw.client.snapshotApply("nope"));
    await expect(apply).rejects.toBeInstanceOf(SnapshotError);
    await expect(apply).rejects.toThrow(/snapshot 'nope' does not exist/);
  });

  it("moves results and VM state larger than a slot through PUT/GET", async () => {
    const { img } = newImage();
    const { client, drive } = pair(img, { slots: 2, slotDataBytes: 4096 });
    const state = bytes(50_000, 7);
    const info = await drive(client.snapshotCreate("with-state", { vmState: state, vmClockNsec: 1234 }));
    expect(info.name).toBe("with-state");
    expect(info.vmStateSize).toBe(50_000);
    for (let i = 0; i < 40; i++) await drive(client.snapshotCreate(`snapshot-with-a-long-name-${i}`));
    const list = await drive(client.snapshotList());
    expect(list.length).toBe(41);
    expect(JSON.stringify(list).length).toBeGreaterThan(4096); // did not fit one slot
    expect(list.map((s) => s.name)).toEqual(img.snapshotList().map((s) => s.name));
    const back = await drive(client.readVmState("with-state"));
    expect(Buffer.from(back).equals(Buffer.from(state))).toBe(true);
    await drive(client.snapshotDelete("snapshot-with-a-long-name-3"));
    expect(img.snapshotList().some((s) => s.name === "snapshot-with-a-long-name-3")).toBe(false);
    const stats = await drive(client.stats());
    expect(stats === null || typeof stats === "object").toBe(true);
  });

  it("applies a snapshot through the ring", async () => {
    const { img } = newImage();
    const { client, drive } = pair(img);
    await drive(client.write(0, bytes(8192, 1)));
    await drive(client.snapshotCreate("a"));
    await drive(client.write(0, bytes(8192, 2)));
    await drive(client.snapshotApply("a"));
    expect(Buffer.from(await drive(client.read(0, 8192))).equals(Buffer.from(bytes(8192, 1)))).toBe(true);
  });

  it("rejects requests after close, and close waits for earlier requests", async () => {
    const { img } = newImage();
    const { client, drive, server } = pair(img, { slots: 1 });
    const w = client.write(0, bytes(300_000, 3));
    const c = client.close();
    expect(client.closed).toBe(true);
    await expect(client.read(0, 1)).rejects.toThrow(/closed/);
    await drive(Promise.all([w, c]));
    expect(server.closed).toBe(true);
    await expect(client.nop()).rejects.toMatchObject({ name: "ClosedError" });
    await expect(client.close()).resolves.toBeUndefined(); // idempotent
  });

  it("fails every pending request when the host reports the server dead", async () => {
    const { img } = newImage();
    const { client } = pair(img, { slots: 2 });
    const ps = [client.nop(), client.nop(), client.nop(), client.read(0, 512)];
    client.ring.fail(new Error("worker gone"));
    const settled = await Promise.allSettled(ps);
    expect(settled.every((s) => s.status === "rejected" && /worker gone/.test(String(s.reason)))).toBe(true);
    await expect(client.nop()).rejects.toThrow(/worker gone/);
  });
});
