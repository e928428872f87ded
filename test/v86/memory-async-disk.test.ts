/**
 * The in-memory disk (the guest floor's zero-latency disk): a request completes at the next `poll` or on the
 * next microtask, whichever comes first, exactly once; a poll runs only the completions of requests made
 * before it, so a device polling from v86's loop sees them there, as it reaps a worker-served disk's ring.
 */
import { describe, expect, it } from "vitest";
import { MemoryAsyncDisk } from "../../src/v86/memory-async-disk.js";

describe("MemoryAsyncDisk", () => {
  it("completes a request at the next poll, once, before any microtask runs", async () => {
    const disk = new MemoryAsyncDisk(4096);
    const events: string[] = [];
    disk.write(0, new Uint8Array(512).fill(7), (err) => events.push(`write ${err ?? "ok"}`));
    disk.read(0, 4, (err, data) => events.push(`read ${err ?? "ok"} ${Array.from(data ?? [])}`));
    expect(events).toEqual([]);
    expect(disk.poll(0)).toBe(2);
    expect(events).toEqual(["write ok", "read ok 7,7,7,7"]);
    await Promise.resolve();
    await new Promise((r) => setImmediate(r));
    expect(events).toHaveLength(2);
    expect(disk.poll(0)).toBe(0);
  });

  it("completes on a microtask when nobody polls", async () => {
    const disk = new MemoryAsyncDisk(4096);
    let done = 0;
    disk.flush(() => done++);
    expect(done).toBe(0);
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(1);
    expect(disk.counts.flushes).toBe(1);
  });

  it("leaves a request made inside a completion to the next poll", () => {
    const disk = new MemoryAsyncDisk(4096);
    const order: string[] = [];
    disk.write(0, new Uint8Array(512), () => {
      order.push("first");
      disk.write(512, new Uint8Array(512), () => order.push("second"));
    });
    expect(disk.poll(0)).toBe(1);
    expect(order).toEqual(["first"]);
    expect(disk.poll(0)).toBe(1);
    expect(order).toEqual(["first", "second"]);
  });

  it("fails a request outside the disk at completion, with the range in the message", () => {
    const disk = new MemoryAsyncDisk(4096);
    let error: Error | undefined;
    disk.read(4000, 512, (err) => (error = err));
    disk.poll(0);
    expect(error?.message).toMatch(/\[4000, \+512\) outside a 4096-byte disk/);
  });
});
