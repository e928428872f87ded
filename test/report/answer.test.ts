/**
 * The answer a reader scans: a table per cache mode with one row per scheme and per baseline, every header
 * naming its statistic, at most three sentences; every ratio in it (and in the fio and guest tables) computed
 * within each round and shown as the median with min–max. The expected figures here are worked out in the
 * test from the per-round inputs it builds, not by the code under test.
 */
import { describe, expect, it } from "vitest";
import { ANSWER_HEAD, buildAnswer } from "../../src/report/answer.js";
import { guestRanking, guestRatioTable } from "../../src/report/guest-section.js";
import type { FailedSource, FioRow, GuestResult, ResultRow } from "../../src/report/results.js";
import { fioDepthRows } from "../../src/report/report-tables.js";

type Cache = "writethrough" | "writeback";

/** A row whose rounds amortize `perRound` µs per write (median and range from them, by hand: 3 rounds, the middle one). */
function row(source: ResultRow["source"], scheme: string, transport: ResultRow["transport"], cache: Cache, phase: string, perRound: number[], closeRounds?: number[]): ResultRow {
  const sorted = [...perRound].sort((a, b) => a - b);
  const r: ResultRow = {
    source,
    scheme,
    transport,
    cache,
    workload: "rand4k-per-cluster",
    phase,
    median_us: sorted[1]! / 2,
    p99_us: sorted[1]!,
    amortized_us: sorted[1]!,
    amortized_us_min: sorted[0]!,
    amortized_us_max: sorted[2]!,
    runs: 3,
    reps: perRound.map((a, i) => ({ median_us: a / 2, p99_us: a, amortized_us: a, ...(closeRounds ? { amortized_close_us: closeRounds[i]! } : {}) })),
  };
  if (closeRounds) {
    const c = [...closeRounds].sort((a, b) => a - b);
    Object.assign(r, { amortized_close_us: c[1], amortized_close_us_min: c[0], amortized_close_us_max: c[2] });
  }
  return r;
}

/** "3.00× (1.00–5.00)": the median and range of per-round ratios, computed here by hand. */
function byRounds(num: number[], den: number[]): string {
  const r = num.map((n, i) => n / den[i]!).sort((a, b) => a - b);
  const d = r[1]! < 10 ? 2 : 1;
  return `${r[1]!.toFixed(d)}× (${r[0]!.toFixed(d)}–${r[2]!.toFixed(d)})`;
}

const SCHEMES = ["eager", "lazy", "lazy-count", "owner", "journal", "log"];
// Per-round amortized µs: round 2 of every source is slow in place, so the median of the per-round ratios
// differs from the ratio of the medians (the test would catch the wrong one).
const IN = [40, 80, 50];
const postOf = (i: number) => [400 - 50 * i, 300 - 40 * i, 700 - 60 * i];
const NBD_IN = [100, 120, 110];
const nbdPostOf = (i: number) => [300 - 30 * i, 500 - 20 * i, 360 - 40 * i];
const QEMU_POST = [900, 1000, 1500];
const LAZYREF_POST = [500, 700, 600];

function matrix(caches: Cache[] = ["writethrough", "writeback"]): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const cache of caches) {
    SCHEMES.forEach((s, i) => {
      rows.push(row("refcow", s, "ring", cache, "in-place", IN, IN.map((x) => x + 1)));
      rows.push(row("refcow", s, "ring", cache, "post-snapshot", postOf(i), postOf(i).map((x) => x + 2)));
      rows.push(row("refcow", s, "nbd", cache, "in-place", NBD_IN));
      rows.push(row("refcow", s, "nbd", cache, "post-snapshot", nbdPostOf(i)));
    });
    // Stand-ins the answer must not use: eager with QEMU's flush order through the ring.
    rows.push(row("refcow", "eager", "ring", cache, "post-snapshot", [1, 1, 1]));
    rows.at(-1)!.order = "qemu";
    rows.push(row("raw", "none", "ring", cache, "in-place", [20, 22, 21]), row("raw", "none", "ring", cache, "post-snapshot", [21, 23, 20]));
    rows.push(row("raw", "none", "nbd", cache, "in-place", [90, 95, 92]), row("raw", "none", "nbd", cache, "post-snapshot", [91, 96, 93]));
    rows.push(row("qemu", "std", "nbd", cache, "in-place", NBD_IN), row("qemu", "std", "nbd", cache, "post-snapshot", QEMU_POST));
    rows.push(row("qemu", "lazy_refcounts", "nbd", cache, "in-place", NBD_IN), row("qemu", "lazy_refcounts", "nbd", cache, "post-snapshot", LAZYREF_POST));
  }
  return rows;
}

const sentences = (text: string) => text.split(/(?<=\.)\s+(?=[A-Z])/).filter(Boolean);

