/**
 * Runs one fuzz case (a mutated image) in a worker thread, so that the fuzzer's main thread can time it out
 * (a hang) and the thread's heap is bounded (runaway allocation). Bundled by esbuild at test time.
 *
 * For each image: the engine opens it read-only and read-write (with the scheme and cache mode of the case),
 * reads everything (bounded), writes a little, takes and applies snapshots, checks, maps, closes; then the CLI
 * commands run in-process on a file copy. What must hold:
 *   - only the engine's own errors come out of the engine, and the CLI never reports an internal error;
 *   - a read-only open never writes;
 *   - an image refused at open is not written at all; once the engine has judged an open image corrupt
 *     (an ImageFormatError), nothing more is written to it but the corrupt bit of the header;
 *   - an image refused by a CLI command's open is left as it was.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parentPort } from "node:worker_threads";
import { openImagePath } from "../../src/open/open-path.js";
import { Qcow2Image } from "../../src/open/qcow2.js";
import type { SyncDisk } from "../../src/disk/sync-disk.js";
import type { CacheMode } from "../../src/engine/types.js";
import { MemoryFile } from "../../src/io/memory-file.js";
import { main } from "../../src/cli/main.js";
import { takeInternalErrors } from "../../src/cli/errors.js";

export interface FuzzCase {
  id: number;
  bytes: Uint8Array;
  /** Directory holding the backing file and the seed images. */
  dir: string;
  seedFile: string;
  scheme: string;
  cache: CacheMode;
  cli: boolean;
}

export interface FuzzOutcome {
  id: number;
  problems: string[];
  /** What the engine said about the image (first error), for statistics. */
  verdict: string;
  ops: number;
}

const ENGINE_ERRORS = new Set(["ImageFormatError", "UnsupportedFeatureError", "RequestError", "SnapshotError", "ClosedError", "IoError"]);
const MiB = 1 << 20;
/** Byte 79 holds bits 0-7 of the incompatible features: bit 1 is "corrupt". */
const CORRUPT_BYTE = 79;
const CORRUPT_BIT = 0x02;

function sameExceptCorruptBit(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    if (i === CORRUPT_BYTE && (a[i] | CORRUPT_BIT) === (b[i] | CORRUPT_BIT)) continue;
    return false;
  }
  return true;
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

function describe(e: unknown): string {
  const err = e as Error;
  return `${err?.name}: ${err?.message}\n${(err?.stack ?? "").split("\n").slice(1, 14).join("\n")}`;
}

class Run {
  problems: string[] = [];
  verdict = "accepted";
  ops = 0;

  /** Runs `op`; an error that is not the engine's is a problem. Returns the error's name, or undefined. */
  attempt(what: string, op: () => unknown): string | undefined {
    this.ops++;
    try {
      op();
      return undefined;
    } catch (e) {
      const name = (e as Error)?.name ?? typeof e;
      if (!ENGINE_ERRORS.has(name)) this.problems.push(`${what}: ${describe(e)}`);
      else if (this.verdict === "accepted") this.verdict = `${what}: ${name}: ${(e as Error).message}`;
      return name;
    }
  }
}

function backingOpener(dir: string) {
  return (name: string, fmt: string | undefined): SyncDisk => {
    const p = path.isAbsolute(name) ? name : path.join(dir, name);
    return openImagePath(p, { readOnly: true, format: fmt === "raw" || fmt === "qcow2" ? fmt : undefined });
  };
}

/** Bounded reads over a disk (or one of its snapshots): the start, and 64 KiB at spread-out places. */
function readAround(size: number, read: (off: number, len: number) => void): void {
  for (let off = 0; off < Math.min(size, 4 * MiB); off += MiB) read(off, Math.min(MiB, size - off));
  for (let k = 1; k <= 8; k++) {
    const off = Math.floor((size * k) / 9 / 512) * 512;
    read(off, Math.min(65536, size - off));
  }
  if (size >= 512) read(size - 512, 512);
}

function engineReadOnly(run: Run, c: FuzzCase): void {
  const file = new MemoryFile(c.bytes, { readOnly: true, name: "mutant" });
  for (const m of ["write", "truncate"] as const) {
    const original = file[m].bind(file) as (...a: unknown[]) => void;
    file[m] = ((...a: unknown[]) => {
      run.problems.push(`a read-only open called ${m}() on the image`);
      original(...a);
    }) as never;
  }
  let img: Qcow2Image | undefined;
  const err = run.attempt("open read-only", () => {
    img = Qcow2Image.open(file, { readOnly: true, openBacking: backingOpener(c.dir) });
  });
  if (err || !img) return;
  const i = img;
  run.attempt("info", () => i.info());
  run.attempt("read", () => readAround(i.size, (o, n) => i.read(o, n)));
  run.attempt("check", () => i.check());
  run.attempt("map", () => i.map());
  for (const sn of i.snapshotList().slice(0, 4)) {
    run.attempt(`read snapshot ${sn.id}`, () => {
      const buf = new Uint8Array(65536);
      readAround(i.size, (o, n) => i.readSnapshot(sn.id, n === buf.length ? buf : new Uint8Array(n), o));
    });
    run.attempt(`read VM state of ${sn.id}`, () => {
      if (sn.vmStateSize <= 4 * MiB) i.readVmState(sn.id);
    });
  }
  run.attempt("close read-only", () => i.close());
}

