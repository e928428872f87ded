/**
 * The remote boot benchmark's parts that can be judged without booting an OS (src/bench/remote-boot*.ts,
 * slow-http-server.ts, xhr-over-fetch.ts):
 *  - the slowed server serves the bytes of its files: QEMU's curl driver reads a served image equal to
 *    the file (qemu-img compare), curl's ranges equal the file's bytes; its counters are what was asked;
 *    bad ranges and names get 400/416/404;
 *  - v86, loaded under withXhrLoader in a fresh process, reads an `hda: { url, async: true,
 *    fixed_chunk_size }` disk over HTTP with the fetch-based XMLHttpRequest (the server sees its range
 *    requests, by whole chunks), and without it reads nothing over HTTP;
 *  - the report: per-repetition ratios against the targets, a failed run as a row with its reason.
 * No timing is asserted.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureGuestImage, guestImagePaths, v86WasmPath } from "../../src/guest/guest-image.js";
import { formatRemoteBootReport, type CaseResult } from "../../src/bench/remote-boot.js";
import type { RemoteBootRun } from "../../src/bench/remote-boot-run.js";
import { parseByteRange, startSlowHttpServer, type SlowHttpServer } from "../../src/bench/slow-http-server.js";

const MiB = 2 ** 20;
// The server runs in this process: its clients must not block the event loop (no execFileSync).
const run = promisify(execFile);
const bytesOf = async (cmd: string, args: string[]) => (await run(cmd, args, { encoding: "buffer", maxBuffer: 16 * MiB })).stdout;
const dir = mkdtempSync(path.join(tmpdir(), "refcow-remote-boot-"));
const data = randomBytes(3 * MiB + 1234);
writeFileSync(path.join(dir, "disk.img"), data);
let server: SlowHttpServer;

beforeAll(async () => {
  server = await startSlowHttpServer({ root: dir, delayMs: 1, bytesPerSecond: 200e6 });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("slow-http-server", () => {
  it("serves the file's bytes to QEMU's curl driver and to curl, and counts what it sent", async () => {
    server.stats(true);
    const url = server.url("disk.img");
    const cmp = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", `json:${JSON.stringify({ driver: "raw", file: { driver: "http", url } })}`, path.join(dir, "disk.img")], { encoding: "utf8" });
    expect(cmp.stdout).toContain("Images are identical");

    server.stats(true);
    const part = await bytesOf("curl", ["-s", "-r", "1000-70999", url]);
    expect(Buffer.compare(part, data.subarray(1000, 71000))).toBe(0);
    const tail = await bytesOf("curl", ["-s", "-r", `${data.length - 10}-`, url]);
    expect(Buffer.compare(tail, data.subarray(data.length - 10))).toBe(0);
    const head = (await bytesOf("curl", ["-s", "-I", url])).toString();
    expect(head).toMatch(/accept-ranges: bytes/i);
    expect(head).toMatch(new RegExp(`content-length: ${data.length}`, "i"));
    expect(head).toMatch(/etag: "/i);
    const s = server.stats(true);
    expect(s.requests).toBe(3);
    expect(s.bytes).toBe(70_000 + 10);
    expect(s.log.map((r) => [r.method, r.range])).toEqual([
      ["GET", [1000, 70999]],
      ["GET", [data.length - 10, data.length - 1]],
      ["HEAD", undefined],
    ]);
  });

  it("answers a range past the end with 416, several ranges with 400, an unknown or nested name with 404", async () => {
    const status = async (args: string[]) => (await bytesOf("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", ...args])).toString();
    expect(await status(["-r", `${data.length}-`, server.url("disk.img")])).toBe("416");
    expect(await status(["-r", "0-1,5-6", server.url("disk.img")])).toBe("400");
    expect(await status([server.url("nothing.img")])).toBe("404");
    expect(await status(["--path-as-is", `http://127.0.0.1:${server.port}/../${path.basename(dir)}/disk.img`])).toBe("404");
    expect(parseByteRange("bytes=5-", 10)).toEqual({ first: 5, last: 9 });
    expect(parseByteRange("bytes=5-100", 10)).toEqual({ first: 5, last: 9 });
    expect(parseByteRange("bytes=-5", 10)).toBeUndefined();
    expect(parseByteRange("bytes=7-3", 10)).toBeUndefined();
    expect(parseByteRange("bytes=10-", 10)).toBe("unsatisfiable");
    expect(parseByteRange("bytes=10-12", 10)).toBe("unsatisfiable");
  });
});

describe("v86's AsyncXHRBuffer in Node, under withXhrLoader", () => {
  beforeAll(async () => {
    await ensureGuestImage({ onProgress: (l) => process.stderr.write(l + "\n") });
  }, 15 * 60_000);

  /**
   * Starts v86 in a fresh process with `hda` the served disk and waits for the server to see a request
   * (the BIOS reads the boot sector), or for 60 s; returns the server's log.
   */
  async function v86Reads(withXhr: boolean) {
    const g = guestImagePaths();
    const xhrModule = pathToFileURL(path.resolve("dist/bench/xhr-over-fetch.js")).href;
    const script = `
      const { withXhrLoader } = await import(${JSON.stringify(xhrModule)});
      const load = () => import("v86");
      const { V86 } = ${withXhr ? "await withXhrLoader(load)" : "await load()"};
      const fs = await import("node:fs");
      const buf = (f) => { const b = fs.readFileSync(f); return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); };
      new V86({ wasm_path: ${JSON.stringify(v86WasmPath())}, memory_size: 32 << 20, vga_memory_size: 8 << 20,
        bios: { buffer: buf(${JSON.stringify(g.bios)}) }, vga_bios: { buffer: buf(${JSON.stringify(g.vgaBios)}) },
        hda: { url: ${JSON.stringify(server.url("disk.img"))}, async: true, size: ${data.length}, fixed_chunk_size: ${MiB} },
        autostart: true, disable_keyboard: true, disable_mouse: true, disable_speaker: true });
    `;
    server.stats(true);
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "inherit", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    for (let i = 0; i < 600 && server.stats().requests === 0 && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    // A moment more for the reads that follow the first.
    await new Promise((r) => setTimeout(r, 2000));
    child.kill("SIGKILL");
    await exited;
    return { log: server.stats(true).log, stderr };
  }

  it("reads the disk over HTTP by whole chunks of fixed_chunk_size", async () => {
    const { log, stderr } = await v86Reads(true);
    expect(log.length, stderr).toBeGreaterThan(0);
    expect(log[0]!.range).toEqual([0, MiB - 1]);
    for (const r of log) {
      expect(r.method).toBe("GET");
      expect(r.range![0] % MiB).toBe(0);
    }
  }, 120_000);

  it("reads nothing over HTTP without it (v86's Node loader takes the URL for a path)", async () => {
    const { log } = await v86Reads(false);
    expect(log).toEqual([]);
  }, 120_000);
});

