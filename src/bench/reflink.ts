/**
 * Copy-free COW against the copy, in one run: `node dist/bench/reflink.js` (root: it makes an XFS loop mount).
 *
 * Three places for the image, as sources of one matrix: an XFS file system with reflink (the copy of a COW
 * shared: engine/data/cow-copy.ts), the same XFS with --no-reflink (the copy read and written: the file system's
 * own cost apart from sharing), and the temporary directory's file system (ext4 here). Every scheme, both
 * cache modes, the write matrix's load (load.ts: 4 KiB at 4 KiB into each of N clusters, random order, a
 * flush every 64 writes in writeback, queue depth 1, the engine in this thread) and its preparation
 * (sources.ts: the clusters written in full, synced, before any clock). Phases: `in-place`, then
 * `post-snapshot` after an internal snapshot taken outside the clock. Rounds: every source once per round,
 * in an order rotated from round to round (reversed every other round); round i of every source replays
 * the same request sequence. Ratios (post-snapshot / in-place) are computed within each round, then shown
 * as the median with min–max and every round's value.
 *
 * Per cell: amortized µs per write (phase wall time ÷ writes, flushes included), the same with the close
 * (a scheme's deferred work: log's apply), host bytes written per post-snapshot write by the engine's
 * accounting (close included) and bytes it shared by clones, and — the oracle that did not produce those —
 * `qemu-img check` of every image, and per place, scheme and cache mode an `strace` of `refcow io` doing the
 * same post-snapshot writes (writeback: flushed at the close; writethrough: each write durable before the
 * next): the bytes pwrite64 wrote per write.
 *
 * The floor, in the same rounds: per place, the same N writes without qcow2 (fs-cow-floor.ts) — in place,
 * and onto new clusters made from the old ones (one clone and the writes where the file shares extents, a
 * copy elsewhere) — so that every post / in-place ratio stands beside the file system's own.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CacheMode } from "../engine/types.js";
import { CACHE_MODES } from "../engine/types.js";
import { diffCosts } from "../io/accounting-file.js";
import type { CostBreakdown } from "../io/purpose.js";
import { openImagePath } from "../open/open-path.js";
import type { Qcow2Image } from "../open/qcow2.js";
import { makeXfsMount, type ScratchMount } from "../harness/scratch-fs.js";
import { SCHEME_NAMES } from "../schemes/index.js";
import { amortized, ratioByRounds, type Spread, spread } from "../stats/latency.js";
import { BenchUsageError, integerOption, listOption, progress, runProgram } from "./entry.js";
import { requireCleanImage } from "./image-check.js";
import { runWritePhase, WRITE, writeOffsets } from "./load.js";
import { straceAvailable, traceFileSyscalls } from "./pwrite-trace.js";
import { betweenPhases, prepareFile, refcowBin } from "./sources.js";
import { fsFloorRound, type FloorRound } from "./fs-cow-floor.js";

/** Where an image lives: a directory, and whether the engine may share extents there. */
export interface Place {
  name: string;
  dir: string;
  /** The file system's type (stat -f). */
  fsType: string;
  noReflink: boolean;
}

export interface ReflinkBenchOptions {
  clusters: number;
  reps: number;
  schemes: string[];
  caches: CacheMode[];
  /** The strace oracle of the bytes per write (one `refcow io` run per place and scheme). */
  oracle: boolean;
}

/** One round of one phase of one source. */
interface Run {
  wallUs: number;
  closeUs: number;
  writes: number;
  costs: CostBreakdown;
}

export interface ReflinkCell {
  place: string;
  fsType: string;
  scheme: string;
  cache: CacheMode;
  /** Per round, µs: amortized per write without and with the close, per phase. */
  inPlace: { amortized: number[]; withClose: number[] };
  post: { amortized: number[]; withClose: number[] };
  /** post-snapshot / in-place, round by round. */
  ratio: Spread & { perRound: number[] };
  ratioWithClose: Spread & { perRound: number[] };
  /** Post-snapshot, per write, median over rounds: bytes the engine wrote (close included) and shared by clones. */
  hostWriteBytes: number;
  cloneBytes: number;
  failed?: string;
}

