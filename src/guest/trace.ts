/**
 * refcow disk traces: every request a guest made to its disk, to be replayed against any scheme without the
 * emulator (src/bench).
 *
 * Format (version 1): UTF-8 text, newline-delimited JSON (one JSON object per line, "\n" or "\r\n").
 *
 *   line 1, the header:
 *     {"format":"refcow-trace","version":1,"size":268435456,"clusterSize":65536, ...}
 *       format       "refcow-trace" (required)
 *       version      1 (required; a reader refuses versions it does not know)
 *       size         virtual disk size in bytes, a positive multiple of 512 (required)
 *       clusterSize  cluster size of the image the trace was taken on, a power of two in [512, 2 MiB]
 *                    (required)
 *       other keys   descriptive and optional: created (ISO date), workload, scheme, cache, phases (phase
 *                    names in order), guest (kernel release), ... Readers ignore keys they do not know.
 *
 *   every further non-empty line, one event, in submission order (`t` never decreases):
 *     {"t":1234.5,"op":"w","offset":1048576,"length":4096,"phase":"post-snapshot","latency":812.3,"service":96.1}
 *       t        µs from the start of the trace to the request's submission (number >= 0; required)
 *       op       "r" read, "w" write, "f" flush, "s" snapshot taken by the host (required)
 *       offset   byte offset (integer >= 0; 0 for "f" and "s"; default 0)
 *       length   byte count (integer > 0 for "r"/"w", inside the disk; 0 for "f" and "s"; default 0)
 *       phase    the workload phase the request belongs to (string; default "")
 *       latency  µs from submission to completion as the guest saw it (number >= 0; optional). For "s":
 *                how long the guest was paused for the snapshot.
 *       service  µs the engine itself spent on the request (optional)
 *       depth    requests outstanding at the disk device when this one was submitted, itself included
 *                (integer >= 1; optional): 1 for an IDE disk served one command at a time, up to the
 *                guest's queue depth for virtio-blk
 *       name     snapshot name ("s" only; optional)
 *     Other keys are ignored. Requests are listed in submission order; an IDE disk serves them one at a
 *     time, a virtio-blk disk many at once (see depth), so a replay issues them in order; write data is not recorded (replay any bytes).
 *
 * `readTrace` / `parseTrace` check all of this and fail with `TraceFormatError` naming the file and line.
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { DiskRequestRecord } from "./request-recorder.js";

export const TRACE_FORMAT = "refcow-trace";
export const TRACE_VERSION = 1;

export type TraceOp = "r" | "w" | "f" | "s";

/** The header's fields other than `format` and `version`. */
export interface TraceHeaderFields {
  size: number;
  clusterSize: number;
  created?: string;
  workload?: string;
  scheme?: string;
  cache?: string;
  phases?: string[];
  [key: string]: unknown;
}

export interface TraceHeader extends TraceHeaderFields {
  format: typeof TRACE_FORMAT;
  version: typeof TRACE_VERSION;
}

export interface TraceEvent {
  /** µs since the start of the trace, at submission. */
  t: number;
  op: TraceOp;
  offset: number;
  length: number;
  phase: string;
  /** µs, submission to completion (for "s": the guest's pause). */
  latency?: number;
  /** µs the engine spent on the request. */
  service?: number;
  /** Requests outstanding at the disk device when this one was submitted, itself included. */
  depth?: number;
  /** Snapshot name (op "s"). */
  name?: string;
}

export interface Trace {
  header: TraceHeader;
  events: TraceEvent[];
}

export class TraceFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TraceFormatError";
  }
}

const OPS: Record<string, TraceOp> = { r: "r", w: "w", f: "f", s: "s" };
const OP_OF: Record<DiskRequestRecord["op"], TraceOp> = { read: "r", write: "w", flush: "f" };

/** A host-side snapshot, as recorded in a trace. */
export interface TraceSnapshotEvent {
  /** performance.now() when the guest was paused, in ms. */
  at: number;
  name: string;
  phase: string;
  /** How long the guest was paused, in ms. */
  pauseMs: number;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Builds a trace from the request recorder's records (and the host's snapshots), with `t0` (performance.now()
 * ms) as time zero. Events come out in submission order.
 */
export function traceFromRecords(
  header: TraceHeaderFields,
  records: readonly DiskRequestRecord[],
  t0: number,
  snapshots: readonly TraceSnapshotEvent[] = [],
): Trace {
  const events: TraceEvent[] = records.map((r) => {
    const e: TraceEvent = {
      t: round3(Math.max(0, (r.submitted - t0) * 1000)),
      op: OP_OF[r.op],
      offset: r.offset,
      length: r.length,
      phase: r.phase,
      latency: round3(r.latencyMs * 1000),
    };
    if (r.serviceMs !== undefined) e.service = round3(r.serviceMs * 1000);
    if (r.depth !== undefined) e.depth = r.depth;
    return e;
  });
  for (const s of snapshots) {
    events.push({ t: round3(Math.max(0, (s.at - t0) * 1000)), op: "s", offset: 0, length: 0, phase: s.phase, latency: round3(s.pauseMs * 1000), name: s.name });
  }
  // Stable: a snapshot taken at the same instant as a request's submission stays after it.
  events.sort((a, b) => a.t - b.t);
  return { header: { format: TRACE_FORMAT, version: TRACE_VERSION, ...header }, events };
}