function bootRun(source: RemoteBootRun["source"], prepMs: number, bootMs: number, rssMiB: number): RemoteBootRun {
  return { source, prepMs, boot: { ms: bootMs, cpuMs: bootMs, instructions: 2.9e9 }, peakRssBytes: rssMiB * MiB };
}

describe("formatRemoteBootReport", () => {
  const settings = { delayMs: 20, bandwidthMBps: 50, chunkMiB: 1, memoryMiB: 128, images: { rawBytes: 1024 * MiB, qcow2Bytes: 9 * MiB } };
  const results: CaseResult[] = [
    { case: "refcow-url-cold", rep: 0, run: bootRun("refcow-url", 1000, 39_000, 400), requests: 11, bytes: 9 * MiB, check: "clean" },
    { case: "refcow-url-warm", rep: 0, run: bootRun("refcow-url", 1000, 49_000, 400), requests: 2, bytes: 1024, check: "clean" },
    { case: "refcow-local", rep: 0, run: bootRun("refcow-local", 500, 39_500, 340), requests: 0, bytes: 0, check: "clean" },
    { case: "v86-xhr", rep: 0, run: { ...bootRun("v86-xhr", 500, 59_500, 360), xhr: { requests: 18, bytes: 27 * MiB } }, requests: 18, bytes: 27 * MiB },
    { case: "refcow-url-cold", rep: 1, error: "the run exited with status 1: boom" },
    { case: "refcow-url-warm", rep: 1, run: bootRun("refcow-url", 1000, 39_000, 400), requests: 2, bytes: 1024, check: "clean" },
    { case: "refcow-local", rep: 1, run: bootRun("refcow-local", 500, 39_500, 340), requests: 0, bytes: 0, check: "clean" },
    { case: "v86-xhr", rep: 1, run: { ...bootRun("v86-xhr", 500, 39_500, 360), xhr: { requests: 18, bytes: 27 * MiB } }, requests: 18, bytes: 27 * MiB },
  ];
  const text = formatRemoteBootReport(["refcow-url-cold", "refcow-url-warm", "refcow-local", "v86-xhr"], results, 2, settings);

  it("judges each target on the ratios of the repetitions both sides have", () => {
    // Cold vs v86: only repetition 1 has both (repetition 2's cold run failed).
    expect(text).toMatch(/time to prompt, refcow-url-cold \/ v86-xhr: 0\.67× +\[per repetition: 0\.67, -\] +target <= 0\.7: met/);
    expect(text).toMatch(/bytes fetched, refcow-url-cold \/ v86-xhr: 0\.33× +\[per repetition: 0\.33, -\] +target <= 0\.5: met/);
    // Warm vs local: 50/40 and 40/40 (the median of two is the lower, src/stats's nearest rank).
    expect(text).toMatch(/time to prompt, refcow-url-warm \/ refcow-local: 1\.00× \(1\.00–1\.25\) +\[per repetition: 1\.25, 1\.00\] +target <= 1\.2: met/);
  });

  it("shows a failed run with its reason, and the server's counts", () => {
    expect(text).toMatch(/refcow-url-cold \(1 failed: rep 2: the run exited with status 1: boom\)/);
    const v86Row = text.split("\n").find((l) => l.startsWith("v86-xhr "))!;
    expect(v86Row).toMatch(/ 18 \(18–18\) +27\.0 \(27\.0–27\.0\) /);
    expect(text).toContain("v86's XHR loader's own counts (cross-check): 18 requests, 27.0 MiB; 18 requests, 27.0 MiB");
  });
});

