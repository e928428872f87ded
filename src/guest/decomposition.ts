/**
 * Where the time of a guest request goes, per phase: four clocks around the same requests, outermost first.
 *
 *   app     the guest program's system call (pwrite / pread / fdatasync with O_DIRECT), timed by the guest
 *           itself with CLOCK_MONOTONIC (guest-io-report.ts): what a program in the guest sees
 *   device  the hda adapter: v86's call of get/set (or the honest flush) to the completion callback
 *   ring    the DiskClient: the request's call to its completion at the caller's end of the worker ring
 *   engine  the worker's own time on the request (the engine, its I/O included)
 *
 * app − device is the guest kernel, v86's IDE emulation and the interrupt's way back to the program;
 * device − ring the adapter's queue and the promise hops; ring − engine the ring's hand-off and wake-ups.
 * The emulator's share is app − engine: the medians' difference, and per request when the guest's
 * requests and the disk requests pair one to one (same count, in order).
 */
import { summarize } from "../stats/latency.js";
import type { DiskOp, DiskRequestRecord } from "./request-recorder.js";
import { checkClock, type ClockCheck, type GuestIoOp, type GuestIoReport } from "./guest-io-report.js";

/** One latency column, µs. */
export interface LatencyColumn {
  count: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

export interface Decomposition {
  app_us?: LatencyColumn;
  device_us: LatencyColumn;
  ring_us?: LatencyColumn;
  engine_us?: LatencyColumn;
  /** median(app) − median(engine), µs: the emulator's (and the ring's) share. */
  emulator_us?: number;
  /** app − engine per request, when the two pair one to one. */
  emulator_paired_us?: LatencyColumn;
  /** The guest's clock against the host's over the phase (when the requests pair one to one). */
  clock?: ClockCheck;
}

export function column(samplesUs: readonly number[]): LatencyColumn {
  const s = summarize(samplesUs);
  return { count: s.count, median: s.median, p90: s.p90, p99: s.p99, max: s.max };
}

const GUEST_OP: Record<DiskOp, GuestIoOp> = { write: "write", read: "read", flush: "fdatasync" };

/**
 * The decomposition of the `op` requests among `records` (one phase's), with the guest program's reports of
 * the same phase. Undefined when the phase has no such request.
 */
export function decompose(records: readonly DiskRequestRecord[], reports: readonly GuestIoReport[], op: DiskOp): Decomposition | undefined {
  const mine = records.filter((r) => r.op === op);
  const app = reports.filter((r) => r.op === GUEST_OP[op]);
  if (mine.length === 0 && app.length === 0) return undefined;
  const out: Decomposition = { device_us: column(mine.map((r) => r.latencyMs * 1000)) };
  const appUs = app.flatMap((r) => r.latenciesNs.map((ns) => ns / 1000));
  if (appUs.length) out.app_us = column(appUs);
  const all = <K extends "ringMs" | "serviceMs">(k: K) => (mine.length > 0 && mine.every((r) => r[k] !== undefined) ? mine.map((r) => r[k]! * 1000) : undefined);
  const ring = all("ringMs");
  const engine = all("serviceMs");
  if (ring) out.ring_us = column(ring);
  if (engine) out.engine_us = column(engine);
  if (out.app_us && out.engine_us) out.emulator_us = out.app_us.median - out.engine_us.median;
  if (engine && appUs.length === engine.length) out.emulator_paired_us = column(appUs.map((a, i) => a - engine[i]!));
  if (app.length === 1) {
    const c = checkClock(app[0]!, mine.map((r) => r.submitted));
    if (c) out.clock = c;
  }
  return out;
}