function engineReadWrite(run: Run, c: FuzzCase): void {
  const file = new MemoryFile(c.bytes, { name: "mutant" });
  let img: Qcow2Image | undefined;
  const err = run.attempt(`open read-write (${c.scheme}, ${c.cache})`, () => {
    img = Qcow2Image.open(file, { scheme: c.scheme, cache: c.cache, openBacking: backingOpener(c.dir) });
  });
  if (err || !img) {
    if (!same(file.contents(), c.bytes)) run.problems.push(`open refused the image (${run.verdict}) but wrote to it`);
    return;
  }
  const i = img;
  let judged: Uint8Array | undefined;
  let judgedBy = "";
  const op = (what: string, fn: () => unknown) => {
    run.attempt(what, fn);
    if (i.corrupt && !judged) {
      judged = file.contents();
      judgedBy = what;
    }
  };
  const cs = i.clusterSize;
  const size = i.size;
  const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
  op("read", () => readAround(size, (o, n) => i.read(o, n)));
  op("write", () => size >= 4096 && i.write(Math.floor(size / 3 / 512) * 512, fill(4096, 0x5a)));
  op("write at 0", () => size >= 512 && i.write(0, fill(512, 0x6b)));
  op("write zeroes", () => size >= 2 * cs && i.writeZeroes(cs, Math.min(2 * cs, size - cs), { unmap: true }));
  op("discard", () => size >= 2 * cs && i.discard(0, cs));
  op("snapshot create", () => i.snapshotCreate("fuzz"));
  op("snapshot list", () => i.snapshotList());
  const first = i.core.snapshots[0];
  op("snapshot apply", () => first && i.snapshotApply(first.id));
  op("snapshot delete", () => i.snapshotDelete("fuzz"));
  op("write after snapshots", () => size >= 8192 && i.write(size - 8192, fill(8192, 0x7c)));
  op("flush", () => i.flush());
  op("check", () => i.check());
  op("read again", () => readAround(size, (o, n) => i.read(o, n)));
  op("close", () => i.close());
  if (judged && !sameExceptCorruptBit(judged, file.contents())) {
    run.problems.push(`the engine judged the image corrupt (at '${judgedBy}') and then wrote more than the corrupt bit`);
  }
}

async function cli(run: Run, c: FuzzCase): Promise<void> {
  const file = path.join(c.dir, `mutant-${c.id}.qcow2`);
  const other = path.join(c.dir, `mutant-${c.id}.out.qcow2`);
  const io = { out: (_: string) => {}, err: (t: string) => void (stderr += t) };
  let stderr = "";
  takeInternalErrors();
  const commands: [string[], boolean][] = [
    [["info", file], true],
    [["info", "--output=json", "--backing-chain", file], true],
    [["check", file], true],
    [["check", "--output=json", file], true],
    [["map", file], true],
    [["map", "--output=json", file], true],
    [["snapshot", "-l", file], true],
    [["compare", file, c.seedFile], true],
    [["convert", "-O", "qcow2", file, other], true],
    [["io", "--in-process", "-c", "read 0 64k", "-c", "read -v 0 512", "-c", "map", file], false],
    [["convert", "-O", "raw", file, other], true],
    [["io", "--in-process", "-c", "write -P 0x42 0 4k", "-c", "read -P 0x42 0 4k", "-c", "flush", file], false],
    [["snapshot", "-c", "fz", file], false],
    [["compact", file], false],
    [["check", "-r", "leaks", file], false],
    [["check", "-r", "all", file], false],
  ];
  try {
    fs.writeFileSync(file, c.bytes);
    for (const [argv, readOnly] of commands) {
      const before = fs.readFileSync(file);
      stderr = "";
      run.ops++;
      let status = -1;
      try {
        status = await main(argv, io);
      } catch (e) {
        run.problems.push(`refcow ${argv.join(" ")} threw ${describe(e)}`);
      }
      for (const e of takeInternalErrors()) run.problems.push(`refcow ${argv.join(" ")} reported an internal error: ${describe(e)}`);
      const after = fs.readFileSync(file);
      if (readOnly && !after.equals(before)) run.problems.push(`refcow ${argv.join(" ")} (a read-only command) wrote to the image`);
      if (argv[0] === "convert" && argv[2] === "raw" && status === 0 && fs.statSync(other).size <= 64 * MiB) {
        // Correct data: what refcow read is what QEMU reads, when QEMU opens the image too.
        const q = `${other}.qemu`;
        const r = spawnSync("qemu-img", ["convert", "-f", "qcow2", "-O", "raw", file, q], { encoding: "utf8", timeout: 60_000 });
        if (r.status === 0 && !fs.readFileSync(q).equals(fs.readFileSync(other))) run.problems.push(`refcow and QEMU read different guest data from the image`);
        fs.rmSync(q, { force: true });
      }
      if (/Could not open/.test(stderr) && !after.equals(before)) run.problems.push(`refcow ${argv.join(" ")} could not open the image but wrote to it: ${stderr.trim()}`);
      fs.rmSync(other, { force: true });
    }
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(other, { force: true });
  }
}

export async function runCase(c: FuzzCase): Promise<FuzzOutcome> {
  const run = new Run();
  engineReadOnly(run, c);
  engineReadWrite(run, c);
  if (c.cli) await cli(run, c);
  return { id: c.id, problems: run.problems, verdict: run.verdict, ops: run.ops };
}

parentPort?.on("message", (c: FuzzCase) => {
  runCase(c).then(
    (r) => parentPort!.postMessage(r),
    (e) => parentPort!.postMessage({ id: c.id, problems: [`the case itself failed: ${describe(e)}`], verdict: "", ops: 0 }),
  );
});
