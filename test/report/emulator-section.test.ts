/**
 * The report's guest-under-two-emulators table: one row per cache mode, scheme, emulator and backend, the
 * post-snapshot ÷ in-place ratio of the guest program's medians taken within each run and then over runs,
 * every run's ratio listed, the host twin's ratio beside every row (or why it is missing: its failure, no host
 * matrix), a failed run as a row with its reason;
 * and the v86-only sections keep to v86's runs.
 */
import { describe, expect, it } from "vitest";
import { emulatorTable, hasOtherEmulators } from "../../src/report/emulator-section.js";
import { guestClockTable } from "../../src/report/guest-section.js";
import { v86Failures, v86Runs } from "../../src/report/guest-results.js";
import type { FailedSource, GuestResult, ResultRow } from "../../src/report/results.js";

const col = (median: number) => ({ count: 64, median, p90: median * 1.5, p99: median * 2, max: median * 3 });

function run(over: Partial<GuestResult>, inPlace: number, post: number, rep: number): GuestResult {
  return {
    scheme: "eager",
    cache: "writeback",
    workload: "rand4k",
    savevm: false,
    bootMs: 7000,
    warm: false,
    rep,
    phases: [
      { name: "fill", reads: 0, writes: 64, flushes: 1, write_median_us: 500, write_p99_us: 900, app_us: col(500), duration_ms: 40 },
      { name: "in-place", reads: 0, writes: 64, flushes: 1, write_median_us: inPlace, write_p99_us: inPlace * 2, app_us: col(inPlace), duration_ms: (inPlace * 64) / 1000 },
      { name: "post-snapshot", reads: 0, writes: 64, flushes: 1, write_median_us: post, write_p99_us: post * 2, app_us: col(post), duration_ms: (post * 64) / 1000 },
    ],
    ...over,
  };
}

const qemu = { emulator: "qemu" as const, accel: "tcg" };
const guest: GuestResult[] = [
  run({}, 300, 600, 1),
  run({}, 300, 900, 2),
  run({ ...qemu, backend: "qemu", scheme: "qemu" }, 200, 10000, 1),
  run({ ...qemu, backend: "qemu", scheme: "qemu" }, 250, 5000, 2),
  run({ ...qemu, backend: "refcow" }, 200, 300, 1),
];
const failed: FailedSource[] = [
  { part: "guest", name: "eager (QEMU, refcow nbd)", source: "refcow", scheme: "eager", cache: "writeback", round: 2, emulator: "qemu", backend: "refcow", reason: "QEMU exited (status 1)" },
  { part: "guest", name: "eager (guest)", source: "refcow", scheme: "eager", cache: "writeback", round: 3, reason: "timed out" },
];
const hostRows: ResultRow[] = ["in-place", "post-snapshot"].map((phase) => ({
  source: "refcow",
  scheme: "eager",
  transport: "ring",
  cache: "writeback",
  workload: "rand4k-per-cluster",
  phase,
  median_us: phase === "in-place" ? 20 : 100,
  p99_us: 50,
  amortized_us: phase === "in-place" ? 20 : 100,
  runs: 2,
  reps: phase === "in-place" ? [{ median_us: 20, p99_us: 50, amortized_us: 20 }, { median_us: 20, p99_us: 50, amortized_us: 25 }] : [{ median_us: 100, p99_us: 50, amortized_us: 100 }, { median_us: 100, p99_us: 50, amortized_us: 150 }],
})) as ResultRow[];

