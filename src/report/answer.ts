/**
 * The report's answer to its question — does an internal snapshot slow the writes after it, and which scheme
 * removes that — as a reader scans it: one table per cache mode, one row per refcow scheme and per baseline
 * (the raw file, QEMU std, QEMU lazy_refcounts), then at most three sentences saying what the tables mean.
 *
 * One statistic decides everything here: amortized cost per write (phase wall time ÷ writes, flush waits
 * included), the median over rounds with its min–max; every ratio is computed within each round, then the
 * median with min–max (src/stats `ratioByRounds`, through ratios.ts). No row stands in for another: a
 * scheme's row is its row through the worker ring (or in-process, when the run asked for that), QEMU's is
 * qemu-nbd's, and the comparison with QEMU is the scheme's own NBD-export row against qemu-nbd's. A row that
 * failed or is missing is shown so, with its reason, and the sentences refuse to name a fastest scheme in a
 * cache mode where any scheme is missing.
 */
import { SCHEME_NAMES } from "../schemes/index.js";
import type { Spread } from "../stats/latency.js";
import { formatRatio, QEMU_BASE, ratio, sameSourceVia } from "./ratios.js";
import { shortReason, withRange } from "./report-tables.js";
import { type FailedSource, type MissingSource, type ResultRow, sourceName, type Transport } from "./results.js";

/** The workload the answer is about: one 4 KiB write per 64 KiB cluster, random order. */
export const ANSWER_WORKLOAD = "rand4k-per-cluster";

export const ANSWER_HEAD = [
  "source (transport)",
  "in place: amortized µs/write (min–max)",
  "post-snapshot: amortized µs/write (min–max)",
  "post ÷ in place: amortized, per round (min–max)",
  "post-snapshot vs QEMU std, both through NBD: amortized, per round (min–max)",
  "post-snapshot with the close: amortized µs/write (min–max)",
] as const;

export const ANSWER_LEGEND =
  "amortized = phase wall time ÷ writes, flush waits included (the statistic that ranks the schemes everywhere in this report); " +
  "with the close = (phase wall time + closing the image) ÷ writes, which counts work a scheme defers to its close; " +
  "figures are the median over rounds with min–max; ratios are computed within each round (both rows ran the same requests in that round), then the median with min–max.";

/** A post ÷ in-place ratio above this counts as a slowdown; at or below it, as none. */
export const SLOWDOWN = 1.1;

export interface AnswerRow {
  /** "scheme" for refcow's schemes, "baseline" for the raw file and QEMU. */
  kind: "scheme" | "baseline";
  cells: string[];
  /** "failed" or "missing" when the source has no figures here; why in `reason`. */
  status: "measured" | "failed" | "missing";
  reason?: string;
}

export interface AnswerTable {
  cache: string;
  workload: string;
  head: readonly string[];
  rows: AnswerRow[];
}

export interface AnswerModel {
  tables: AnswerTable[];
  legend: string;
  /** At most three sentences: what the tables say about the question. */
  summary: string[];
}

export interface AnswerInput {
  rows: ResultRow[];
  missing?: MissingSource[];
  failed?: FailedSource[];
  /** The schemes the run was asked for (results.json's options), when known. */
  schemes?: string[];
}

interface Slot {
  kind: AnswerRow["kind"];
  source: ResultRow["source"];
  scheme: string;
  transport: Transport;
}

const CACHE_ORDER = ["writethrough", "writeback", "unsafe"];
const byCacheOrder = (a: string, b: string) => (CACHE_ORDER.indexOf(a) + 1 || 99) - (CACHE_ORDER.indexOf(b) + 1 || 99);
const firstFit = (r: { alloc?: string }) => !r.alloc || r.alloc === "first-fit";

/** The row of a slot in one phase: that source, that transport, refcow's flush order, first-fit. */
function slotRow(rows: readonly ResultRow[], s: Slot, cache: string, phase: string): ResultRow | undefined {
  return rows.find((r) => r.source === s.source && r.scheme === s.scheme && r.transport === s.transport && !r.order && firstFit(r) && r.cache === cache && r.workload === ANSWER_WORKLOAD && r.phase === phase);
}

