/**
 * The report's charts: vega-lite specifications built from result rows, compiled to vega and rendered to
 * SVG strings in Node (no canvas, no browser), so report.html holds them inline and opens offline.
 *
 * Each builder returns undefined when the rows hold nothing for that chart (a run with --no-ops has no
 * snapshot-cost chart), so the report shows only what was measured.
 */
import { SCHEME_NAMES } from "../schemes/index.js";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { COST_GROUPS, groupTimes, hostTotals } from "./cost-groups.js";
import { type GuestResult, PHASES, type ResultRow } from "./results.js";
import { rowName } from "./report-tables.js";
import { guestSeen } from "./guest-results.js";
import { schemeLabel } from "./scheme-label.js";

export interface Chart {
  id: string;
  title: string;
  /** One sentence under the chart: what is plotted and how it was measured. */
  caption: string;
  spec: TopLevelSpec;
}

const SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";
/** refcow's schemes in the registry's order (eager with QEMU's flush order beside eager), then QEMU's configurations. */
const SCHEME_ORDER = [...SCHEME_NAMES.flatMap((n) => (n === "eager" ? [n, "eager --order qemu"] : [n])), "std", "lazy_refcounts", "none"];
/** A refcow row's scheme with its allocation policy and flush order when they are not the default. */
const refcowLabel = (r: ResultRow) => `${schemeLabel(r)}${r.order === "qemu" ? " --order qemu" : ""}`;
const FONT = { config: { font: "Helvetica, Arial, sans-serif", view: { stroke: "#ddd" }, axis: { labelFontSize: 11, titleFontSize: 12 }, legend: { labelLimit: 320 } } };
const CACHE_ORDER = ["writethrough", "writeback", "unsafe"];
/** Facet by cache mode, in reading order. */
const BY_CACHE = { field: "cache", type: "nominal", sort: CACHE_ORDER, title: null, header: { labelFontSize: 13, labelFontWeight: "bold" } } as const;

/** A vega-lite spec over `values` with the report's fonts. */
function chartSpec(values: Array<Record<string, unknown>>, rest: Record<string, unknown>): TopLevelSpec {
  return { $schema: SCHEMA, ...FONT, data: { values }, ...rest } as TopLevelSpec;
}

/** A latency CDF: step lines coloured by `series`, dashed by phase, one panel per cache mode. */
function cdfSpec(values: Array<Record<string, unknown>>, series: string, seriesTitle: string, sort: string[]): TopLevelSpec {
  return chartSpec(values, {
    mark: { type: "line", interpolate: "step-after", strokeWidth: 1.6 },
    encoding: {
      column: BY_CACHE,
      x: { field: "us", type: "quantitative", scale: { type: "log" }, title: "latency (µs, log scale)" },
      y: { field: "p", type: "quantitative", title: "fraction of writes", axis: { format: "%" } },
      color: { field: series, type: "nominal", sort, title: seriesTitle },
      strokeDash: { field: "phase", type: "nominal", sort: ["in-place", "post-snapshot"], title: "phase" },
      detail: { field: "phase" },
    },
    width: 380,
    height: 250,
  });
}

/** Human name of a series: who (refcow's scheme, QEMU's flavour, the raw file) and through which transport. */
const seriesName = rowName;

const TRANSPORT_ORDER = ["ring", "in-process", "nbd", "direct"];
/** Series sorted by transport, then refcow's schemes, QEMU and the raw file. */
function seriesOrder(rows: ResultRow[]): string[] {
  const rank = (r: ResultRow) => {
    const t = TRANSPORT_ORDER.indexOf(r.transport ?? "ring");
    const who = r.source === "raw" ? 99 : SCHEME_ORDER.indexOf(r.scheme) + (r.order ? 0.5 : 0);
    return t * 1000 + who;
  };
  return [...new Map([...rows].sort((a, b) => rank(a) - rank(b)).map((r) => [seriesName(r), 0])).keys()];
}

const writeRows = (rows: ResultRow[]) => rows.filter((r) => r.phase === "in-place" || r.phase === "post-snapshot");
/** Write rows including the allocation phase after a snapshot delete. */
const allWriteRows = (rows: ResultRow[]) => rows.filter((r) => (PHASES as readonly string[]).includes(r.phase));
const PHASE_COLORS = { scale: { domain: [...PHASES], range: ["#8fb8de", "#d1495b", "#edae49"] } };

