/**
 * The baselines against oracles outside the bench: strace sees the raw file synced before the first timed
 * write and the flushes the load generator sends; strace of qemu-nbd sees QEMU 7.2's fdatasyncs per
 * post-snapshot write, which `eager --order qemu` reproduces and refcow's own order does not; qemu-img map
 * sees fio's replay write exactly the requested clusters; a missing qemu-nbd fails the bench unless asked.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { runFio } from "../../src/bench/fio.js";
import { CLUSTER, WRITE, writeOffsets, runWritePhase } from "../../src/bench/load.js";
import { betweenPhases, prepareFile } from "../../src/bench/sources.js";
import type { SourceSpec } from "../../src/report/results.js";
import { NbdClient } from "../../src/nbd/client.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-baselines-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const dist = (p: string) => fileURLToPath(new URL(`../../dist/${p}`, import.meta.url));

interface Call {
  call: string;
  file: string;
  length?: number;
}

/** strace -y lines of pwrite64 and fdatasync, in order, with the path of the descriptor. */
function straceCalls(log: string): Call[] {
  const out: Call[] = [];
  for (const line of fs.readFileSync(log, "utf8").split("\n")) {
    // A call another thread interrupted ends in "<unfinished ...>"; its arguments are all on this line.
    const m = /(pwrite64|fdatasync)\(\d+<([^>]+)>(?:, .*, (\d+), \d+(?:\)| <unfinished))?/.exec(line);
    if (m) out.push({ call: m[1]!, file: m[2]!, length: m[3] ? Number(m[3]) : undefined });
  }
  return out;
}

