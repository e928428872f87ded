/**
 * The request recorder (src/guest/request-recorder.ts) on its own, fed as the devices feed it: records and
 * per-phase sums, the shape of each device's records and summaries (the results files depend on them: an
 * IDE phase has no virtio counters), and the record cap.
 */
import { describe, expect, it } from "vitest";
import { RequestRecorder, type VirtioPhaseSummary } from "../../src/guest/request-recorder.js";
import { S_IOERR, S_OK, T_DISCARD, T_GET_ID, T_IN, T_OUT } from "../../src/v86/virtio-blk.js";

describe("RequestRecorder", () => {
  it("IDE: labels requests with the phase at submission, sums them per phase, counts PIO and DMA writes", () => {
    const rec = new RequestRecorder();
    rec.phase = "a";
    const t1 = rec.submitted({ op: "write", submitted: 10, depth: 1, pio: true });
    const t2 = rec.submitted({ op: "write", submitted: 11, depth: 2, pio: false });
    rec.phase = "b";
    rec.completed(t1, { op: "write", offset: 0, length: 512, submitted: 10, depth: 1, started: 10, diskDone: 14, completed: 14, serviceMs: 1, ringMs: 2, pio: true });
    rec.completed(t2, { op: "write", offset: 512, length: 4096, submitted: 11, depth: 2, started: 14, diskDone: 20, completed: 20 });
    expect([rec.pioWrites, rec.dmaWrites]).toEqual([1, 1]);
    expect(rec.takeRecords()).toEqual([
      { op: "write", offset: 0, length: 512, phase: "a", submitted: 10, queuedMs: 0, latencyMs: 4, serviceMs: 1, ringMs: 2, pio: true, depth: 1 },
      { op: "write", offset: 512, length: 4096, phase: "a", submitted: 11, queuedMs: 3, latencyMs: 9, depth: 2 },
    ]);
    expect(rec.summary("a")).toEqual({ reads: 0, writes: 2, flushes: 0, bytesRead: 0, bytesWritten: 4608, readMs: 0, writeMs: 13, flushMs: 0, maxInFlight: 2 });
    expect(rec.summary("b")).not.toHaveProperty("interrupts");
  });

  it("virtio-blk: records the reads, writes and flushes that succeeded; counts the rest; notifications and batches per phase", () => {
    const rec = new RequestRecorder({ virtio: true });
    const done = (type: number, status: number, op: "read" | "write" | "flush", length: number) => {
      const t = rec.submitted({ op, submitted: 1, depth: 1 });
      rec.completed(t, { op, offset: 0, length, submitted: 1, depth: 1, started: 1, diskDone: 2, completed: 3, virtio: { type, status } });
    };
    rec.notified();
    done(T_IN, S_OK, "read", 4096);
    done(T_OUT, S_IOERR, "write", 4096);
    done(T_DISCARD, S_OK, "write", 65536);
    done(T_GET_ID, S_OK, "write", 0);
    rec.published(true);
    rec.published(false);
    expect(rec.takeRecords()).toEqual([
      { op: "read", offset: 0, length: 4096, phase: "boot", submitted: 1, queuedMs: 0, latencyMs: 2, depth: 1, diskDone: 2, completed: 3, type: T_IN, status: S_OK },
    ]);
    const s = rec.summary("boot") as VirtioPhaseSummary;
    expect([s.reads, s.writes, s.errors, s.discards, s.notifies, s.batches, s.interrupts]).toEqual([1, 0, 1, 1, 1, 2, 1]);
    expect(rec.summary("later")).toHaveProperty("interrupts", 0);
  });

  it("keeps at most maxRecords records, and none with record: false; the sums go on", () => {
    for (const [opts, kept] of [[{ maxRecords: 2 }, 2], [{ record: false }, 0]] as const) {
      const rec = new RequestRecorder(opts);
      for (let i = 0; i < 3; i++) {
        const t = rec.submitted({ op: "flush", submitted: i, depth: 1 });
        rec.completed(t, { op: "flush", offset: 0, length: 0, submitted: i, depth: 1, started: i, diskDone: i + 1, completed: i + 1 });
      }
      expect(rec.records).toHaveLength(kept);
      expect(rec.summary("boot").flushes).toBe(3);
    }
  });

  it("refuses virtio reports when made for IDE", () => {
    expect(() => new RequestRecorder().notified()).toThrow(/virtio/);
  });
});
