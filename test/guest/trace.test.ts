/**
 * Disk traces (src/guest/trace.ts): records → file → records, and clear errors for malformed files.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { DiskRequestRecord } from "../../src/guest/request-recorder.js";
import { formatTrace, parseTrace, readTrace, traceFromRecords, TraceFormatError, writeTrace } from "../../src/guest/trace.js";

const dir = mkdtempSync(path.join(tmpdir(), "refcow-trace-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HEADER = '{"format":"refcow-trace","version":1,"size":1048576,"clusterSize":65536}';

function rec(op: DiskRequestRecord["op"], submitted: number, offset: number, length: number, phase: string, latencyMs: number, serviceMs?: number): DiskRequestRecord {
  return { op, submitted, offset, length, phase, queuedMs: 0, latencyMs, ...(serviceMs !== undefined ? { serviceMs } : {}) };
}

function parseError(text: string): string {
  try {
    parseTrace(text, "t.trace");
  } catch (e) {
    expect(e).toBeInstanceOf(TraceFormatError);
    return (e as Error).message;
  }
  throw new Error("parsed without error");
}

describe("trace", () => {
  it("round-trips the adapter's records and the host's snapshots through a file", () => {
    const t0 = 1000;
    const records = [
      rec("write", 1000.5, 65536, 4096, "fill", 0.25, 0.1),
      rec("flush", 1002, 0, 0, "fill", 3.5, 3.25),
      rec("write", 1010, 131072, 4096, "post-snapshot", 1.125),
      rec("read", 1011, 0, 512, "post-snapshot", 0.0625, 0.03125),
    ];
    const t = traceFromRecords({ size: 1 << 20, clusterSize: 65536, workload: "rand4k", phases: ["fill", "post-snapshot"] }, records, t0, [
      { at: 1005, name: "s1", phase: "post-snapshot", pauseMs: 20 },
    ]);
    const file = path.join(dir, "a.trace");
    writeTrace(file, t);
    const back = readTrace(file);
    expect(back).toEqual(t);
    expect(back.header).toMatchObject({ format: "refcow-trace", version: 1, size: 1 << 20, clusterSize: 65536, workload: "rand4k" });
    expect(back.events).toEqual([
      { t: 500, op: "w", offset: 65536, length: 4096, phase: "fill", latency: 250, service: 100 },
      { t: 2000, op: "f", offset: 0, length: 0, phase: "fill", latency: 3500, service: 3250 },
      { t: 5000, op: "s", offset: 0, length: 0, phase: "post-snapshot", latency: 20000, name: "s1" },
      { t: 10000, op: "w", offset: 131072, length: 4096, phase: "post-snapshot", latency: 1125 },
      { t: 11000, op: "r", offset: 0, length: 512, phase: "post-snapshot", latency: 62.5, service: 31.25 },
    ]);
  });

  it("round-trips any well-formed trace (property)", () => {
    const event = fc.record({
      dt: fc.integer({ min: 0, max: 10_000 }),
      op: fc.constantFrom("r" as const, "w" as const, "f" as const, "s" as const),
      sector: fc.integer({ min: 0, max: 2047 }),
      sectors: fc.integer({ min: 1, max: 8 }),
      phase: fc.constantFrom("fill", "in-place", "post-snapshot", ""),
      latency: fc.option(fc.integer({ min: 0, max: 1e6 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(event, { maxLength: 40 }), (evs) => {
        let t = 0;
        const events = evs.map((e) => {
          t += e.dt;
          const ranged = e.op === "r" || e.op === "w";
          const sector = Math.min(e.sector, 2048 - e.sectors);
          return {
            t,
            op: e.op,
            offset: ranged ? sector * 512 : 0,
            length: ranged ? e.sectors * 512 : 0,
            phase: e.phase,
            ...(e.latency !== undefined ? { latency: e.latency } : {}),
          };
        });
        const trace = { header: { format: "refcow-trace" as const, version: 1 as const, size: 1 << 20, clusterSize: 512 }, events };
        expect(parseTrace(formatTrace(trace))).toEqual(trace);
      }),
    );
  });

  it("accepts CRLF line ends, blank lines, unknown keys and omitted defaults", () => {
    const t = parseTrace(`${HEADER}\r\n\r\n{"t":0,"op":"f","extra":true}\r\n{"t":1,"op":"w","offset":512,"length":512}\r\n`);
    expect(t.events).toEqual([
      { t: 0, op: "f", offset: 0, length: 0, phase: "" },
      { t: 1, op: "w", offset: 512, length: 512, phase: "" },
    ]);
  });

  it("names the file and line of what is wrong", () => {
    expect(parseError("")).toMatch(/t\.trace: empty file/);
    expect(parseError("hello\n")).toMatch(/t\.trace: line 1: not valid JSON/);
    expect(parseError('{"format":"qcow2"}\n')).toMatch(/line 1: not a refcow trace/);
    expect(parseError('{"format":"refcow-trace","version":2,"size":512,"clusterSize":512}')).toMatch(/line 1: trace version 2 is newer than this reader/);
    expect(parseError('{"format":"refcow-trace","version":1,"size":1000,"clusterSize":512}')).toMatch(/"size" must be a positive multiple of 512/);
    expect(parseError('{"format":"refcow-trace","version":1,"size":1024,"clusterSize":3000}')).toMatch(/"clusterSize" must be a power of two/);
    expect(parseError(`${HEADER}\n[1,2]\n`)).toMatch(/line 2: expected a JSON object/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"x"}\n`)).toMatch(/line 2: "op" must be one of/);
    expect(parseError(`${HEADER}\n{"op":"w","offset":0,"length":512}\n`)).toMatch(/line 2: "t" must be a number/);
    expect(parseError(`${HEADER}\n{"t":5,"op":"f"}\n{"t":4,"op":"f"}\n`)).toMatch(/line 3: "t" goes backwards/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"w","offset":1048064,"length":1024}\n`)).toMatch(/line 2: request \[1048064, \+1024\) is past the end/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"r","offset":0}\n`)).toMatch(/needs a "length" > 0/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"f","offset":512}\n`)).toMatch(/"f" event has no range/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"w","offset":-512,"length":512}\n`)).toMatch(/"offset" must be an integer >= 0/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"w","offset":0,"length":512,"latency":-1}\n`)).toMatch(/"latency" must be a number of µs >= 0/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"w","offset":0,"length":512,"phase":3}\n`)).toMatch(/"phase" must be a string/);
    expect(parseError(`${HEADER}\n{"t":0,"op":"w","offset":0,"length":512}\n{"t":1,"op":"w"\n`)).toMatch(/line 3: not valid JSON/);
  });

  it("reports a missing file clearly", () => {
    expect(() => readTrace(path.join(dir, "nope.trace"))).toThrow(/nope\.trace: cannot read the trace \(no such file\)/);
    const bad = path.join(dir, "bad.trace");
    writeFileSync(bad, "{}\n");
    expect(() => readTrace(bad)).toThrow(new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: line 1: not a refcow trace`));
  });
});
