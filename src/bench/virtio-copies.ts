/**
 * Bytes JavaScript copies per virtio-blk write request, on the caller's thread: a minimal legacy driver
 * (one virtqueue in a plain guest RAM, requests built as Linux builds them: a 16-byte header, the data in one
 * descriptor, the status byte) submits 4 KiB writes 16 at a time to a build's VirtioBlk over its
 * worker-served image, while every Uint8Array `set` and `slice` on this thread is counted. The image's server
 * runs in its worker thread, so only the device path and the ring client are counted: the guest data and
 * the queue's own bookkeeping (avail_event 2 bytes per notify, status 1, used element 8, used.idx 2 per
 * publication). The count is taken from outside the code it measures, so it holds for any build.
 *
 * Timed separately, and before any count (the counter replaces Uint8Array's set and slice, which may leave
 * their call sites slower for the rest of the process), the same driver's writes give the path's amortized time per
 * write at depth 16 (wall time of the batches ÷ writes) and the process's CPU time per write (every thread:
 * less moved by a busy machine than wall time), device, ring client, worker and engine included, without a
 * guest's CPU in the way.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createImagePath } from "../open/open-path.js";
import type { Build } from "./compare-bin.js";

const RAM = 4 << 20;
const QUEUE_AT = 0x100000;
const QUEUE_SIZE = 128;
const QUEUE_ALIGN = 4096;
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
const T_OUT = 1;
/** Legacy virtio PCI registers (virtio 1.2 §4.1.4.8). */
const REG = { DEVICE_FEATURES: 0, DRIVER_FEATURES: 4, QUEUE_PFN: 8, QUEUE_SELECT: 14, QUEUE_NOTIFY: 16, STATUS: 18 };

interface Device {
  memory: unknown;
  irq: unknown;
  ioRead(offset: number, size: number): number;
  ioWrite(offset: number, size: number, value: number): void;
  whenIdle(): Promise<void>;
  failure: Error | undefined;
}

/** A build's VirtioBlk over its worker-served image (the served disk's constructor changed with the contracts). */
async function deviceOf(build: Build, client: { ring?: unknown }): Promise<Device> {
  const { VirtioBlk } = await build.load<{ VirtioBlk: new (disk: unknown) => Device }>("v86/virtio-blk.js");
  const here = fs.existsSync(path.join(build.dist, "worker", "served-async-disk.js"));
  const { ServedAsyncDisk } = await build.load<{ ServedAsyncDisk: new (c: unknown) => unknown }>(here ? "worker/served-async-disk.js" : "v86/served-async-disk.js");
  return new VirtioBlk(new ServedAsyncDisk(here ? client.ring : client));
}

/** Counts the bytes Uint8Array.prototype.set and .slice copy on this thread until `stop()`. */
function countCopies(): { stop: () => number } {
  const proto = Uint8Array.prototype as unknown as { set: (...a: unknown[]) => void; slice: (...a: unknown[]) => Uint8Array };
  const origSet = proto.set;
  const origSlice = proto.slice;
  let bytes = 0;
  proto.set = function (this: Uint8Array, ...a: unknown[]) {
    bytes += (a[0] as ArrayLike<number>).length;
    return origSet.apply(this, a);
  };
  proto.slice = function (this: Uint8Array, ...a: unknown[]) {
    const out = origSlice.apply(this, a);
    bytes += out.length;
    return out;
  };
  return {
    stop: () => {
      proto.set = origSet;
      proto.slice = origSlice;
      return bytes;
    },
  };
}

export interface VirtioWritePathTime {
  /** Amortized µs per write at depth 16 (batches' wall time ÷ writes). */
  usPerWrite: number;
  /** The process's CPU time (every thread: this one, the image's worker, V8's) ÷ writes, µs. */
  cpuUsPerWrite: number;
}

/** A build's virtio-blk write path timed over `requests` 4 KiB writes at depth 16. */
export function timeVirtioWritePath(build: Build, requests = 4096): Promise<VirtioWritePathTime> {
  return withDriver(build, async (run) => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await run(requests);
    const usPerWrite = ((performance.now() - t0) * 1000) / requests;
    const cpu = process.cpuUsage(cpu0);
    return { usPerWrite, cpuUsPerWrite: (cpu.user + cpu.system) / requests };
  });
}