/** Why a slot has no row in a cache mode: its failure, its missing entry, or that it was not run. */
function absence(input: AnswerInput, s: Slot, cache: string): { status: "failed" | "missing"; reason: string } {
  const f = (input.failed ?? []).find((x) => x.source === s.source && x.scheme === s.scheme && x.transport === s.transport && !x.order && firstFit(x) && x.cache === cache && x.workload === ANSWER_WORKLOAD);
  if (f) return { status: "failed", reason: shortReason(f) };
  const name = sourceName(s);
  const m = (input.missing ?? []).find((x) => x.source === name) ?? (s.transport === "nbd" ? (input.missing ?? []).find((x) => x.asked) : undefined);
  if (m) return { status: "missing", reason: m.reason };
  return { status: "missing", reason: "not measured in this run" };
}

/** The schemes the answer expects a row for: asked for, measured anywhere, or failed anywhere. */
function expectedSchemes(input: AnswerInput): string[] {
  const seen = new Set<string>(input.schemes ?? []);
  for (const r of input.rows) if (r.source === "refcow" && r.transport) seen.add(r.scheme);
  for (const f of input.failed ?? []) if (f.source === "refcow" && f.scheme) seen.add(f.scheme);
  const known = SCHEME_NAMES.filter((n) => seen.has(n));
  return [...known, ...[...seen].filter((n) => !(SCHEME_NAMES as readonly string[]).includes(n)).sort()];
}

/** The transport the schemes' own rows went through: the ring, or in-process when the run asked for that. */
function localTransport(rows: readonly ResultRow[]): Transport {
  const t = rows.filter((r) => r.workload === ANSWER_WORKLOAD && r.source === "refcow").map((r) => r.transport);
  return t.includes("ring") || !t.includes("in-process") ? "ring" : "in-process";
}

const range = (r: ResultRow | undefined, k: "amortized_us" | "amortized_close_us") => (r && r[k] !== undefined ? withRange(r[k], r[`${k}_min`], r[`${k}_max`]) : "–");
const rt = (s: Spread | undefined) => (s && s.runs ? formatRatio(s) : "–");

interface SlotFigures {
  slot: Slot;
  name: string;
  inPlace?: ResultRow;
  post?: ResultRow;
  /** post ÷ in place, amortized, per round. */
  slowdown?: Spread;
  /** The same with the close counted. */
  slowdownWithClose?: Spread;
  /** The source's post-snapshot row through NBD against QEMU std's, per round. */
  vsQemu?: Spread;
  vsQemuNote?: string;
  absent?: { status: "failed" | "missing"; reason: string };
}

function figures(input: AnswerInput, s: Slot, cache: string): SlotFigures {
  const rows = input.rows;
  const inPlace = slotRow(rows, s, cache, "in-place");
  const post = slotRow(rows, s, cache, "post-snapshot");
  const out: SlotFigures = { slot: s, name: sourceName(s), inPlace, post };
  if (!inPlace || !post) {
    out.absent = absence(input, s, cache);
    return out;
  }
  out.slowdown = ratio(post, inPlace, "amortized_us");
  if (post.reps?.some((x) => x.amortized_close_us !== undefined)) out.slowdownWithClose = ratio(post, inPlace, "amortized_close_us");
  const qemuSlot: Slot = { kind: "baseline", source: "qemu", scheme: QEMU_BASE, transport: "nbd" };
  if (s.source === "qemu" && s.scheme === QEMU_BASE) out.vsQemuNote = "1 (the base)";
  else {
    const viaNbd = s.transport === "nbd" ? post : sameSourceVia(rows, post, "nbd");
    const q = slotRow(rows, qemuSlot, cache, "post-snapshot");
    if (!viaNbd) out.vsQemuNote = `${absence(input, { ...s, transport: "nbd" }, cache).status} through NBD`;
    else if (!q) out.vsQemuNote = `QEMU std ${absence(input, qemuSlot, cache).status}`;
    else out.vsQemu = ratio(viaNbd, q, "amortized_us");
  }
  return out;
}