export interface OracleRow {
  place: string;
  scheme: string;
  cache: CacheMode;
  writes: number;
  pwriteBytesPerWrite: number;
  /** FICLONERANGE calls that succeeded, in all (neighbouring clusters may share one). */
  clones: number;
  failed?: string;
}

/** The file system's own floor at one place and cache mode, round by round (fs-cow-floor.ts). */
export interface FloorRow {
  place: string;
  cache: CacheMode;
  how: FloorRound["how"];
  /** Per round, µs per write (phase wall time ÷ writes, the fdatasync included). */
  inPlace: number[];
  cow: number[];
  ratio: Spread & { perRound: number[] };
  failed?: string;
}

export interface ReflinkResults {
  options: ReflinkBenchOptions;
  places: Place[];
  cells: ReflinkCell[];
  oracle: OracleRow[];
  floors: FloorRow[];
  missing: { place: string; reason: string }[];
}

const fsTypeOf = (dir: string) => execFileSync("stat", ["-f", "-c", "%T", dir]).toString().trim();
const bytesWritten = (c: CostBreakdown) => Object.values(c).reduce((n, p) => n + (p?.writeBytes ?? 0), 0);
const bytesCloned = (c: CostBreakdown) => Object.values(c).reduce((n, p) => n + (p?.cloneBytes ?? 0), 0);