/**
 * Bytes Uint8Array set/slice copied on this thread per 4 KiB write, over `requests` writes at depth 16. Run it
 * after every timing: the counter's replacement of set and slice may leave their call sites slower.
 */
export function countVirtioWritePathCopies(build: Build, requests = 1024): Promise<number> {
  return withDriver(build, async (run) => {
    const counter = countCopies();
    let bytes: number;
    try {
      await run(requests);
    } finally {
      bytes = counter.stop();
    }
    return bytes / requests;
  });
}

/** Runs `f` with a warmed-up driver of a build's device over a fresh served image; `run(n)` makes n writes. */
async function withDriver<T>(build: Build, f: (run: (requests: number) => Promise<void>) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-virtio-copies-"));
  const file = path.join(dir, "copies.qcow2");
  const { ImagePool } = await build.load<{ ImagePool: new () => { open(f: string, o: object): Promise<{ ring?: unknown; close(): Promise<void> }>; destroy(): Promise<void> } }>(
    "worker/pool.js",
  );
  const pool = new ImagePool();
  try {
    createImagePath(file, { size: 64 << 20 });
    const client = await pool.open(file, { cache: "writeback" });
    const dev = await deviceOf(build, client);
    const ram = new Uint8Array(RAM);
    const dv = new DataView(ram.buffer);
    dev.memory = { size: RAM, read: (a: number, n: number) => ram.subarray(a, a + n), write: (a: number, d: Uint8Array) => ram.set(d, a) };
    dev.irq = { raise: () => undefined, lower: () => undefined };
    dev.ioWrite(REG.STATUS, 1, 1 | 2);
    dev.ioWrite(REG.DRIVER_FEATURES, 4, dev.ioRead(REG.DEVICE_FEATURES, 4));
    dev.ioWrite(REG.QUEUE_SELECT, 2, 0);
    dev.ioWrite(REG.QUEUE_PFN, 4, QUEUE_AT / QUEUE_ALIGN);
    dev.ioWrite(REG.STATUS, 1, 1 | 2 | 4);
    const avail = QUEUE_AT + 16 * QUEUE_SIZE;
    const depth = 16;
    // Per slot k of a batch: descriptors 3k..3k+2 (header, data, status), buffers at 0x200000 + 8 KiB × k.
    const setDesc = (i: number, addr: number, len: number, flags: number) => {
      const at = QUEUE_AT + 16 * i;
      dv.setUint32(at, addr, true);
      dv.setUint32(at + 4, 0, true);
      dv.setUint32(at + 8, len, true);
      dv.setUint16(at + 12, flags, true);
      dv.setUint16(at + 14, i + 1, true);
    };
    let availIdx = 0;
    const batch = (first: number) => {
      for (let k = 0; k < depth; k++) {
        const buf = 0x200000 + 8192 * k;
        dv.setUint32(buf, T_OUT, true);
        dv.setUint32(buf + 8, ((first + k) * 8) % (60 << 11), true); // sector: 4 KiB apart, inside the disk
        dv.setUint32(buf + 12, 0, true);
        ram.fill(k + 1, buf + 4096, buf + 8192);
        setDesc(3 * k, buf, 16, DESC_F_NEXT);
        setDesc(3 * k + 1, buf + 4096, 4096, DESC_F_NEXT);
        setDesc(3 * k + 2, buf + 16, 1, DESC_F_WRITE);
        dv.setUint16(avail + 4 + 2 * (availIdx % QUEUE_SIZE), 3 * k, true);
        availIdx = (availIdx + 1) & 0xffff;
      }
      dv.setUint16(avail + 2, availIdx, true);
      dev.ioWrite(REG.QUEUE_NOTIFY, 2, 0);
    };
    const run = async (requests: number) => {
      for (let i = 0; i < requests; i += depth) {
        batch(i);
        await dev.whenIdle();
      }
      if (dev.failure) throw dev.failure;
    };
    await run(64); // warm-up
    const result = await f(run);
    await client.close();
    return result;
  } finally {
    await pool.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