export function formatTrace(trace: Trace): string {
  const lines = [JSON.stringify(trace.header)];
  for (const e of trace.events) {
    const o: Record<string, unknown> = { t: e.t, op: e.op, offset: e.offset, length: e.length, phase: e.phase };
    if (e.latency !== undefined) o.latency = e.latency;
    if (e.service !== undefined) o.service = e.service;
    if (e.depth !== undefined) o.depth = e.depth;
    if (e.name !== undefined) o.name = e.name;
    lines.push(JSON.stringify(o));
  }
  return lines.join("\n") + "\n";
}

/** Writes `trace` to `file` (see the format above). */
export function writeTrace(file: string, trace: Trace): void {
  writeFileSync(file, formatTrace(trace));
}

/** Reads and checks a trace file; throws TraceFormatError (or the file system's error when unreadable). */
export function readTrace(file: string): Trace {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TraceFormatError(`${file}: cannot read the trace (${code === "ENOENT" ? "no such file" : (e as Error).message})`);
  }
  return parseTrace(text, file);
}

const isInt = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x);
const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);

/** Parses and checks the text of a trace; `source` names it in error messages. */
export function parseTrace(text: string, source = "trace"): Trace {
  const fail = (line: number, msg: string): never => {
    throw new TraceFormatError(`${source}: line ${line}: ${msg}`);
  };
  const lines = text.split("\n");
  if (text.length === 0 || lines[0]!.trim() === "") throw new TraceFormatError(`${source}: empty file; a refcow trace starts with its header line`);
  const parseLine = (i: number): Record<string, unknown> => {
    let v: unknown;
    try {
      v = JSON.parse(lines[i]!);
    } catch (e) {
      return fail(i + 1, `not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) return fail(i + 1, "expected a JSON object");
    return v as Record<string, unknown>;
  };

  const h = parseLine(0);
  if (h.format !== TRACE_FORMAT) {
    fail(1, `not a refcow trace: the header's "format" is ${JSON.stringify(h.format)}, expected "${TRACE_FORMAT}"`);
  }
  if (h.version !== TRACE_VERSION) {
    fail(1, isInt(h.version) && h.version > TRACE_VERSION
      ? `trace version ${h.version} is newer than this reader (version ${TRACE_VERSION})`
      : `unsupported trace version ${JSON.stringify(h.version)} (expected ${TRACE_VERSION})`);
  }
  if (!isInt(h.size) || h.size <= 0 || h.size % 512 !== 0) fail(1, `"size" must be a positive multiple of 512, got ${JSON.stringify(h.size)}`);
  const cs = h.clusterSize;
  if (!isInt(cs) || cs < 512 || cs > 2 << 20 || (cs & (cs - 1)) !== 0) {
    fail(1, `"clusterSize" must be a power of two from 512 to 2 MiB, got ${JSON.stringify(cs)}`);
  }
  const header = h as TraceHeader;
  const size = header.size;

  const events: TraceEvent[] = [];
  let lastT = 0;
  for (let i = 1; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw.trim() === "") continue;
    const o = parseLine(i);
    const n = i + 1;
    const op = typeof o.op === "string" ? OPS[o.op] : undefined;
    if (!op) fail(n, `"op" must be one of "r", "w", "f", "s", got ${JSON.stringify(o.op)}`);
    if (!isNum(o.t) || o.t < 0) fail(n, `"t" must be a number of µs >= 0, got ${JSON.stringify(o.t)}`);
    const t = o.t as number;
    if (t < lastT) fail(n, `"t" goes backwards (${t} after ${lastT}); events must be in submission order`);
    lastT = t;
    const offset = o.offset === undefined ? 0 : o.offset;
    const length = o.length === undefined ? 0 : o.length;
    if (!isInt(offset) || offset < 0) fail(n, `"offset" must be an integer >= 0, got ${JSON.stringify(o.offset)}`);
    if (!isInt(length) || length < 0) fail(n, `"length" must be an integer >= 0, got ${JSON.stringify(o.length)}`);
    const off = offset as number;
    const len = length as number;
    if (op === "r" || op === "w") {
      if (len === 0) fail(n, `a "${op}" event needs a "length" > 0`);
      if (off + len > size) fail(n, `request [${off}, +${len}) is past the end of the ${size}-byte disk`);
    } else if (off !== 0 || len !== 0) {
      fail(n, `a "${op}" event has no range ("offset" and "length" must be 0 or absent)`);
    }
    const phase = o.phase === undefined ? "" : o.phase;
    if (typeof phase !== "string") fail(n, `"phase" must be a string, got ${JSON.stringify(o.phase)}`);
    const e: TraceEvent = { t, op: op!, offset: off, length: len, phase: phase as string };
    for (const k of ["latency", "service"] as const) {
      const v = o[k];
      if (v === undefined) continue;
      if (!isNum(v) || v < 0) fail(n, `"${k}" must be a number of µs >= 0, got ${JSON.stringify(v)}`);
      e[k] = v as number;
    }
    if (o.depth !== undefined) {
      if (!Number.isInteger(o.depth) || (o.depth as number) < 1) fail(n, `"depth" must be an integer >= 1, got ${JSON.stringify(o.depth)}`);
      e.depth = o.depth as number;
    }
    if (o.name !== undefined) {
      if (typeof o.name !== "string") fail(n, `"name" must be a string, got ${JSON.stringify(o.name)}`);
      e.name = o.name as string;
    }
    events.push(e);
  }
  return { header, events };
}
