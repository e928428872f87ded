/**
 * The guest program's own timing of its requests (guest-images/refcow-io.c), as it reports it on the serial
 * console after each run, and the check of the guest's clock against the host's.
 *
 * Wire format: one line per kind of request,
 *
 *   REFCOW-IO <op> <count> <t0> <pairs>
 *
 *   op     write | read | fdatasync
 *   count  requests timed, in issue order
 *   t0     the guest's CLOCK_MONOTONIC at the start of the first request, ns (decimal)
 *   pairs  per request: ns from the previous request's start (0 for the first) and ns of its system call,
 *          each a varint of base-64 digits [0-9A-Za-z._]: 5 value bits per digit, least significant first;
 *          a digit whose index is >= 32 says more digits follow.
 *
 * The program takes its times from the TSC (rdtsc) and converts them to CLOCK_MONOTONIC ns at the rate it
 * learnt against clock_gettime over the run (refcow-io.c), so the times here are CLOCK_MONOTONIC's.
 *
 * Clock check: v86 drives the guest's TSC from the host's performance.now(), and the kernel's
 * CLOCK_MONOTONIC runs on that TSC at the frequency it calibrated. For each request, the guest's start time
 * minus the host's submission time of the same request at the disk adapter is the clocks' offset less the
 * request's way from the system call to the device (a varying few hundred µs in the emulated kernel). The
 * median of that difference over the last quarter of the phase's requests minus its median over the first
 * quarter, over the time between the two, is the guest clock's rate error against the host's: `driftPpm`
 * (positive: the guest clock runs fast). The medians keep the odd slow way (a page fault, the host's
 * scheduler) out of it. The pairing needs the guest's requests and the disk requests to correspond one to
 * one (one IDE command per system call, as O_DIRECT requests of up to max_sectors_kb are); otherwise there
 * is no check. (Medians are src/stats's: nearest rank, the lower middle of an even count.)
 */
import { percentile } from "../stats/latency.js";

export type GuestIoOp = "write" | "read" | "fdatasync";

export interface GuestIoReport {
  op: GuestIoOp;
  /** The guest's CLOCK_MONOTONIC at the start of the first request, ns. */
  t0Ns: number;
  /** Start of each request, ns after t0. */
  startsNs: number[];
  /** Duration of each request's system call, ns. */
  latenciesNs: number[];
}

export const GUEST_IO_LINE = /^REFCOW-IO (write|read|fdatasync) (\d+) (\d+) ([0-9A-Za-z._]*)$/;

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
const VALUE = new Map([...DIGITS].map((c, i) => [c, i]));

/** Decodes a run of varints (see the module comment). */
export function decodeVarints(text: string): number[] {
  const out: number[] = [];
  let v = 0;
  let scale = 1;
  let open = false;
  for (const c of text) {
    const d = VALUE.get(c);
    if (d === undefined) throw new Error(`REFCOW-IO: '${c}' is not a base-64 digit`);
    v += (d & 31) * scale;
    scale *= 32;
    open = d >= 32;
    if (!open) {
      out.push(v);
      v = 0;
      scale = 1;
    }
  }
  if (open) throw new Error("REFCOW-IO: the last value is cut short");
  return out;
}

/** Parses one REFCOW-IO line; undefined for any other line. Throws for a malformed report. */
export function parseGuestIoLine(line: string): GuestIoReport | undefined {
  const m = GUEST_IO_LINE.exec(line.replace(/\r$/, ""));
  if (!m) return undefined;
  const count = Number(m[2]);
  const values = decodeVarints(m[4]!);
  if (values.length !== 2 * count) throw new Error(`REFCOW-IO ${m[1]}: ${count} requests announced, ${values.length / 2} reported`);
  const startsNs: number[] = [];
  const latenciesNs: number[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    at += values[2 * i]!;
    startsNs.push(at);
    latenciesNs.push(values[2 * i + 1]!);
  }
  return { op: m[1] as GuestIoOp, t0Ns: Number(m[3]), startsNs, latenciesNs };
}

/** Every REFCOW-IO report in a command's output, in order. */
export function parseGuestIoReports(output: string): GuestIoReport[] {
  const out: GuestIoReport[] = [];
  for (const line of output.split("\n")) {
    const r = parseGuestIoLine(line);
    if (r) out.push(r);
  }
  return out;
}

export interface ClockCheck {
  /** Guest time between the (median) starts of the first and last quarter of the requests, µs. */
  guestSpanUs: number;
  /** Host time between the submissions of the same requests at the disk adapter, µs. */
  hostSpanUs: number;
  /** guestSpanUs − hostSpanUs. */
  driftUs: number;
  /** The guest clock's rate error against the host's, parts per million. */
  driftPpm: number;
}

/**
 * Compares the guest's clock with the host's over the requests of `report` (see the module comment);
 * `hostSubmitMs` are the adapter's submission times of the same requests, in order. Undefined when the
 * counts differ or there are fewer than 8 requests.
 */
export function checkClock(report: GuestIoReport, hostSubmitMs: readonly number[]): ClockCheck | undefined {
  const n = report.startsNs.length;
  if (n < 8 || hostSubmitMs.length !== n) return undefined;
  const q = Math.floor(n / 4);
  const first = Array.from({ length: q }, (_, i) => i);
  const last = Array.from({ length: q }, (_, i) => n - q + i);
  const guestUs = (i: number) => report.startsNs[i]! / 1000;
  const hostUs = (i: number) => hostSubmitMs[i]! * 1000;
  const median = (xs: number[]) => percentile(xs, 50);
  const guestSpanUs = median(last.map(guestUs)) - median(first.map(guestUs));
  const hostSpanUs = median(last.map(hostUs)) - median(first.map(hostUs));
  if (hostSpanUs <= 0) return undefined;
  const offset = (ids: number[]) => median(ids.map((i) => guestUs(i) - hostUs(i)));
  const driftUs = offset(last) - offset(first);
  return { guestSpanUs, hostSpanUs, driftUs, driftPpm: (driftUs / hostSpanUs) * 1e6 };
}

/** The program's requests per second of guest time, from its first submission to its last completion. */
export function guestIops(r: GuestIoReport): number | undefined {
  let end = 0;
  for (let i = 0; i < r.startsNs.length; i++) end = Math.max(end, r.startsNs[i]! + r.latenciesNs[i]!);
  return end > 0 ? r.startsNs.length / (end / 1e9) : undefined;
}