describe("the guest under v86 and under QEMU", () => {
  it("sets each emulator and backend's post ÷ in-place side by side, per run then over runs", () => {
    const t = emulatorTable(guest, hostRows, failed);
    const rows = t.body.map((r) => r.slice(0, 12));
    // Sorted by cache, scheme (eager before qemu), v86 before QEMU.
    expect(rows.map((r) => r.slice(1, 4).join(" | "))).toEqual([
      "eager | v86 | refcow (worker ring)",
      "eager | v86 | refcow (worker ring)",
      "eager | QEMU tcg | refcow nbd",
      "eager | QEMU tcg | refcow nbd",
      "qemu | QEMU tcg | QEMU qcow2",
    ]);
    const [v86, v86Failed, nbd, nbdFailed, std] = rows;
    // v86: runs 2 and 3 ratios 2.0 and 3.0; their median is the lower middle (src/stats: nearest rank).
    expect(v86![4]).toBe("2 (+1 failed)");
    expect(v86![8]).toBe("2.00 3.00");
    expect(v86![7]).toMatch(/^2\.00× \(2\.00–3\.00\)$/);
    // The host twin's ratio per round: 100/20 and 150/25.
    expect(v86![10]).toBe("refcow eager, ring");
    expect(v86![11]).toMatch(/^5\.00× \(5\.00–6\.00\)$/);
    expect(v86Failed![4]).toBe("failed (run 3): timed out");
    expect(nbd![8]).toBe("1.50");
    expect(nbdFailed![4]).toBe("failed (run 2): QEMU exited (status 1)");
    expect(std![8]).toBe("50.00 20.00");
    expect(std![5]).toBe("200 (200–250)");
    // Beside QEMU: what its disk goes through on the host, missing here (these rows are the ring's only).
    expect(nbd![10]).toBe("refcow eager, nbd");
    expect(nbd![11]).toBe("missing: not in the host matrix");
    expect(std![10]).toBe("qemu-nbd std");
    expect(std![11]).toBe("missing: not in the host matrix");
    expect(hasOtherEmulators(guest, [])).toBe(true);
    expect(hasOtherEmulators(guest.slice(0, 2), failed.slice(1))).toBe(false);
  });

  it("sets the host twin of each backend beside it, both cache modes, and says why one is missing", () => {
    const twin = (source: "refcow" | "qemu", scheme: string, transport: "ring" | "nbd", cache: "writeback" | "writethrough", post: number): ResultRow[] =>
      hostRows.map((r) => ({ ...r, source, scheme, transport, cache, reps: r.phase === "in-place" ? r.reps : r.reps!.map((x) => ({ ...x, amortized_us: post })) }));
    const rows = [
      ...twin("refcow", "eager", "nbd", "writeback", 60),
      ...twin("qemu", "std", "nbd", "writeback", 400),
      ...twin("refcow", "eager", "ring", "writethrough", 40),
    ];
    const through = [...guest, run({ cache: "writethrough" }, 300, 450, 1), run({ ...qemu, backend: "qemu-lazy", scheme: "qemu-lazy", cache: "writethrough" }, 200, 260, 1)];
    const hostFailed: FailedSource = { part: "write matrix", name: "QEMU lazy_refcounts (nbd)", source: "qemu", scheme: "lazy_refcounts", transport: "nbd", cache: "writethrough", reason: "qemu-nbd exited" };
    const t = emulatorTable(through, rows, [hostFailed]);
    const host = Object.fromEntries(t.body.map((r) => [`${r[0]} ${r[1]} ${r[3]}`, `${r[10]}: ${r[11]}`]));
    expect(host).toEqual({
      "writeback eager refcow (worker ring)": "refcow eager, ring: missing: not in the host matrix",
      "writeback eager refcow nbd": "refcow eager, nbd: 2.40× (2.40–3.00)",
      "writeback qemu QEMU qcow2": "qemu-nbd std: 16.0× (16.0–20.0)",
      "writethrough eager refcow (worker ring)": "refcow eager, ring: 1.60× (1.60–2.00)",
      "writethrough qemu-lazy QEMU qcow2, lazy_refcounts": "qemu-nbd lazy_refcounts: failed: qemu-nbd exited",
    });
    expect(emulatorTable(guest, [], []).body[0]![11]).toBe("missing: no host matrix in these results");
  });

  it("keeps QEMU's runs out of the v86 sections", () => {
    expect(v86Runs(guest)).toHaveLength(2);
    expect(v86Failures(failed).map((f) => f.reason)).toEqual(["timed out"]);
    const clock = guestClockTable(v86Runs(guest));
    expect(clock.body.every((r) => r[3] === "2")).toBe(true);
  });
});