describe("raw file baseline", () => {
  for (const cache of ["writeback", "writethrough"] as const) {
    it(`is synced before the clock starts, and flushed where the load generator says (${cache})`, () => {
      const log = path.join(dir, `raw-${cache}.strace`);
      const script = `
        import { runMatrix } from ${JSON.stringify(dist("bench/matrix.js"))};
        import { defaultOptions } from ${JSON.stringify(dist("bench/options.js"))};
        const o = { ...defaultOptions(true), clusters: 8, reps: 1, schemes: [], caches: [${JSON.stringify(cache)}], workloads: ["seq"],
          qemu: false, qemuOrder: false, fio: false, fioDepths: [], opSizes: [], dir: ${JSON.stringify(path.join(dir, `m-${cache}`))} };
        const r = await runMatrix(o);
        if (r.failed.length) { console.error(r.failed.map((f) => f.reason).join("\\n")); process.exit(1); }`;
      const r = spawnSync("strace", ["-f", "-y", "-qq", "-e", "trace=pwrite64,fdatasync", "-o", log, process.execPath, "--input-type=module", "-e", script], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      const calls = straceCalls(log);
      for (const transport of ["direct", "ring"]) {
        const mine = calls.filter((c) => c.file.endsWith(`raw-none-${transport}-${cache}-seq.img`));
        const lastPrep = mine.map((c) => c.length).lastIndexOf(CLUSTER);
        const firstTimed = mine.findIndex((c) => c.length === WRITE);
        expect(lastPrep, transport).toBeGreaterThanOrEqual(0);
        expect(firstTimed, transport).toBeGreaterThan(lastPrep);
        // The file is fdatasynced between its preparation and the first timed write.
        expect(mine.slice(lastPrep, firstTimed).some((c) => c.call === "fdatasync"), transport).toBe(true);
        const timedSyncs = mine.slice(firstTimed).filter((c) => c.call === "fdatasync").length;
        // Three phases of 8 writes: writeback flushes once per phase (every 64 writes and the last), writethrough after every write.
        expect(timedSyncs, transport).toBe(cache === "writeback" ? 3 : 24);
        expect(mine.filter((c) => c.length === WRITE)).toHaveLength(24);
      }
    }, 60_000);
  }
});

/** Counts fdatasync calls on `file` in an strace -y log. */
const syncsOn = (log: string, file: string) => straceCalls(log).filter((c) => c.call === "fdatasync" && c.file === file).length;

describe("QEMU's flush policy", () => {
  const n = 64;
  it("eager --order qemu issues about as many fdatasyncs per post-snapshot write as qemu-nbd (strace), refcow's order far fewer", async () => {
    const offsets = writeOffsets(n, "rand4k-per-cluster", 7);
    const data = new Uint8Array(WRITE).fill(3);
    // QEMU: qemu-nbd under strace, driven by the load generator's NBD client.
    const qemuImage = path.join(dir, "q.qcow2");
    const spec: SourceSpec = { source: "qemu", scheme: "std", transport: "nbd" };
    prepareFile(spec, qemuImage, n);
    betweenPhases(spec, qemuImage, "snapshot");
    const qlog = path.join(dir, "q.strace");
    const sock = path.join(dir, "q.sock");
    const server = spawn("strace", ["-f", "-y", "-qq", "-e", "trace=fdatasync", "-o", qlog, "qemu-nbd", "-t", "-k", sock, "-f", "qcow2", "--cache=writeback", qemuImage], { stdio: "ignore" });
    const exited = new Promise((r) => server.once("exit", r));
    let client: NbdClient | undefined;
    for (let i = 0; i < 200 && !client; i++) {
      await new Promise((r) => setTimeout(r, 25));
      client = await NbdClient.connect(sock).catch(() => undefined);
    }
    expect(client).toBeDefined();
    const before = fs.existsSync(qlog) ? syncsOn(qlog, qemuImage) : 0;
    await runWritePhase(client!, "writeback", offsets, data);
    await client!.close();
    const qemuSyncs = syncsOn(qlog, qemuImage) - before;
    execFileSync("pkill", ["-TERM", "-P", String(server.pid)]); // qemu-nbd is strace's child
    await exited;
    // refcow in-process under strace, both orders, on images prepared the same way.
    const refcowSyncs: Record<string, number> = {};
    for (const order of ["qemu", "refcow"]) {
      const image = path.join(dir, `r-${order}.qcow2`);
      const rspec: SourceSpec = { source: "refcow", scheme: "eager", transport: "in-process" };
      prepareFile(rspec, image, n);
      betweenPhases(rspec, image, "snapshot");
      const log = path.join(dir, `r-${order}.strace`);
      const script = `
        import { openImagePath } from ${JSON.stringify(dist("open/open-path.js"))};
        const img = openImagePath(${JSON.stringify(image)}, { scheme: "eager", order: ${JSON.stringify(order)}, cache: "writeback" });
        const offsets = ${JSON.stringify(offsets)};
        const data = new Uint8Array(${WRITE}).fill(3);
        offsets.forEach((o, i) => { img.write(o, data); if ((i + 1) % 64 === 0 || i === offsets.length - 1) img.flush(); });
        img.close();`;
      const r = spawnSync("strace", ["-f", "-y", "-qq", "-e", "trace=fdatasync", "-o", log, process.execPath, "--input-type=module", "-e", script], { encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      refcowSyncs[order] = syncsOn(log, image);
      expect(execFileSync("qemu-img", ["check", image]).toString()).toMatch(/No errors/);
    }
    // QEMU 7.2: about 3 per post-snapshot write in writeback (COW data, L2, refcount block).
    expect(qemuSyncs).toBeGreaterThan(2 * n);
    expect(Math.abs(refcowSyncs.qemu! - qemuSyncs)).toBeLessThanOrEqual(Math.ceil(qemuSyncs * 0.15));
    expect(refcowSyncs.refcow!).toBeLessThan(qemuSyncs / 4);
    expect(execFileSync("qemu-img", ["check", qemuImage]).toString()).toMatch(/No errors/);
  }, 60_000);
});

describe("fio cross-check", () => {
  it("replays exactly the load generator's requests (qemu-img map of a fresh image: one cluster per write)", async () => {
    const n = 20;
    const image = path.join(dir, "fio.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", image, String(2 * n * CLUSTER)]);
    const sock = path.join(dir, "fio.sock");
    const server = spawn("qemu-nbd", ["-t", "-k", sock, "-f", "qcow2", "--cache=writeback", image], { stdio: "ignore" });
    const exited = new Promise((r) => server.once("exit", r));
    for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
    const offsets = writeOffsets(n, "rand4k-per-cluster", 99, n); // clusters n..2n-1, random order
    const r = await runFio(sock, offsets, WRITE, "writeback", 1, path.join(dir, "fio-run"));
    server.kill("SIGTERM");
    await exited;
    expect(r.writes).toBe(n);
    expect(r.syncs).toBe(1);
    expect(r.clat_p50_us).toBeGreaterThan(0);
    const map = JSON.parse(execFileSync("qemu-img", ["map", "--output=json", image]).toString()) as Array<{ start: number; length: number; data: boolean }>;
    const allocated = new Set<number>();
    for (const e of map) if (e.data) for (let o = e.start; o < e.start + e.length; o += CLUSTER) allocated.add(o / CLUSTER);
    expect([...allocated].sort((a, b) => a - b)).toEqual(offsets.map((o) => Math.floor(o / CLUSTER)).sort((a, b) => a - b));
  }, 60_000);
});

describe("missing sources", () => {
  const bench = (extra: string[], out: string) =>
    spawnSync(process.execPath, [dist("cli/bin.js"), "bench", "--schemes", "eager", "--clusters", "4", "--reps", "1", "--cache", "writeback", "--workloads", "seq", "--no-ops", "--no-order-qemu", "--dir", path.join(dir, `b-${path.basename(out)}`), "--out", out, ...extra], {
      encoding: "utf8",
      env: { ...process.env, PATH: "/nonexistent" },
    });
  it("are named in the report and fail the run, unless --no-qemu asked for them to be left out", () => {
    const out = path.join(dir, "missing");
    const r = bench([], out);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/QEMU \(nbd\) not measured: qemu-img not found/);
    expect(r.stderr).toMatch(/raw file \(nbd\) not measured: qemu-nbd not found/);
    const html = fs.readFileSync(path.join(out, "report.html"), "utf8");
    expect(html).toContain("Failed and missing sources");
    expect(html).toMatch(/QEMU lazy_refcounts \(nbd\)<\/b>: qemu-img not found/);
    const asked = path.join(dir, "asked");
    const ok = bench(["--no-qemu"], asked);
    expect(ok.status, ok.stderr).toBe(0);
    expect(fs.readFileSync(path.join(asked, "report.md"), "utf8")).toMatch(/left out \(--no-qemu\)/);
  }, 60_000);
});
