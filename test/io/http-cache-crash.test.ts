/**
 * The persistent chunk cache across a SIGKILL in the middle of filling it: every chunk file left behind is
 * whole and right (or absent), a torn chunk planted where the storage could have left one is never served,
 * and the next open reads the right bytes, fetching only what the cache lacks.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { decodeChunkFile } from "../../src/io/disk-chunk-store.js";
import { HttpFile } from "../../src/io/http-file.js";
import { ROOT } from "../cli/qemu-harness.js";
import { startHttpServer, type TestHttpServer } from "../helpers/http-server.js";
import { tempDir } from "../helpers/qemu.js";

const CHUNK = 64 * 1024;
const CHUNKS = 48;
let dir: string;
let server: TestHttpServer;
let content: Buffer;

beforeAll(async () => {
  dir = tempDir("http-cache-crash");
  content = Buffer.alloc(CHUNKS * CHUNK);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE(Math.imul(i + 1, 0x9e3779b1) >>> 0, i);
  fs.mkdirSync(path.join(dir, "srv"));
  fs.writeFileSync(path.join(dir, "srv", "disk.raw"), content);
  server = await startHttpServer(path.join(dir, "srv"));
});

afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A reader process filling the cache chunk by chunk, killed with SIGKILL once it has read `after` chunks. */
async function killMidFill(cacheDir: string, after: number): Promise<void> {
  const script = `
    import { HttpFile } from ${JSON.stringify(path.join(ROOT, "dist/io/http-file.js"))};
    const f = HttpFile.open(${JSON.stringify(server.url("disk.raw"))}, { chunkSize: ${CHUNK}, cacheDir: ${JSON.stringify(cacheDir)}, readAheadChunks: 4 });
    const buf = new Uint8Array(${CHUNK});
    for (let i = 0; i < ${CHUNKS}; i++) { f.read(buf, i * ${CHUNK}); console.log("read " + i); }
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  let lines = 0;
  await new Promise<void>((resolve) => {
    child.stdout.on("data", (d: Buffer) => {
      lines += d.toString().split("\n").filter((l) => l.startsWith("read")).length;
      if (lines >= after && child.exitCode === null) child.kill("SIGKILL");
    });
    child.on("exit", () => resolve());
  });
  expect(lines).toBeLessThan(CHUNKS); // it died mid-fill
}

it("survives a SIGKILL mid-fill and serves no torn chunk", async () => {
  const cacheDir = path.join(dir, "cache");
  // Slow answers so that the kill lands while chunks are being fetched and written.
  await server.configure({ delayMs: 40 });
  await killMidFill(cacheDir, 12);
  await server.configure({ delayMs: 0 });
  // The server counts a range when it answers, after its delay: let the dead reader's last requests be
  // counted before the counters are reset below.
  await new Promise((r) => setTimeout(r, 500));

  const [key] = fs.readdirSync(cacheDir);
  const objectDir = path.join(cacheDir, key);
  const chunkFiles = fs.readdirSync(objectDir).filter((n) => n.endsWith(".chunk"));
  expect(chunkFiles.length).toBeGreaterThan(0);
  for (const name of chunkFiles) {
    const index = Number(name.split(".")[0]);
    const payload = decodeChunkFile(fs.readFileSync(path.join(objectDir, name)), CHUNK);
    expect(payload && Buffer.from(payload).equals(content.subarray(index * CHUNK, (index + 1) * CHUNK))).toBe(true);
  }
  // What a power cut could leave: a chunk whose tail never reached the disk, and one with a flipped byte.
  const first = chunkFiles[0];
  const torn = path.join(objectDir, first);
  fs.truncateSync(torn, 40 + CHUNK / 2);
  const missing = Array.from({ length: CHUNKS }, (_, i) => i).find((i) => !chunkFiles.includes(`${i}.chunk`))!;
  const forged = fs.readFileSync(path.join(objectDir, chunkFiles[1] ?? first));
  forged[40 + 7] ^= 1;
  fs.writeFileSync(path.join(objectDir, `${missing}.chunk`), forged);

  // The chunks the reader can take from the cache: every whole chunk file there now (the torn and the forged
  // one excepted), counted again here rather than from the listing above, so that a file the killed reader's
  // last write left behind is counted as the cache holds it.
  const valid = fs
    .readdirSync(objectDir)
    .filter((n) => n.endsWith(".chunk"))
    .filter((n) => {
      const payload = decodeChunkFile(fs.readFileSync(path.join(objectDir, n)), CHUNK);
      const index = Number(n.split(".")[0]);
      return payload !== undefined && payload !== null && Buffer.from(payload).equals(content.subarray(index * CHUNK, (index + 1) * CHUNK));
    });
  await server.stats(true);
  const f = HttpFile.open(server.url("disk.raw"), { chunkSize: CHUNK, cacheDir, readAheadChunks: 0 });
  try {
    const all = Buffer.alloc(content.length);
    for (let i = 0; i < CHUNKS; i++) f.read(all.subarray(i * CHUNK, (i + 1) * CHUNK), i * CHUNK);
    expect(all.equals(content)).toBe(true);
    // Chunk requests (the open's one-byte probe left out), by chunk index.
    const fetched = (await server.stats()).ranges.filter(([, a, b]) => b - a + 1 === CHUNK).map(([, a]) => a / CHUNK);
    const fromCache = valid.length;
    expect(fromCache).toBeGreaterThanOrEqual(chunkFiles.length - 1); // all but the torn one
    expect(f.wireStats().storeHits).toBe(fromCache);
    expect(fetched).toContain(Number(first.split(".")[0]));
    expect(fetched).toContain(missing);
    expect(fetched.length).toBe(CHUNKS - fromCache); // only what the cache lacked
  } finally {
    f.close();
  }
});