function rowOf(f: SlotFigures): AnswerRow {
  if (f.absent) {
    const word = f.absent.status === "failed" ? "FAILED" : "missing";
    return { kind: f.slot.kind, status: f.absent.status, reason: f.absent.reason, cells: [f.name, `${word}: ${f.absent.reason}`, "–", "–", "–", "–"] };
  }
  return {
    kind: f.slot.kind,
    status: "measured",
    cells: [f.name, range(f.inPlace, "amortized_us"), range(f.post, "amortized_us"), rt(f.slowdown), f.vsQemuNote ?? rt(f.vsQemu), range(f.post, "amortized_close_us")],
  };
}

/** The answer's tables and sentences, from the results. */
export function buildAnswer(input: AnswerInput): AnswerModel {
  const rows = input.rows;
  const failed = input.failed ?? [];
  const caches = [
    ...new Set([...rows.filter((r) => r.workload === ANSWER_WORKLOAD && r.transport).map((r) => String(r.cache)), ...failed.filter((f) => f.workload === ANSWER_WORKLOAD && f.cache).map((f) => f.cache!)]),
  ].sort(byCacheOrder);
  if (!caches.length) return { tables: [], legend: ANSWER_LEGEND, summary: [`The write-after-snapshot workload (${ANSWER_WORKLOAD}) was not run, so the report holds no answer to whether a snapshot slows later writes.`] };
  const local = localTransport(rows);
  const schemes = expectedSchemes(input);
  const slots: Slot[] = [
    ...schemes.map((scheme): Slot => ({ kind: "scheme", source: "refcow", scheme, transport: local })),
    { kind: "baseline", source: "raw", scheme: "none", transport: local },
    { kind: "baseline", source: "qemu", scheme: QEMU_BASE, transport: "nbd" },
    { kind: "baseline", source: "qemu", scheme: "lazy_refcounts", transport: "nbd" },
  ];
  const perCache = caches.map((cache) => ({ cache, figs: slots.map((s) => figures(input, s, cache)) }));
  const tables = perCache.map(({ cache, figs }) => ({ cache, workload: ANSWER_WORKLOAD, head: ANSWER_HEAD, rows: figs.map(rowOf) }));
  return { tables, legend: ANSWER_LEGEND, summary: summary(perCache) };
}

