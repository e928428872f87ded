/**
 * The guest section of the report: what the guest program saw of its writes, per scheme, cache mode and
 * phase, over the repetitions of each cell — the four clocks (app: the guest's own system call; device: the
 * v86 disk adapter; ring: the worker ring's client; engine: the worker), the emulator's share (app − engine),
 * the post-snapshot / in-place ratio beside the host benchmark's for the same scheme and cache mode, and the
 * ranking of the schemes after the snapshot in the guest and on the host.
 *
 * Every figure over repetitions is the median of the per-run figures with their min–max (src/stats/latency.ts
 * `spread`); every ratio is computed within each run (the guest's) or round (the host's), then the median with
 * min–max (`ratioByRounds`). Schemes are ranked by the statistic the whole report ranks by: amortized cost per
 * write (phase wall time ÷ writes, flush waits included). The host figure beside a guest one is always the
 * host twin's row through the worker ring (what the guest's disk goes through), refcow's own flush order,
 * first-fit: when that row is missing it is shown missing, never another row in its place. A run that failed
 * is listed with its reason, and a scheme with no run left is named and the schemes are not ranked.
 *
 * The models here are tables of strings; report-html.ts and report.ts render them.
 */
import { ratioByRounds, spread, type Spread } from "../stats/latency.js";
import { guestAmortized, guestSeen } from "./guest-results.js";
import type { FailedSource, GuestLatencyColumn, GuestPhase, GuestResult } from "./results.js";
import type { ResultRow } from "./results.js";
import { formatRatio, ratioOf } from "./ratios.js";

/** The host workload whose ratio the guest's rand4k is compared with (one 4 KiB write per cluster). */
export const HOST_TWIN_WORKLOAD = "rand4k-per-cluster";
/** How far the guest's post-snapshot / in-place ratio may be from the host's and still count as the same. */
export const RATIO_TOLERANCE = 0.25;

export interface TableModel {
  head: string[];
  body: string[][];
  /** Columns from this one on are numbers. */
  numericFrom: number;
}

