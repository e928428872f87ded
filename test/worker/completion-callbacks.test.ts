/**
 * The asynchronous disk over the ring (ServedAsyncDisk: callback completions carrying the timing, poll()),
 * and the spins sized from observed times (SizedSpin), with both
 * ends of the ring in this thread on the real engine: the server is stepped with serveAvailable(), so when a
 * completion becomes visible is under the test's control.
 */
import { describe, expect, it } from "vitest";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { RequestRecorder } from "../../src/guest/request-recorder.js";
import { HdaAdapter } from "../../src/v86/hda-adapter.js";
import { ServedAsyncDisk } from "../../src/worker/served-async-disk.js";
import { DiskClient } from "../../src/worker/disk-client.js";
import { createRing, SizedSpin } from "../../src/worker/ring.js";
import { RingServer } from "../../src/worker/serve-loop.js";

const MiB = 1 << 20;

function pair(clientOpts = {}) {
  const file = new MemoryFile();
  Qcow2Image.create(file, { size: 4 * MiB, clusterSize: 65536 });
  const sab = createRing();
  const server = new RingServer(sab, Qcow2Image.open(file), { spinUs: 0 });
  const client = new DiskClient(sab, "memory", { spinUs: 0, ...clientOpts });
  return { server, client, disk: new ServedAsyncDisk(client.ring) };
}

describe("ServedAsyncDisk completions and poll()", () => {
  it("run a completion's callback inside poll(), synchronously, and only once the server has published it", () => {
    const { server, disk: client } = pair();
    const events: string[] = [];
    client.write(65536, new Uint8Array(4096).fill(7), (err, _v, timing) => {
      events.push(err ? `error ${err.message}` : "write done");
      expect(timing!.serviceMs).toBeGreaterThanOrEqual(0);
      expect(timing!.ringMs).toBeGreaterThanOrEqual(timing!.serviceMs!);
    });
    expect(client.poll(0)).toBe(0);
    expect(events).toEqual([]);
    expect(server.serveAvailable()).toBe(1);
    expect(events).toEqual([]); // published, not yet reaped
    expect(client.poll(0)).toBe(1);
    expect(events).toEqual(["write done"]);

    let read: Uint8Array | undefined;
    client.read(65536, 4096, (err, data) => {
      expect(err).toBeUndefined();
      read = data;
    });
    client.flush((err) => events.push(err ? "flush failed" : "flush done"));
    server.serveAvailable();
    expect(client.poll(0)).toBe(2);
    expect(read).toEqual(new Uint8Array(4096).fill(7));
    expect(events).toEqual(["write done", "flush done"]);
  });

  it("report a request the engine refuses through the callback, not by throwing", () => {
    const { server, disk } = pair();
    let error: Error | undefined;
    disk.write(4 * MiB, new Uint8Array(512), (err) => (error = err));
    expect(error?.message).toMatch(/past the end of the disk/); // refused before it reaches the ring
    disk.read(0, -1, (err) => (error = err));
    expect(error?.message).toMatch(/invalid length/);
    expect(server.serveAvailable()).toBe(0);
  });

  /** A clock that moves `step` ms at every reading (and runs `onRead` with the reading's number). */
  function steppingClock(step: number, onRead?: (n: number) => void) {
    const clock = { t: 1000, reads: 0, now: () => 0 };
    clock.now = () => {
      clock.reads++;
      onRead?.(clock.reads);
      return (clock.t += step);
    };
    return clock;
  }

  it("poll(spin) spins no longer than asked when nothing completes, and not at all with nothing in flight", () => {
    const clock = steppingClock(0.25);
    const { client, disk } = pair({ sizedSpinCapUs: 1000, spinClock: clock.now });
    expect(disk.poll(5)).toBe(0); // nothing in flight: returns at once
    expect(clock.reads).toBe(0);
    expect(client.ring.spunMs).toBe(0);
    disk.write(0, new Uint8Array(512), () => undefined);
    expect(disk.poll(2)).toBe(0); // the server never runs: the spin runs out
    // The start, then one reading per turn of the spin until the first at the deadline (2 ms = 8 steps),
    // then the end: the spin stopped at its deadline, not a turn later, and not before.
    expect(clock.reads).toBe(1 + 8 + 1);
    expect(client.ring.spunMs).toBeCloseTo(2 + 0.25, 9);
    // A step that does not divide the spin: it still ends at the first reading past the deadline.
    const odd = steppingClock(0.3);
    const other = pair({ sizedSpinCapUs: 1000, spinClock: odd.now });
    other.disk.write(0, new Uint8Array(512), () => undefined);
    expect(other.disk.poll(2)).toBe(0);
    expect(odd.reads).toBe(1 + Math.ceil(2 / 0.3) + 1);
    expect(other.client.ring.spunMs).toBeGreaterThanOrEqual(2);
    expect(other.client.ring.spunMs).toBeLessThan(2 + 2 * 0.3);
  });

  it("spins for a write someone waits for, not for a background one (a device's write cache told the guest)", async () => {
    const clock = steppingClock(0.25);
    const { server, client, disk } = pair({ spinUs: 1000, adaptiveSpin: false, spinClock: clock.now });
    let done = 0;
    disk.write(0, new Uint8Array(512), () => done++, true);
    await Promise.resolve();
    await Promise.resolve(); // the client's continuation ran: it went straight to waiting
    expect(clock.reads).toBe(0);
    expect(client.ring.spunMs).toBe(0);
    disk.write(512, new Uint8Array(512), () => done++);
    await Promise.resolve();
    await Promise.resolve();
    expect(clock.reads).toBeGreaterThan(0); // now one request is awaited: the spin ran (the server never did)
    expect(server.serveAvailable()).toBe(2);
    expect(disk.poll(0)).toBe(2);
    expect(done).toBe(2);
  });

  it("poll(spin) stops spinning as soon as the completion is published", () => {
    let server: RingServer | undefined;
    // The server publishes the completion while the client's spin reads the clock the 4th time.
    const clock = steppingClock(0.25, (n) => {
      if (n === 4) expect(server!.serveAvailable()).toBe(1);
    });
    const p = pair({ sizedSpinCapUs: 1000, spinClock: clock.now });
    server = p.server;
    let done = false;
    p.disk.write(0, new Uint8Array(512), () => (done = true));
    expect(p.disk.poll(2)).toBe(1);
    expect(done).toBe(true);
    // The start (reading 1), the turns reading 2 to 4 (the completion appears during the 4th reading and the
    // next look at the ring sees it), then the end: 4 steps, 1 ms of the 2 ms allowed.
    expect(clock.reads).toBe(5);
    expect(p.client.ring.spunMs).toBeCloseTo(4 * 0.25, 9);
  });
});

