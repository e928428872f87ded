/**
 * fio's random-write job (nbd-fio --pattern randwrite) checked by oracles that did not write it: fio's own
 * count of writes and flushes, and qemu-img map of a fresh image served by qemu-nbd — the job writes 4 KiB
 * blocks only inside its region, the same blocks every run, and each block once.
 */
import { afterAll, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runFioRandwrite, type RandwriteJob } from "../../src/bench/fio.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-fio-randwrite-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The 4 KiB blocks qemu-img map sees allocated in `image` (a cluster size of 4 KiB: one block, one cluster). */
function allocatedBlocks(image: string): number[] {
  const map = JSON.parse(execFileSync("qemu-img", ["map", "--output=json", image]).toString()) as Array<{ start: number; length: number; data: boolean }>;
  const out: number[] = [];
  for (const e of map) if (e.data) for (let o = e.start; o < e.start + e.length; o += 4096) out.push(o / 4096);
  return out;
}

/** Runs `job` against qemu-nbd on a fresh 4 MiB image with 4 KiB clusters; the blocks it wrote. */
async function blocksWritten(name: string, job: RandwriteJob, cache: string): Promise<{ blocks: number[]; writes: number; syncs: number }> {
  const image = path.join(dir, `${name}.qcow2`);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image, String(4 << 20)]);
  const sock = path.join(dir, `${name}.sock`);
  const server = spawn("qemu-nbd", ["-t", "-k", sock, "-f", "qcow2", `--cache=${cache}`, image], { stdio: "ignore" });
  const exited = new Promise((r) => server.once("exit", r));
  let r;
  try {
    for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((res) => setTimeout(res, 25));
    r = await runFioRandwrite(sock, job, 4, path.join(dir, name));
  } finally {
    server.kill("SIGTERM");
    await exited;
  }
  // Read once the server has closed the image (it holds its lock while it runs).
  return { blocks: allocatedBlocks(image), writes: r.writes, syncs: r.syncs };
}

describe("fio randwrite job", () => {
  it("writes `writes` distinct 4 KiB blocks inside its region, the same ones every run, with flushes only when fsyncEvery asks", async () => {
    const job: RandwriteJob = { region: 1 << 20, bs: 4096, writes: 128, fsyncEvery: 32, seed: 1234 };
    const a = await blocksWritten("a", job, "writeback");
    const b = await blocksWritten("b", job, "writeback");
    expect(a.writes).toBe(128);
    // fio flushes at least every fsyncEvery writes (at depth, its own count shows more: it may flush sooner).
    expect(a.syncs).toBeGreaterThanOrEqual(4);
    expect(a.blocks).toHaveLength(128); // each block once: fio's random map
    expect(Math.max(...a.blocks)).toBeLessThan((1 << 20) / 4096);
    expect(b.blocks).toEqual(a.blocks);
    const other = await blocksWritten("c", { ...job, fsyncEvery: 0 }, "writethrough");
    expect(other.syncs).toBe(0);
    expect(other.blocks).toEqual(a.blocks);
  }, 60_000);
});
