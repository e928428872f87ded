/**
 * ImagePool's threads: one worker thread per image open at the same time, each image served by its own
 * thread, and the threads of closed images reused for the images opened next (no thread per open).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Qcow2Image } from "../../src/open/qcow2.js";
import { NodeFile } from "../../src/io/node-file.js";
import { ImagePool } from "../../src/worker/index.js";

let dir: string;
const pool = new ImagePool();

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-pool-test-"));
});
afterAll(async () => {
  await pool.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

function image(name: string): string {
  const p = path.join(dir, name);
  const f = NodeFile.open(p, { create: true });
  Qcow2Image.create(f, { size: 1 << 20 });
  f.close();
  return p;
}

describe("ImagePool threads", () => {
  it("serves images open together from distinct threads and reuses the threads of closed images", async () => {
    const files = ["a", "b", "c"].map((n) => image(`${n}.qcow2`));
    const first = await Promise.all(files.map((f) => pool.open(f)));
    const ids = first.map((c) => c.serverId);
    expect(new Set(ids).size).toBe(3);
    for (const [i, c] of first.entries()) expect(pool.workerOf(c)?.threadId).toBe(ids[i]);
    await Promise.all(first.map((c, i) => c.write(0, new Uint8Array(512).fill(i + 1))));
    await Promise.all(first.map((c) => c.close()));
    expect(pool.openImages).toBe(0);

    // Two at a time now: both on threads that already existed.
    const second = await Promise.all(files.slice(0, 2).map((f) => pool.open(f)));
    for (const c of second) expect(ids).toContain(c.serverId);
    expect(new Set(second.map((c) => c.serverId)).size).toBe(2);
    const back = await Promise.all(second.map((c) => c.read(0, 512)));
    expect(back.map((b) => b[0])).toEqual([1, 2]);
    await Promise.all(second.map((c) => c.close()));
  });
});