/** The sentences: does a snapshot slow later writes (QEMU's and eager's figures), which scheme removes it, and against QEMU. */
function summary(perCache: Array<{ cache: string; figs: SlotFigures[] }>): string[] {
  const out: string[] = [];
  // 1. Does a snapshot slow the writes after it: QEMU's own answer and eager's (QEMU's rules), per cache mode.
  const refs = perCache.map(({ cache, figs }) => {
    const q = figs.find((f) => f.slot.source === "qemu" && f.slot.scheme === QEMU_BASE)!;
    const e = figs.find((f) => f.slot.source === "refcow" && f.slot.scheme === "eager");
    return { cache, q, e };
  });
  const measuredRefs = refs.flatMap(({ q, e }) => [q.slowdown, e?.slowdown]).filter((s): s is Spread => s !== undefined && s.runs > 0);
  if (!measuredRefs.length) {
    out.push(`Whether a snapshot slows later writes is not measured: QEMU std and eager are missing in every cache mode (see the table).`);
  } else {
    const slows = measuredRefs.some((s) => s.median > SLOWDOWN);
    const parts = refs.map(({ cache, q, e }) => {
      const who = [q.slowdown ? `QEMU std's ${rt(q.slowdown)}` : `QEMU std ${q.absent?.status ?? "missing"}`, e ? (e.slowdown ? `eager's ${rt(e.slowdown)}` : `eager ${e.absent?.status ?? "missing"}`) : ""].filter(Boolean);
      return `in ${cache} ${who.join(", ")}`;
    });
    out.push(`${slows ? "An internal snapshot slows the writes after it" : `An internal snapshot does not slow the writes after it by more than ${Math.round((SLOWDOWN - 1) * 100)} %`}: a post-snapshot write costs, against an in-place one, ${parts.join("; ")} (amortized per write, per-round ratios).`);
  }
  // 2. Which scheme removes it: the cheapest post-snapshot scheme per cache mode, unless a scheme is missing there.
  const ranked: Array<{ cache: string; best: SlotFigures }> = [];
  const refused: string[] = [];
  for (const { cache, figs } of perCache) {
    const schemes = figs.filter((f) => f.slot.kind === "scheme");
    const absent = schemes.filter((f) => f.absent);
    if (!schemes.length) continue;
    if (absent.length) {
      refused.push(`in ${cache} no scheme is ranked because ${absent.map((f) => `${f.name} ${f.absent!.status === "failed" ? "failed" : "is missing"}`).join(", ")}`);
      continue;
    }
    const best = [...schemes].sort((a, b) => a.post!.amortized_us - b.post!.amortized_us)[0]!;
    ranked.push({ cache, best });
  }
  const closeClause = (best: SlotFigures) => {
    const deferred = best.post!.amortized_close_us !== undefined && best.post!.amortized_close_us >= 1.2 * best.post!.amortized_us && best.slowdownWithClose?.runs;
    return deferred ? `, ${rt(best.slowdownWithClose)} counting its close, which carries work it deferred` : "";
  };
  const sameBest = ranked.length > 0 && ranked.every((r) => r.best.slot.scheme === ranked[0]!.best.slot.scheme);
  // "Removes" only when the cheapest scheme's post-snapshot write costs no more than its in-place one (within
  // SLOWDOWN) in every ranked cache mode, its close counted.
  const removes = sameBest && ranked.every(({ best }) => best.slowdown!.median <= SLOWDOWN && (!best.slowdownWithClose?.runs || best.slowdownWithClose.median <= SLOWDOWN));
  let s2 = "";
  if (removes) s2 = `The scheme that removes it is ${ranked[0]!.best.slot.scheme}, with the lowest post-snapshot amortized cost per write of the schemes: ${ranked.map(({ cache, best }) => `in ${cache} ${rt(best.slowdown)} its in-place cost${closeClause(best)}`).join(", ")}`;
  else if (ranked.length) s2 = `The lowest post-snapshot amortized cost per write of the schemes is ${ranked.map(({ cache, best }) => `${best.slot.scheme} in ${cache} (${rt(best.slowdown)} its in-place cost${closeClause(best)})`).join(" and ")}`;
  if (refused.length) s2 += `${s2 ? "; " : ""}${s2 ? refused.join("; ") : refused.join("; ").replace(/^in/, "In")}`;
  if (s2) out.push(`${s2}.`);
  // 3. Against QEMU, like for like: the cheapest scheme's own NBD-export row against qemu-nbd's.
  if (ranked.length) {
    const parts = ranked.map(({ cache, best }) => `${best.vsQemu ? rt(best.vsQemu) : best.vsQemuNote ?? "–"} in ${cache}${sameBest ? "" : ` (${best.slot.scheme})`}`);
    out.push(`Through NBD on the same requests, ${sameBest ? `${ranked[0]!.best.slot.scheme}'s` : "that scheme's"} post-snapshot write costs, against QEMU std's, ${parts.join(" and ")}.`);
  }
  return out;
}

/** A markdown table (pipes in cells escaped). */
export function markdownTable(head: readonly string[], body: string[][]): string {
  const cell = (c: string) => c.replace(/\|/g, "\\|");
  return [`| ${head.map(cell).join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...body.map((r) => `| ${r.map(cell).join(" | ")} |`)].join("\n");
}

/** The answer as text: the tables (markdown, or fixed-width for a terminal), the legend, then the sentences. */
export function answerText(a: AnswerModel, style: "markdown" | "text", pad: (lines: string[][]) => string): string {
  const parts: string[] = [];
  for (const t of a.tables) {
    const title = `${t.cache}, ${t.workload}: a write in place and after an internal snapshot`;
    const body = t.rows.map((r) => r.cells);
    parts.push(style === "markdown" ? `**${title}**\n\n${markdownTable(t.head, body)}` : `${title}\n${pad([[...t.head], ...body]).trimEnd()}`);
  }
  if (a.tables.length) parts.push(style === "markdown" ? `_${a.legend}_` : `(${a.legend})`);
  if (a.summary.length) parts.push(a.summary.join(" "));
  return parts.join("\n\n");
}