describe("HdaAdapter over a pollable disk", () => {
  it("completes v86's requests from pollFromEmulator(), in guest order, with the four clocks recorded", async () => {
    const { server, disk } = pair();
    const rec = new RequestRecorder();
    const adapter = new HdaAdapter(disk, { observer: rec });
    const done: string[] = [];
    adapter.set(0, new Uint8Array(4096).fill(1), () => done.push("w0"));
    adapter.set(8192, new Uint8Array(4096).fill(2), () => done.push("w1"));
    adapter.get(0, 4096, (d) => done.push(`r ${d[0]} ${d[4095]}`));
    // One request at a time reaches the ring; each completion starts the next one.
    for (let i = 0; i < 3; i++) {
      expect(server.serveAvailable()).toBe(1);
      adapter.pollFromEmulator(false);
      expect(done).toHaveLength(i + 1);
    }
    expect(done).toEqual(["w0", "w1", "r 1 1"]);
    expect(adapter.idle).toBe(true);
    expect(rec.records).toHaveLength(3);
    for (const r of rec.records) {
      expect(r.serviceMs).toBeGreaterThanOrEqual(0);
      expect(r.ringMs!).toBeGreaterThanOrEqual(r.serviceMs!);
      expect(r.latencyMs).toBeGreaterThanOrEqual(r.ringMs!);
    }
    await adapter.whenIdle();
  });

  it("hands DMA data over as it is and copies PIO data at once", () => {
    const { server, disk } = pair();
    const rec = new RequestRecorder();
    const adapter = new HdaAdapter(disk, { observer: rec });
    const pioBuffer = new Uint8Array(8192);
    adapter.reusedBuffer = (d) => d.buffer === pioBuffer.buffer;
    pioBuffer.fill(5);
    adapter.set(0, pioBuffer.subarray(0, 4096), () => undefined);
    adapter.set(4096, new Uint8Array(4096).fill(6), () => undefined); // DMA: queued behind the first
    pioBuffer.fill(9); // v86 reuses its PIO buffer at once
    for (let i = 0; i < 2; i++) {
      server.serveAvailable();
      adapter.pollFromEmulator(false);
    }
    let back: Uint8Array | undefined;
    adapter.get(0, 8192, (d) => (back = d));
    server.serveAvailable();
    adapter.pollFromEmulator(false);
    expect(back!.subarray(0, 4096)).toEqual(new Uint8Array(4096).fill(5));
    expect(back!.subarray(4096)).toEqual(new Uint8Array(4096).fill(6));
    expect([rec.pioWrites, rec.dmaWrites]).toEqual([1, 1]);
    expect(rec.records.filter((r) => r.pio).length).toBe(1);
  });
});

describe("SizedSpin", () => {
  it("spins for most of the observed waits, not before it has seen some, and not when they are mostly longer than the cap", () => {
    const s = new SizedSpin(1.0);
    expect(s.budget()).toBe(0);
    for (let i = 0; i < 3; i++) s.observe(0.1);
    expect(s.budget()).toBe(0); // too few samples
    for (let i = 0; i < 29; i++) s.observe(0.1);
    expect(s.budget()).toBeCloseTo(0.1 * SizedSpin.MARGIN + SizedSpin.SLACK_MS, 9);
    for (let i = 0; i < 4; i++) s.observe(0.4); // 4 of 32 longer: the 90th percentile covers them
    expect(s.budget()).toBeCloseTo(0.4 * SizedSpin.MARGIN + SizedSpin.SLACK_MS, 9);
    for (let i = 0; i < 32; i++) s.observe(2.0); // waits beyond the cap: sleep at once
    expect(s.budget()).toBe(0);
    s.observe(Number.NaN);
    s.observe(-1);
    expect(s.budget()).toBe(0);
  });
});