describe("the answer", () => {
  it("leads with a table per cache mode: one row per scheme and baseline, every header naming its statistic", () => {
    const a = buildAnswer({ rows: matrix() });
    expect(a.tables.map((t) => t.cache)).toEqual(["writethrough", "writeback"]);
    for (const t of a.tables) {
      expect(t.rows.map((r) => r.cells[0])).toEqual([...SCHEMES.map((s) => `${s} (ring)`), "raw file (ring)", "QEMU (nbd)", "QEMU lazy_refcounts (nbd)"]);
      expect(t.rows.map((r) => r.kind)).toEqual([...SCHEMES.map(() => "scheme"), "baseline", "baseline", "baseline"]);
      expect(t.rows.every((r) => r.status === "measured")).toBe(true);
    }
    // Each figure's header says which statistic it is.
    expect(ANSWER_HEAD.slice(1).every((h) => /amortized/.test(h) && /(min–max)/.test(h))).toBe(true);
    expect(ANSWER_HEAD.filter((h) => /per round/.test(h))).toHaveLength(2);
    expect(a.summary.length).toBeLessThanOrEqual(3);
    expect(sentences(a.summary.join(" ")).length).toBeLessThanOrEqual(3);
    // log (the last scheme) has the lowest post-snapshot cost in both modes; it is the one named.
    expect(a.summary.join(" ")).toMatch(/log in writethrough .* and log in writeback/);
  });

  it("computes every ratio within each round, with min–max, and compares with QEMU through NBD only", () => {
    const a = buildAnswer({ rows: matrix(["writeback"]) });
    const cells = (name: string) => a.tables[0]!.rows.find((r) => r.cells[0] === name)!.cells;
    SCHEMES.forEach((s, i) => {
      const c = cells(`${s} (ring)`);
      expect(c[1], s).toBe("50.0 (40.0–80.0)");
      expect(c[3], `${s} post ÷ in place`).toBe(byRounds(postOf(i), IN));
      // Against QEMU: the scheme's own NBD-export row over qemu-nbd's, round by round (never the ring row).
      expect(c[4], `${s} vs QEMU`).toBe(byRounds(nbdPostOf(i), QEMU_POST));
    });
    expect(cells("QEMU (nbd)")[3]).toBe(byRounds(QEMU_POST, NBD_IN));
    expect(cells("QEMU lazy_refcounts (nbd)")[4]).toBe(byRounds(LAZYREF_POST, QEMU_POST));
    expect(cells("raw file (ring)")[4]).toBe(byRounds([91, 96, 93], QEMU_POST));
    // The median of the per-round ratios is not the ratio of the medians: log's post 400/300/700 − 5·(50/40/60)
    // = 150/100/400 over 40/80/50 is 3.75/1.25/8 per round (median 3.75), while 150/50 would be 3.
    expect(cells("log (ring)")[3]).toBe("3.75× (1.25–8.00)");
    // With the close: the figure over rounds with its range.
    expect(cells("log (ring)")[5]).toBe("152 (102–402)");
  });

  it("a scheme that failed or is missing is shown so with its reason, and no scheme is ranked in that cache mode", () => {
    const rows = matrix().filter((r) => !(r.scheme === "eager" && r.cache === "writeback" && r.transport === "ring"));
    const failed: FailedSource[] = [
      { part: "write matrix", name: "eager (ring)", source: "refcow", scheme: "eager", alloc: "first-fit", transport: "ring", cache: "writeback", workload: "rand4k-per-cluster", round: 2, reason: "the image it left fails qemu-img check: 1 leaked clusters", check: "1 leaked clusters" },
    ];
    const noLog = rows.filter((r) => !(r.scheme === "log" && r.cache === "writeback"));
    const a = buildAnswer({ rows: noLog, failed, schemes: SCHEMES });
    const wb = a.tables.find((t) => t.cache === "writeback")!;
    const eager = wb.rows.find((r) => r.cells[0] === "eager (ring)")!;
    expect(eager.status).toBe("failed");
    expect(eager.cells[1]).toBe("FAILED: qemu-img check: 1 leaked clusters");
    const log = wb.rows.find((r) => r.cells[0] === "log (ring)")!;
    expect(log.status).toBe("missing");
    const text = a.summary.join(" ");
    expect(text).toContain("in writeback no scheme is ranked because eager (ring) failed, log (ring) is missing");
    expect(text).not.toContain("in writeback (");
    expect(text).toMatch(/log in writethrough/); // writethrough is whole: ranked
    expect(sentences(text).length).toBeLessThanOrEqual(3);
    // Without any ranked mode, the sentence starts with the refusal.
    const none = buildAnswer({ rows: noLog.filter((r) => r.cache === "writeback"), failed, schemes: SCHEMES });
    expect(none.summary.join(" ")).toMatch(/^An internal snapshot .*\. In writeback no scheme is ranked/);
  });
});