/** Per-write cost (phase time / writes, flushes included) of every source, in-place vs post-snapshot. */
function perWriteChart(rows: ResultRow[]): Chart | undefined {
  const values = allWriteRows(rows)
    .filter((r) => r.workload === "rand4k-per-cluster" && r.transport)
    .map((r) => ({ series: seriesName(r), cache: r.cache, phase: r.phase, us: r.amortized_us, min: r.amortized_us_min ?? r.amortized_us, max: r.amortized_us_max ?? r.amortized_us }));
  if (!values.length) return undefined;
  return {
    id: "per-write",
    title: "Cost of a 4 KiB write: in place, right after a snapshot, and allocating after the snapshot is deleted",
    caption:
      "Phase wall time divided by the number of writes (flush waits included), median over rounds; every source driven by the same load generator with the same requests (one 4 KiB write per 64 KiB cluster, random cluster order), the transport in brackets: ring (refcow's worker thread), nbd (a Unix socket to refcow nbd or qemu-nbd), direct (pwrite/fdatasync). Compare bars of the same transport. after-delete: the snapshot deleted, then writes to clusters never written, each one allocating while the delete left free clusters inside the file. The raw file's phases are the same writes on its preallocated bytes.",
    spec: chartSpec(values, {
      mark: { type: "bar", tooltip: true },
      encoding: {
        row: BY_CACHE,
        y: { field: "series", type: "nominal", sort: seriesOrder(rows), title: null, axis: { labelLimit: 260 } },
        yOffset: { field: "phase", type: "nominal", sort: [...PHASES] },
        x: { field: "us", type: "quantitative", title: "µs per write", scale: { type: "sqrt" } },
        color: { field: "phase", type: "nominal", sort: [...PHASES], ...PHASE_COLORS },
      },
      resolve: { axis: { x: "independent" } },
      width: 520,
    }),
  };
}

/** Latency CDFs: one panel per cache mode, a line per series and phase. */
function cdfChart(rows: ResultRow[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const r of writeRows(rows)) {
    if (!r.cdf_us?.length || r.workload !== "rand4k-per-cluster" || !r.transport) continue;
    r.cdf_us.forEach((us, p) => values.push({ series: seriesName(r), cache: r.cache, phase: r.phase, us: Math.max(us, 0.1), p: p / 100 }));
  }
  if (!values.length) return undefined;
  return {
    id: "cdf",
    title: "Latency distribution of each write, in place vs after a snapshot",
    caption:
      "Cumulative distribution of the submission→completion time of every 4 KiB write (rand4k-per-cluster, all rounds pooled), timed by the same load generator for every source, the transport in brackets. Solid: in place; dashed: right after an internal snapshot.",
    spec: cdfSpec(values, "series", "source (transport)", seriesOrder(rows)),
  };
}

/** Stacked bars: where the time of one write goes, per scheme, by cost group. */
function breakdownChart(rows: ResultRow[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const r of allWriteRows(rows)) {
    if (r.source !== "refcow" || !r.breakdown || r.workload !== "rand4k-per-cluster") continue;
    const g = groupTimes(r.breakdown);
    for (const group of COST_GROUPS) if (g[group] > 0) values.push({ scheme: refcowLabel(r), cache: r.cache, phase: r.phase, group, us: g[group] });
  }
  if (!values.length) return undefined;
  return {
    id: "breakdown",
    title: "Where the time of a write goes",
    caption:
      "I/O time per guest write by purpose, from refcow's accounting wrapper (every host read, write, flush and truncate is tagged with what it was for). Flush time is taken out of each purpose and shown as 'flushes'. CPU time spent in the engine outside I/O is not in these bars.",
    spec: chartSpec(values, {
      mark: { type: "bar", tooltip: true },
      encoding: {
        column: BY_CACHE,
        x: { field: "scheme", type: "nominal", sort: SCHEME_ORDER, title: "scheme — three bars each, left to right: in place, after the snapshot, allocating after its delete", axis: { labelAngle: 0 } },
        xOffset: { field: "phase", type: "nominal", sort: [...PHASES] },
        y: { field: "us", type: "quantitative", title: "µs of I/O per write", stack: "zero" },
        color: { field: "group", type: "nominal", sort: [...COST_GROUPS], title: "cost", scale: { scheme: "tableau10" } },
        order: { field: "group", sort: "ascending" },
      },
      resolve: { scale: { y: "independent" } },
      width: 420,
      height: 260,
    }),
  };
}