const n1 = (x: number) => (!Number.isFinite(x) ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const range = (s: Spread | undefined) => (!s || s.runs === 0 ? "–" : s.runs === 1 ? n1(s.median) : `${n1(s.median)} (${n1(s.min)}–${n1(s.max)})`);

interface Cell {
  scheme: string;
  cache: string;
  workload: string;
  runs: GuestResult[];
}

function cells(guest: GuestResult[]): Cell[] {
  const out = new Map<string, Cell>();
  for (const g of guest) {
    const key = `${g.cache}\u0000${g.scheme}\u0000${g.workload}`;
    let c = out.get(key);
    if (!c) out.set(key, (c = { scheme: g.scheme, cache: String(g.cache), workload: g.workload, runs: [] }));
    c.runs.push(g);
  }
  return [...out.values()];
}

function phaseRuns(c: Cell, phase: string): GuestPhase[] {
  return c.runs.map((g) => g.phases.find((p) => p.name === phase)).filter((p): p is GuestPhase => p !== undefined && p.writes > 0);
}

function columnSpread(ps: GuestPhase[], pick: (p: GuestPhase) => GuestLatencyColumn | undefined, stat: "median" | "p99"): Spread | undefined {
  const v = ps.map(pick).filter((c): c is GuestLatencyColumn => c !== undefined && c.count > 0).map((c) => c[stat]);
  return v.length ? spread(v) : undefined;
}

/** Per run, post-snapshot ÷ in-place of the guest's amortized cost per write, then over runs. */
function guestRatio(c: Cell): Spread | undefined {
  const post: Array<number | undefined> = [];
  const inPlace: Array<number | undefined> = [];
  for (const g of c.runs) {
    const a = g.phases.find((p) => p.name === "in-place");
    const b = g.phases.find((p) => p.name === "post-snapshot");
    post.push(b ? guestAmortized(b) : undefined);
    inPlace.push(a ? guestAmortized(a) : undefined);
  }
  const s = ratioByRounds(post, inPlace);
  return s.runs ? s : undefined;
}

/** The guest's host twin: the same scheme's row through the ring, refcow's flush order, first-fit; or undefined. */
export function hostRow(rows: ResultRow[], scheme: string, cache: string, phase: string): ResultRow | undefined {
  return rows.find((r) => r.source === "refcow" && r.workload === HOST_TWIN_WORKLOAD && r.transport === "ring" && !r.order && r.scheme === scheme && r.cache === cache && r.phase === phase && (r.alloc ?? "first-fit") === "first-fit");
}

function hostRatio(rows: ResultRow[], scheme: string, cache: string): Spread | undefined {
  const b = hostRow(rows, scheme, cache, "post-snapshot");
  return b ? ratioOf(rows, b, "vs in-place", "amortized_us") : undefined;
}

/** The guest's amortized cost per write over the runs of a cell's phase (runs without a wall time left out). */
function amortizedSpread(ps: GuestPhase[]): Spread | undefined {
  const v = ps.map(guestAmortized).filter((x): x is number => x !== undefined);
  return v.length ? spread(v) : undefined;
}

/** The table of the four clocks, per scheme, cache mode and phase, with ranges over the repetitions. */
export function guestClockTable(guest: GuestResult[]): TableModel {
  const body: string[][] = [];
  for (const c of cells(guest)) {
    const phases = [...new Set(c.runs.flatMap((g) => g.phases.map((p) => p.name)))];
    for (const phase of phases) {
      const ps = phaseRuns(c, phase);
      if (!ps.length) continue;
      const seen = spread(ps.map((p) => guestSeen(p).median));
      const share = ps.filter((p) => p.emulator_us !== undefined).map((p) => p.emulator_us!);
      const load = c.runs.map((g) => g.loadAverage?.[0]).filter((x): x is number => x !== undefined);
      body.push([
        c.scheme,
        c.cache,
        phase,
        String(ps.length),
        ps.some((p) => p.app_us?.count) ? range(columnSpread(ps, (p) => p.app_us, "median")) : `${range(seen)} (device)`,
        range(columnSpread(ps, (p) => p.app_us, "p99")),
        range(amortizedSpread(ps)),
        range(columnSpread(ps, (p) => p.device_us ?? { count: p.writes, median: p.write_median_us, p90: 0, p99: p.write_p99_us, max: 0 }, "median")),
        range(columnSpread(ps, (p) => p.ring_us, "median")),
        range(columnSpread(ps, (p) => p.engine_us ?? (p.engine_write_median_us !== undefined ? { count: p.writes, median: p.engine_write_median_us, p90: 0, p99: 0, max: 0 } : undefined), "median")),
        share.length ? range(spread(share)) : "–",
        load.length ? `${Math.min(...load).toFixed(1)}–${Math.max(...load).toFixed(1)}` : "–",
      ]);
    }
  }
  return {
    head: ["scheme", "cache", "phase", "runs", "app median µs", "app p99 µs", "amortized µs/write (wall ÷ writes)", "device median µs", "ring median µs", "engine median µs", "app − engine µs", "load (1 min)"],
    body,
    numericFrom: 3,
  };
}

/** Post-snapshot ÷ in-place as the guest saw it beside the host benchmark's, per scheme and cache mode (amortized). */
export function guestRatioTable(guest: GuestResult[], rows: ResultRow[]): TableModel {
  const body: string[][] = [];
  for (const c of cells(guest)) {
    const g = guestRatio(c);
    if (!g) continue;
    const twin = hostRow(rows, c.scheme, c.cache, "post-snapshot");
    const h = hostRatio(rows, c.scheme, c.cache);
    const off = h ? g.median / h.median - 1 : undefined;
    body.push([
      c.scheme,
      c.cache,
      formatRatio(g),
      h ? formatRatio(h) : twin ? "no in-place row" : "missing (no ring row)",
      off !== undefined ? `${off >= 0 ? "+" : ""}${(off * 100).toFixed(0)}%` : "–",
      off !== undefined ? (Math.abs(off) <= RATIO_TOLERANCE ? "yes" : "no") : "–",
    ]);
  }
  return {
    head: ["scheme", "cache", "guest post ÷ in-place (amortized, per run: median (min–max))", "host post ÷ in-place (ring, amortized, per round: median (min–max))", "guest vs host (of the two medians)", `within ${RATIO_TOLERANCE * 100}%`],
    body,
    numericFrom: 2,
  };
}

/** The guest runs that failed, one line each with the reason. */
export function guestFailures(failed: readonly FailedSource[]): string[] {
  return failed.filter((f) => f.part === "guest").map((f) => `${f.name} ${f.cache ?? ""}${f.round !== undefined ? ` run ${f.round}` : ""} failed: ${f.reason}`);
}

/**
 * Schemes after the snapshot, cheapest first by amortized cost per write, in the guest and on the host (ring),
 * per cache mode; where they differ, and whether the guest's ranges overlap. A scheme with no guest run left
 * (every run failed) or without a wall time refuses the ranking, naming it.
 */
export function guestRanking(guest: GuestResult[], rows: ResultRow[], failed: readonly FailedSource[] = []): string[] {
  const out: string[] = [];
  const guestFailed = failed.filter((f) => f.part === "guest");
  const caches = [...new Set([...guest.map((g) => String(g.cache)), ...guestFailed.map((f) => String(f.cache))])];
  for (const cache of caches) {
    const mine = cells(guest).filter((c) => c.cache === cache);
    const schemes = [...new Set([...mine.map((c) => c.scheme), ...guestFailed.filter((f) => f.cache === cache && f.scheme).map((f) => f.scheme!)])];
    const measured = mine
      .map((c) => ({ s: c.scheme, v: amortizedSpread(phaseRuns(c, "post-snapshot")) }))
      .filter((x): x is { s: string; v: Spread } => x.v !== undefined);
    const absent = schemes.filter((s) => !measured.some((x) => x.s === s));
    if (schemes.length < 2) continue;
    if (absent.length) {
      const why = absent.map((s) => (guestFailed.some((f) => f.cache === cache && f.scheme === s) ? `${s} (every run failed)` : `${s} (no amortized figure)`));
      out.push(`${cache}: no ranking of the schemes in the guest: ${why.join(", ")}.`);
      continue;
    }
    const guestOrder = [...measured].sort((a, b) => a.v.median - b.v.median);
    const host = guestOrder.map((x) => ({ s: x.s, v: hostRow(rows, x.s, cache, "post-snapshot")?.amortized_us }));
    const hostMissing = host.filter((x) => x.v === undefined).map((x) => x.s);
    const hostOrder = host.filter((x): x is { s: string; v: number } => x.v !== undefined).sort((a, b) => a.v - b.v);
    let text = `${cache}, after the snapshot, cheapest first by amortized µs per write — guest: ${guestOrder.map((x) => `${x.s} ${n1(x.v.median)}`).join(", ")}`;
    if (!hostMissing.length) {
      text += `; host (ring): ${hostOrder.map((x) => `${x.s} ${n1(x.v)}`).join(", ")}`;
      const differ = guestOrder.map((x, i) => [x.s, hostOrder[i]!.s] as const).filter(([a, b]) => a !== b);
      if (!differ.length) text += ". Same ranking.";
      else {
        // Where the guest's order differs, say whether the guest could tell the schemes apart at all: overlapping
        // min–max ranges over the repetitions mean the emulator's noise is larger than the difference.
        const overlaps = guestOrder.slice(1).filter((x, i) => x.v.min <= guestOrder[i]!.v.max).map((x) => `${guestOrder[guestOrder.indexOf(x) - 1]!.s}/${x.s}`);
        text += `. The ranking differs at ${differ.map(([a, b]) => `${a} (host: ${b})`).join(", ")}`;
        text += overlaps.length ? `; the guest's ranges overlap for ${overlaps.join(", ")}, so the guest cannot tell those apart.` : ".";
      }
    } else text += `; the host's ring row is missing for ${hostMissing.join(", ")}, so no host ranking is set beside it.`;
    out.push(text);
  }
  return out;
}

/** The guest runs' sentences of the answer paragraph, per cache mode. */
export function guestAnswer(guest: GuestResult[]): string {
  const f1 = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const parts: string[] = [];
  for (const cache of [...new Set(guest.map((g) => g.cache))]) {
    const mine = cells(guest.filter((g) => g.cache === cache));
    const post = mine
      .map((c) => ({ c, inp: phaseRuns(c, "in-place"), post: phaseRuns(c, "post-snapshot") }))
      .filter((x) => x.inp.length && x.post.length);
    if (!post.length) continue;
    const med = (ps: GuestPhase[], f: (p: GuestPhase) => number | undefined) => {
      const v = ps.map(f).filter((x): x is number => x !== undefined);
      return v.length ? spread(v).median : undefined;
    };
    const desc = post
      .map((x) => {
        const engPost = med(x.post, (p) => p.engine_us?.median ?? p.engine_write_median_us);
        const engIn = med(x.inp, (p) => p.engine_us?.median ?? p.engine_write_median_us);
        const engine = engPost !== undefined ? `; engine ${f1(engPost)} µs vs ${f1(engIn)}` : "";
        return `${x.c.scheme} ${f1(med(x.post, (p) => guestSeen(p).median))} µs (in place ${f1(med(x.inp, (p) => guestSeen(p).median))}${engine})`;
      })
      .join(", ");
    const runs = Math.min(...post.map((x) => x.post.length));
    parts.push(
      `In the guest (${post[0]!.c.workload} workload through its own ${diskWords(guest.find((g) => g.cache === cache))} driver, ${cache}${runs > 1 ? `, median of ${runs} runs` : ""}), the per-request median write time after the snapshot was ${desc}; ` +
        "what the guest sees adds the emulator's scheduling and the host's load to the engine's own time.",
    );
    const vm = guest.filter((g) => g.cache === cache && g.snapshot?.vmStateWriteMs !== undefined && g.snapshot?.diskSnapshotMs !== undefined);
    if (vm.length) {
      const v = vm[0]!.snapshot!;
      parts.push(
        `Saving the VM state (${((v.vmStateBytes ?? 0) / 2 ** 20).toFixed(1)} MiB) took ${f1((v.vmStateSerializeMs ?? 0) + (v.vmStateWriteMs ?? 0))} ms against ${f1(v.diskSnapshotMs)} ms for the disk snapshot itself (${vm[0]!.scheme}).`,
      );
    }
  }
  return parts.join(" ");
}

/** A table model as fixed-width text (for report.md and the terminal). */
export function textTable(t: TableModel): string {
  const all = [t.head, ...t.body];
  const widths = t.head.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  return all.map((r) => r.map((v, c) => (c < t.numericFrom ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  ").trimEnd()).join("\n") + "\n";
}

/** The guest section of report.md. */
export function guestSectionMarkdown(guest: GuestResult[], rows: ResultRow[], failed: readonly FailedSource[] = []): string {
  const failures = guestFailures(failed);
  if (!guest.length && !failures.length) return "";
  const ratio = guestRatioTable(guest, rows);
  return [
    "## The guest's writes",
    "",
    "app: the guest program's system call (its own clock); device: v86's disk request to its completion; ring: the worker ring's client; engine: the worker's own time; each a per-request median. amortized: the phase's wall time ÷ its writes (the statistic schemes are ranked by). Median over the runs of each cell, min–max in brackets.",
    "",
    "```",
    textTable(guestClockTable(guest)).trimEnd(),
    "```",
    "",
    ...(ratio.body.length ? ["```", textTable(ratio).trimEnd(), "```", ""] : []),
    ...guestRanking(guest, rows, failed).map((l) => `- ${l}`),
    ...failures.map((l) => `- ${l}`),
    "",
  ].join("\n");
}

/** "IDE" or "virtio-blk, queue depth 16": the disk the guest runs went through. */
function diskWords(g: GuestResult | undefined): string {
  if (!g || (g.disk ?? "ide") === "ide") return "IDE";
  return `virtio-blk (queue depth ${g.iodepth ?? 1})`;
}