/** One source through in-place and post-snapshot on a freshly prepared image; checked by qemu-img, removed. */
async function runSource(place: Place, scheme: string, cache: CacheMode, round: number, n: number): Promise<{ inPlace: Run; post: Run }> {
  const file = path.join(place.dir, `${scheme}-${cache}.qcow2`);
  const spec = { source: "refcow" as const, scheme, transport: "in-process" as const };
  prepareFile(spec, file, n);
  const data = new Uint8Array(WRITE).fill(0xa5);
  const offsets = writeOffsets(n, "rand4k-per-cluster", 1234 + round);
  const phase = async (): Promise<Run> => {
    const img = openImagePath(file, { scheme, cache, noReflink: place.noReflink }) as Qcow2Image;
    let closed = false;
    try {
      const before = img.stats();
      const r = await runWritePhase(img, cache, offsets, data);
      const t = performance.now();
      img.close();
      closed = true;
      const closeUs = (performance.now() - t) * 1000;
      // The accounting outlives the close: what the close wrote (log's apply) is counted too.
      return { wallUs: r.wallUs, closeUs, writes: offsets.length, costs: diffCosts(img.stats(), before) };
    } finally {
      if (!closed) img.close();
    }
  };
  try {
    const inPlace = await phase();
    betweenPhases(spec, file, "snapshot");
    const post = await phase();
    requireCleanImage(file);
    return { inPlace, post };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/** The kernel's count of the post-snapshot writes' bytes, by `refcow io` under strace. */
function oracleRow(place: Place, scheme: string, cache: CacheMode, n: number): OracleRow {
  const file = path.join(place.dir, `oracle-${scheme}.qcow2`);
  const spec = { source: "refcow" as const, scheme, transport: "in-process" as const };
  const writes = Math.min(n, 256);
  try {
    prepareFile(spec, file, writes);
    betweenPhases(spec, file, "snapshot");
    const args = [refcowBin(), "io", "--in-process", "-t", cache, "--scheme", scheme, ...(place.noReflink ? ["--no-reflink"] : [])];
    for (const off of writeOffsets(writes, "rand4k-per-cluster", 99)) args.push("-c", `write -P 0xa5 ${off} ${WRITE}`);
    const t = traceFileSyscalls(process.execPath, [...args, file], file);
    requireCleanImage(file);
    return { place: place.name, scheme, cache, writes, pwriteBytesPerWrite: t.pwriteBytes / writes, clones: t.clones };
  } catch (e) {
    return { place: place.name, scheme, cache, writes, pwriteBytesPerWrite: NaN, clones: NaN, failed: (e as Error).message.split("\n")[0] };
  } finally {
    fs.rmSync(file, { force: true });
  }
}

const withRounds = (s: Spread, perRound: number[]) => ({ ...s, perRound });

export async function runReflinkBench(opts: ReflinkBenchOptions, places: Place[], say: (m: string) => void = progress): Promise<ReflinkResults> {
  const results: ReflinkResults = { options: opts, places, cells: [], oracle: [], floors: [], missing: [] };
  const floorRounds = new Map<string, FloorRound[]>();
  const floorFailed = new Map<string, string>();
  const sources = places.flatMap((place) => opts.schemes.flatMap((scheme) => opts.caches.map((cache) => ({ place, scheme, cache }))));
  const runs = new Map<string, { inPlace: Run; post: Run }[]>();
  const failed = new Map<string, string>();
  const key = (s: (typeof sources)[number]) => `${s.place.name}|${s.scheme}|${s.cache}`;
  for (let round = 0; round < opts.reps; round++) {
    const k = sources.length ? (round * 5) % sources.length : 0;
    const ordered = [...sources.slice(k), ...sources.slice(0, k)];
    if (round % 2 === 1) ordered.reverse();
    for (const s of ordered) {
      if (failed.has(key(s))) continue;
      say(`round ${round + 1}/${opts.reps}: ${s.place.name} ${s.scheme} ${s.cache}`);
      try {
        const r = await runSource(s.place, s.scheme, s.cache, round, opts.clusters);
        runs.set(key(s), [...(runs.get(key(s)) ?? []), r]);
      } catch (e) {
        failed.set(key(s), (e as Error).message.split("\n")[0]!);
        say(`  FAILED: ${failed.get(key(s))}`);
      }
    }
    for (const place of places) {
      for (const cache of opts.caches) {
        const fk = `${place.name}|${cache}`;
        if (floorFailed.has(fk)) continue;
        say(`round ${round + 1}/${opts.reps}: ${place.name} ${cache} file system floor`);
        try {
          floorRounds.set(fk, [...(floorRounds.get(fk) ?? []), fsFloorRound(place.dir, opts.clusters, place.noReflink, cache === "writethrough")]);
        } catch (e) {
          floorFailed.set(fk, (e as Error).message.split("\n")[0]!);
          say(`  FAILED: ${floorFailed.get(fk)}`);
        }
      }
    }
  }
  for (const place of places) {
    for (const cache of opts.caches) {
      const fk = `${place.name}|${cache}`;
      const rs = floorRounds.get(fk) ?? [];
      const inPlace = rs.map((r) => r.inPlaceUs / opts.clusters);
      const cow = rs.map((r) => r.cowUs / opts.clusters);
      const hows = new Set(rs.map((r) => r.how));
      const row: FloorRow = {
        place: place.name,
        cache,
        how: hows.size === 1 ? [...hows][0]! : "mixed",
        inPlace,
        cow,
        ratio: withRounds(ratioByRounds(cow, inPlace), cow.map((c, i) => c / inPlace[i]!)),
      };
      if (floorFailed.has(fk)) row.failed = floorFailed.get(fk);
      results.floors.push(row);
    }
  }
  for (const s of sources) {
    const rs = runs.get(key(s)) ?? [];
    const am = (r: Run) => amortized(r.wallUs, r.writes);
    const amClose = (r: Run) => amortized(r.wallUs + r.closeUs, r.writes);
    const cell: ReflinkCell = {
      place: s.place.name,
      fsType: s.place.fsType,
      scheme: s.scheme,
      cache: s.cache,
      inPlace: { amortized: rs.map((r) => am(r.inPlace)), withClose: rs.map((r) => amClose(r.inPlace)) },
      post: { amortized: rs.map((r) => am(r.post)), withClose: rs.map((r) => amClose(r.post)) },
      ratio: { median: 0, min: 0, max: 0, runs: 0, perRound: [] },
      ratioWithClose: { median: 0, min: 0, max: 0, runs: 0, perRound: [] },
      hostWriteBytes: spread(rs.map((r) => bytesWritten(r.post.costs) / r.post.writes)).median,
      cloneBytes: spread(rs.map((r) => bytesCloned(r.post.costs) / r.post.writes)).median,
    };
    const per = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
    cell.ratio = withRounds(ratioByRounds(cell.post.amortized, cell.inPlace.amortized), per(cell.post.amortized, cell.inPlace.amortized));
    cell.ratioWithClose = withRounds(ratioByRounds(cell.post.withClose, cell.inPlace.withClose), per(cell.post.withClose, cell.inPlace.withClose));
    if (failed.has(key(s))) cell.failed = failed.get(key(s));
    results.cells.push(cell);
  }
  if (opts.oracle) {
    for (const place of places) {
      for (const scheme of opts.schemes) {
        for (const cache of opts.caches) {
          say(`strace oracle: ${place.name} ${scheme} ${cache}`);
          results.oracle.push(oracleRow(place, scheme, cache, opts.clusters));
        }
      }
    }
  }
  return results;
}

const x = (v: number) => `${v.toFixed(2)}×`;
const us = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : "–");
const kib = (v: number) => (Number.isFinite(v) ? (v / 1024).toFixed(1) : "–");

/** The results as Markdown: one table of ratios and bytes, one of the strace oracle. */
export function formatReflinkResults(r: ReflinkResults): string {
  const lines: string[] = [];
  lines.push(`Places: ${r.places.map((p) => `${p.name} (${p.fsType}${p.noReflink ? ", --no-reflink" : ""})`).join("; ")}. ${r.options.clusters} clusters per phase, ${r.options.reps} rounds, in-process, rand4k-per-cluster.`);
  lines.push("");
  lines.push("| place | scheme | cache | in-place amortized µs (median) | post-snapshot amortized µs (median) | post/in-place amortized: median (min–max) [per round] | with close: median (min–max) [per round] | host KiB written / post write | KiB cloned / post write |");
  lines.push("|---|---|---|---|---|---|---|---|---|");
  for (const c of r.cells) {
    if (c.failed && !c.post.amortized.length) {
      lines.push(`| ${c.place} | ${c.scheme} | ${c.cache} | failed: ${c.failed} | | | | | |`);
      continue;
    }
    const ratio = (s: ReflinkCell["ratio"]) => `${x(s.median)} (${x(s.min)}–${x(s.max)}) [${s.perRound.map(x).join(", ")}]`;
    lines.push(
      `| ${c.place} | ${c.scheme} | ${c.cache} | ${us(spread(c.inPlace.amortized).median)} | ${us(spread(c.post.amortized).median)} | ${ratio(c.ratio)} | ${ratio(c.ratioWithClose)} | ${kib(c.hostWriteBytes)} | ${kib(c.cloneBytes)} |${c.failed ? ` failed in a round: ${c.failed}` : ""}`,
    );
  }
  if (r.floors.length) {
    lines.push("");
    lines.push("The file system's floor in the same rounds (fs-cow-floor.ts: no qcow2; the same writes in place, and onto new clusters made from the old ones; writeback: one fdatasync after them all; writethrough: one after each, with the COW made at each write as eager makes it — log defers it to its apply, bounded by the writeback row), µs per write:");
    lines.push("");
    lines.push("| place | cache | COW made by | in place µs (median) | COW µs (median) | COW / in place: median (min–max) [per round] |");
    lines.push("|---|---|---|---|---|---|");
    for (const f of r.floors) {
      if (!f.inPlace.length) {
        lines.push(`| ${f.place} | ${f.cache} | failed: ${f.failed ?? "no round ran"} | | | |`);
        continue;
      }
      lines.push(
        `| ${f.place} | ${f.cache} | ${f.how} | ${us(spread(f.inPlace).median)} | ${us(spread(f.cow).median)} | ${x(f.ratio.median)} (${x(f.ratio.min)}–${x(f.ratio.max)}) [${f.ratio.perRound.map(x).join(", ")}] |${f.failed ? ` failed in a round: ${f.failed}` : ""}`,
      );
    }
  }
  if (r.oracle.length) {
    lines.push("");
    lines.push("strace of `refcow io -t CACHE` doing the post-snapshot writes (writeback: flushed at the close), per write:");
    lines.push("");
    lines.push("| place | scheme | cache | writes | pwrite64 KiB / write | FICLONERANGE calls |");
    lines.push("|---|---|---|---|---|---|");
    for (const o of r.oracle) lines.push(`| ${o.place} | ${o.scheme} | ${o.cache} | ${o.writes} | ${o.failed ? `failed: ${o.failed}` : kib(o.pwriteBytesPerWrite)} | ${o.failed ? "" : o.clones} |`);
  }
  for (const m of r.missing) lines.push(`\nnot measured: ${m.place}: ${m.reason}`);
  return lines.join("\n") + "\n";
}

const USAGE = `usage: node dist/bench/reflink.js [--clusters N] [--reps N] [--schemes a,b] [--cache a,b] [--no-oracle] [--json FILE]

Copy-free COW (XFS with reflink) against the copy (XFS --no-reflink, and the temporary directory's file
system) in one run: post-snapshot / in-place per scheme and cache mode, round by round, and host bytes per
post-snapshot write (engine accounting, and strace of refcow io). Needs root (an XFS loop mount).`;

runProgram(
  import.meta.url,
  {
    name: "reflink bench",
    usage: USAGE,
    options: { clusters: { type: "string" }, reps: { type: "string" }, schemes: { type: "string" }, cache: { type: "string" }, "no-oracle": { type: "boolean" }, json: { type: "string" } },
  },
  async (v) => {
    const caches = (listOption(v.cache) ?? ["writeback", "writethrough"]) as CacheMode[];
    for (const c of caches) if (!(CACHE_MODES as readonly string[]).includes(c)) throw new BenchUsageError(`--cache takes ${CACHE_MODES.join(", ")}, not '${c}'`);
    const opts: ReflinkBenchOptions = {
      clusters: integerOption("clusters", v.clusters) ?? 500,
      reps: integerOption("reps", v.reps) ?? 3,
      schemes: listOption(v.schemes) ?? [...SCHEME_NAMES],
      caches,
      oracle: !v["no-oracle"] && straceAvailable(),
    };
    const other = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-reflink-bench-"));
    let mount: ScratchMount | undefined;
    const places: Place[] = [];
    const missing: ReflinkResults["missing"] = [];
    try {
      try {
        mount = makeXfsMount("reflink-bench");
        places.push({ name: "xfs", dir: mount.dir, fsType: mount.type, noReflink: false }, { name: "xfs --no-reflink", dir: mount.dir, fsType: mount.type, noReflink: true });
      } catch (e) {
        missing.push({ place: "xfs", reason: (e as Error).message });
      }
      places.push({ name: fsTypeOf(other) === "ext2/ext3" ? "ext4" : fsTypeOf(other), dir: other, fsType: fsTypeOf(other), noReflink: false });
      const results = await runReflinkBench(opts, places);
      results.missing.push(...missing);
      if (!opts.oracle && !v["no-oracle"]) results.missing.push({ place: "all", reason: "strace not available: no oracle of the byte counts" });
      process.stdout.write(formatReflinkResults(results));
      if (v.json) fs.writeFileSync(v.json, JSON.stringify(results, null, 1));
      return results.cells.some((c) => c.failed) || results.oracle.some((o) => o.failed) || missing.length ? 1 : 0;
    } finally {
      mount?.dispose();
      fs.rmSync(other, { recursive: true, force: true });
    }
  },
);