/** Host bytes and flushes per guest write. */
function hostIoChart(rows: ResultRow[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const r of allWriteRows(rows)) {
    if (r.source !== "refcow" || !r.breakdown || r.workload !== "rand4k-per-cluster") continue;
    const t = hostTotals(r.breakdown);
    values.push({ scheme: refcowLabel(r), cache: r.cache, phase: r.phase, measure: "host KiB per guest write", value: t.bytes / 1024 });
    values.push({ scheme: refcowLabel(r), cache: r.cache, phase: r.phase, measure: "host flushes per guest write", value: t.flushes });
  }
  if (!values.length) return undefined;
  return {
    id: "host-io",
    title: "Host I/O caused by one 4 KiB guest write",
    caption: "Bytes read and written on the host file, and flushes (fdatasync), per guest write; writeback flushes once every 64 writes, as a guest issuing periodic flushes would.",
    spec: chartSpec(values, {
      mark: { type: "bar", tooltip: true },
      encoding: {
        row: { field: "measure", type: "nominal", title: null, header: { labelFontSize: 12, labelFontWeight: "bold" } },
        column: BY_CACHE,
        x: { field: "scheme", type: "nominal", sort: SCHEME_ORDER, title: null, axis: { labelAngle: 0 } },
        xOffset: { field: "phase", type: "nominal", sort: [...PHASES] },
        y: { field: "value", type: "quantitative", title: null },
        color: { field: "phase", type: "nominal", sort: [...PHASES], ...PHASE_COLORS },
      },
      resolve: { scale: { y: "independent" } },
      width: 300,
      height: 160,
    }),
  };
}

/** Snapshot create/apply/delete, open, close and recovery time against allocated size, per scheme. */
function snapshotOpsChart(rows: ResultRow[]): Chart | undefined {
  const values = rows
    .filter((r) => r.workload === "snapshot-ops" && r.size_bytes)
    .map((r) => ({ scheme: schemeLabel(r), op: r.phase, mib: r.size_bytes! / 2 ** 20, ms: Math.max(r.median_us / 1000, 0.001) }));
  if (!values.length) return undefined;
  return {
    id: "snapshot-ops",
    title: "Snapshot operations against allocated data",
    caption:
      "Median time of each operation on an image with every cluster allocated (64 KiB clusters), in-process, writeback. 'recovery' opens the image a killed process left (dirty bit set, or journal not empty) and repairs it.",
    spec: chartSpec(values, {
      mark: { type: "line", point: true, tooltip: true },
      encoding: {
        facet: { field: "op", type: "nominal", columns: 3, title: null, sort: ["snapshot-create", "snapshot-apply", "snapshot-delete", "open", "close", "recovery"] },
        x: { field: "mib", type: "quantitative", scale: { type: "log", nice: false }, title: "allocated MiB (log)" },
        y: { field: "ms", type: "quantitative", scale: { type: "log" }, title: "ms (log)" },
        color: { field: "scheme", type: "nominal", sort: SCHEME_ORDER },
      },
      width: 200,
      height: 150,
    }),
  };
}

