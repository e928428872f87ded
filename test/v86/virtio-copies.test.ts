/**
 * How many bytes JavaScript copies for a virtio-blk write, observed from outside the code under test: every
 * Uint8Array `set` and `slice` on this thread is counted while the driver's notify submits the request (the
 * device reads the chain, the ring client publishes it). The ring's server runs in this thread too but is
 * stepped only after the count stops, so what it copies into the image is not counted.
 */
import { afterEach, describe, expect, it } from "vitest";
import { MemoryFile } from "../../src/io/memory-file.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { T_OUT } from "../../src/v86/virtio-blk.js";
import { DiskClient } from "../../src/worker/disk-client.js";
import { createRing, type RingOptions } from "../../src/worker/ring.js";
import { RingServer } from "../../src/worker/serve-loop.js";
import { ServedAsyncDisk } from "../../src/worker/served-async-disk.js";
import { Driver } from "../helpers/virtio-driver.js";

const MiB = 1 << 20;

/** Counts the bytes Uint8Array.prototype.set and .slice copy while counting is on. */
function copyCounter() {
  const proto = Uint8Array.prototype as unknown as { set: (...a: unknown[]) => void; slice: (...a: unknown[]) => Uint8Array };
  const origSet = proto.set;
  const origSlice = proto.slice;
  const c = { bytes: 0, on: true };
  proto.set = function (this: Uint8Array, ...a: unknown[]) {
    if (c.on) c.bytes += (a[0] as ArrayLike<number>).length;
    return origSet.apply(this, a);
  };
  proto.slice = function (this: Uint8Array, ...a: unknown[]) {
    const out = origSlice.apply(this, a);
    if (c.on) c.bytes += out.length;
    return out;
  };
  restore.push(() => {
    proto.set = origSet;
    proto.slice = origSlice;
  });
  return c;
}
const restore: Array<() => void> = [];
afterEach(() => {
  for (const r of restore.splice(0)) r();
});

function servedDriver(ring?: RingOptions) {
  const file = new MemoryFile();
  Qcow2Image.create(file, { size: 8 * MiB, clusterSize: 65536 });
  const image = Qcow2Image.open(file);
  const sab = createRing(ring);
  const server = new RingServer(sab, image, { spinUs: 0 });
  const client = new DiskClient(sab, "memory", { spinUs: 0 });
  const driver = new Driver(new ServedAsyncDisk(client.ring));
  return { server, driver, image };
}

describe("virtio-blk write path", () => {
  it("copies a write's data once in JavaScript: from the guest's segments straight into the ring", () => {
    const { server, driver, image } = servedDriver();
    // Data over three descriptors, as a driver scatters a request over pages.
    const segs = [driver.fill(4096, 0x11), driver.fill(8192, 0x22), driver.fill(4096, 0x33)];
    const payload = 4096 + 8192 + 4096;
    const counter = copyCounter();
    const { status } = driver.request(T_OUT, 128, segs);
    counter.on = false;
    // The data once; the other 2 bytes are the queue's avail_event (EVENT_IDX), written after the pass.
    expect(counter.bytes).toBe(payload + 2);

    // The data reached the image intact, and the guest got its status.
    expect(server.serveAvailable()).toBe(1);
    driver.dev.pollFromEmulator(false);
    expect(driver.ram.bytes[status]).toBe(0);
    const back = new Uint8Array(payload);
    image.readInto(back, 128 * 512);
    expect(back.subarray(0, 4096).every((b) => b === 0x11)).toBe(true);
    expect(back.subarray(4096, 12288).every((b) => b === 0x22)).toBe(true);
    expect(back.subarray(12288).every((b) => b === 0x33)).toBe(true);
  });

  it("keeps a write that waits for free slots pointing at guest memory, without a copy aside", () => {
    // 4 slots of 64 KiB: a 1 MiB write is published a quarter of the ring at a time, as slots free up.
    const { server, driver, image } = servedDriver({ slots: 4, slotDataBytes: 65536 });
    const big = driver.fill(MiB, 0x5a);
    const counter = copyCounter();
    const { status } = driver.request(T_OUT, 0, [big]);
    expect(counter.bytes).toBe(4 * 65536 + 2); // what fits in the ring, and the avail_event
    for (let i = 0; i < 64 && driver.dev.pending > 0; i++) {
      counter.on = false; // the server's copies into the image are not the client's
      server.serveAvailable();
      counter.on = true;
      driver.dev.pollFromEmulator(false);
    }
    counter.on = false;
    expect(driver.dev.pending).toBe(0);
    expect(driver.ram.bytes[status]).toBe(0);
    // The data once; the rest is the queue's bookkeeping: avail_event (2), the status byte (1), the used
    // element (8) and used.idx (2).
    expect(counter.bytes).toBe(MiB + 2 + 1 + 8 + 2);
    const back = new Uint8Array(big.len);
    image.readInto(back, 0);
    expect(back.every((b) => b === 0x5a)).toBe(true);
  });
});