describe("fio's ratio to qemu-nbd", () => {
  it("is computed within each round, with min–max, for every scheme's export", () => {
    const f = (source: FioRow["source"], scheme: string, iops: number[]): FioRow => {
      const s = [...iops].sort((a, b) => a - b);
      return { source, scheme, transport: "nbd", cache: "writeback", workload: "rand4k-per-cluster", phase: "post-snapshot", iodepth: 16, writes: 100, iops: s[1]!, iops_min: s[0], iops_max: s[2], clat_p50_us: 100, clat_p99_us: 300, runs: 3, reps: iops.map((x) => ({ iops: x, clat_p50_us: 100, clat_p99_us: 300 })) };
    };
    const qemu = [1000, 4000, 2000];
    const fio = [f("refcow", "eager", [1500, 2000, 5000]), f("refcow", "log", [3000, 3000, 3000]), f("qemu", "std", qemu)];
    const rows = fioDepthRows(fio);
    const cell = (who: string) => rows.find((r) => r[2] === who)!;
    expect(cell("refcow nbd, eager")[7]).toBe(byRounds([1500, 2000, 5000], qemu));
    expect(cell("refcow nbd, log")[7]).toBe(byRounds([3000, 3000, 3000], qemu));
    expect(cell("refcow nbd, log")[3]).toBe("3000");
    expect(cell("qemu-nbd (QEMU std)")[7]).toBe("1 (base)");
  });
});

describe("the guest section", () => {
  const run = (scheme: string, rep: number, inMs: number, postMs: number): GuestResult => ({
    scheme,
    cache: "writeback",
    workload: "rand4k",
    savevm: true,
    bootMs: 200,
    warm: true,
    rep,
    phases: [
      { name: "in-place", reads: 0, writes: 100, flushes: 1, write_median_us: 300, write_p99_us: 900, duration_ms: inMs },
      { name: "post-snapshot", reads: 0, writes: 100, flushes: 1, write_median_us: 900, write_p99_us: 2000, duration_ms: postMs },
    ],
  });

  it("ranks by amortized cost per write, never sets another row in for a missing host row, and names a failed scheme", () => {
    const guest = [run("eager", 1, 30, 90), run("eager", 2, 40, 60), run("eager", 3, 20, 100), run("log", 1, 30, 33), run("log", 2, 30, 36), run("log", 3, 30, 30)];
    // The host has eager only through NBD and with QEMU's flush order: neither is the guest's twin.
    const rows = [row("refcow", "eager", "nbd", "writeback", "in-place", [1, 1, 1]), row("refcow", "eager", "nbd", "writeback", "post-snapshot", [5, 5, 5]), { ...row("refcow", "eager", "ring", "writeback", "post-snapshot", [9, 9, 9]), order: "qemu" as const }];
    rows.push(row("refcow", "log", "ring", "writeback", "in-place", [10, 20, 10]), row("refcow", "log", "ring", "writeback", "post-snapshot", [11, 30, 12]));
    const t = guestRatioTable(guest, rows);
    const eager = t.body.find((r) => r[0] === "eager")!;
    // Per run: 90/30, 60/40, 100/20 (amortized = wall ÷ writes; the writes cancel).
    expect(eager[2]).toBe(byRounds([90, 60, 100], [30, 40, 20]));
    expect(eager[3]).toBe("missing (no ring row)");
    const log = t.body.find((r) => r[0] === "log")!;
    expect(log[3]).toBe(byRounds([11, 30, 12], [10, 20, 10]));
    expect(t.head.slice(2, 4).every((h) => /amortized/.test(h) && /per (run|round)/.test(h))).toBe(true);
    const ranking = guestRanking(guest, rows).join(" ");
    expect(ranking).toContain("cheapest first by amortized µs per write — guest: log 330, eager 900");
    expect(ranking).toContain("the host's ring row is missing for eager");
    const failed: FailedSource[] = [1, 2, 3].map((r) => ({ part: "guest", name: "owner (guest)", source: "refcow", scheme: "owner", cache: "writeback", workload: "guest-rand4k", round: r, reason: "guest did not answer" }));
    expect(guestRanking(guest, rows, failed).join(" ")).toBe("writeback: no ranking of the schemes in the guest: owner (every run failed).");
  });
});

describe("the answer's verdict", () => {
  it("says a scheme removes the slowdown only when its post-snapshot write costs no more than in place, its close counted", () => {
    const rows = matrix(["writeback"]).map((r) =>
      r.scheme === "log" && r.transport === "ring" && r.phase === "post-snapshot" ? row("refcow", "log", "ring", "writeback", "post-snapshot", [41, 82, 52], [42, 83, 53]) : r,
    );
    const text = buildAnswer({ rows }).summary.join(" ");
    // Per round 41/40, 82/80, 52/50 = 1.025, 1.025, 1.04; with the close 42/41, 83/81, 53/51.
    expect(text).toContain(`The scheme that removes it is log, with the lowest post-snapshot amortized cost per write of the schemes: in writeback ${byRounds([41, 82, 52], IN)} its in-place cost.`);
    const deferring = rows.map((r) => (r.scheme === "log" && r.transport === "ring" && r.phase === "post-snapshot" ? row("refcow", "log", "ring", "writeback", "post-snapshot", [41, 82, 52], [90, 160, 100]) : r));
    const t2 = buildAnswer({ rows: deferring }).summary.join(" ");
    expect(t2).not.toContain("removes it");
    expect(t2).toContain(`log in writeback (${byRounds([41, 82, 52], IN)} its in-place cost, ${byRounds([90, 160, 100], [41, 81, 51])} counting its close, which carries work it deferred)`);
    expect(sentences(t2)).toHaveLength(3);
  });
});