/** The guest's own writes, per phase and scheme: median and p99 of submit→complete at the IDE disk. */
function guestPhaseChart(guest: GuestResult[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const g of guest) {
    for (const p of g.phases) {
      if (!p.writes) continue;
      const seen = guestSeen(p);
      values.push({ scheme: g.scheme, cache: g.cache, phase: p.name, stat: "median", us: Math.max(seen.median, 0.1) });
      values.push({ scheme: g.scheme, cache: g.cache, phase: p.name, stat: "p99", us: Math.max(seen.p99, 0.1) });
      if (p.engine_write_median_us !== undefined) values.push({ scheme: g.scheme, cache: g.cache, phase: p.name, stat: "engine median", us: Math.max(p.engine_write_median_us, 0.1) });
    }
  }
  if (!values.length) return undefined;
  const phases = [...new Set(guest.flatMap((g) => g.phases.map((p) => p.name)))];
  return {
    id: "guest-phases",
    title: "The guest's writes, per phase",
    caption:
      "Time of each 4 KiB write as the guest program saw it (its own clock around the system call; where it did not time itself, submit→complete at the v86 disk adapter), by workload phase, one mark per run: median (dot) and p99 (tick); the hollow circle is the median time the engine itself spent on those writes, without the emulator, the ring and the event loop. Guest time is host time, so these move with host load.",
    spec: chartSpec(values, {
      facet: {
        row: BY_CACHE,
        column: { field: "phase", type: "nominal", sort: phases, title: null, header: { labelFontSize: 12 } },
      },
      spec: {
        width: 170,
        height: 180,
        encoding: {
          x: { field: "scheme", type: "nominal", sort: SCHEME_ORDER, title: null, axis: { labelAngle: -30 } },
          y: { field: "us", type: "quantitative", scale: { type: "log" }, title: "µs (log)" },
          color: { field: "scheme", type: "nominal", sort: SCHEME_ORDER, legend: null },
        },
        layer: [
          { mark: { type: "point", filled: true, size: 70, tooltip: true }, transform: [{ filter: "datum.stat === 'median'" }] },
          { mark: { type: "tick", thickness: 2, tooltip: true }, transform: [{ filter: "datum.stat === 'p99'" }] },
          { mark: { type: "point", filled: false, size: 70, tooltip: true }, transform: [{ filter: "datum.stat === 'engine median'" }] },
        ],
      },
    }),
  };
}

/** The guest's write latency distribution, in place vs after the snapshot, per scheme. */
function guestCdfChart(guest: GuestResult[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const g of guest) {
    for (const p of g.phases) {
      if (!p.write_cdf_us?.length || (p.name !== "in-place" && p.name !== "post-snapshot")) continue;
      p.write_cdf_us.forEach((us, i) => values.push({ scheme: g.scheme, cache: g.cache, phase: p.name, us: Math.max(us, 0.1), p: i / 100 }));
    }
  }
  if (!values.length) return undefined;
  return {
    id: "guest-cdf",
    title: "The guest's write latency, in place vs after the snapshot",
    caption: "Cumulative distribution of the submit→complete time of the guest's writes in the in-place and post-snapshot phases, per scheme (solid: in place; dashed: after the snapshot).",
    spec: cdfSpec(values, "scheme", "scheme", SCHEME_ORDER),
  };
}

/** VM-state write vs disk snapshot, from the guest runs with --savevm. */
function vmStateChart(guest: GuestResult[]): Chart | undefined {
  const values: Array<Record<string, unknown>> = [];
  for (const g of guest) {
    const s = g.snapshot;
    if (!s) continue;
    const parts: Array<[string, number | undefined]> = [
      ["drain + flush", (s.drainMs ?? 0) + (s.flushMs ?? 0)],
      ["disk snapshot", s.diskSnapshotMs],
      ["VM state: save_state()", s.vmStateSerializeMs],
      ["VM state: write", s.vmStateWriteMs],
    ];
    for (const [part, ms] of parts) if (ms !== undefined && ms > 0) values.push({ scheme: g.scheme, cache: g.cache, part, ms });
  }
  if (!values.length) return undefined;
  return {
    id: "vm-state",
    title: "Taking a snapshot of the running guest: VM state vs disk",
    caption: "Host time of each step of a snapshot taken with the emulator paused: draining the disk queue and flushing, the qcow2 internal snapshot, serialising v86's state, and writing it into the snapshot's VM-state area.",
    spec: chartSpec(values, {
      mark: { type: "bar", tooltip: true },
      encoding: {
        row: BY_CACHE,
        y: { field: "scheme", type: "nominal", sort: SCHEME_ORDER, title: null },
        x: { field: "ms", type: "quantitative", title: "ms", stack: "zero" },
        color: { field: "part", type: "nominal", sort: ["drain + flush", "disk snapshot", "VM state: save_state()", "VM state: write"], title: "step" },
      },
      width: 480,
    }),
  };
}

export function buildCharts(rows: ResultRow[], guest: GuestResult[] = []): Chart[] {
  const charts = [perWriteChart(rows), cdfChart(rows), breakdownChart(rows), hostIoChart(rows), snapshotOpsChart(rows), guestPhaseChart(guest), guestCdfChart(guest), vmStateChart(guest)];
  return charts.filter((c): c is Chart => c !== undefined);
}

/** Renders a vega-lite spec to an SVG string (server-side, no DOM). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
