/**
 * `refcow nbd` driven by real NBD clients only: QEMU's qemu-io and qemu-img (nbd+unix:// URIs), libnbd's
 * nbdinfo and nbdcopy, and fio's nbd engine. The image is then judged by qemu-img (check, compare, map).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { killLeftoverServers, mergeRuns, REFCOW_BIN, type MapRun, refcow, run, socketIn, startNbd } from "../helpers/nbd.js";
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("nbd");
afterAll(() => {
  killLeftoverServers();
  fs.rmSync(dir, { recursive: true, force: true });
});

const CS = 4096;
const SIZE = 256 * CS + 1536;

/** A seeded qemu-io script of writes (some FUA), write-zeroes (with and without unmap), discards and flushes. */
function ioScript(seed: number, count: number): string[] {
  let s = seed >>> 0 || 1;
  const next = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
  const range = (): [number, number] => {
    const sector = next(SIZE / 512);
    const len = Math.min((1 + next(40)) * 512, SIZE - sector * 512);
    return [sector * 512, len];
  };
  const script: string[] = [];
  for (let i = 0; i < count; i++) {
    const k = next(20);
    const [off, len] = range();
    if (k < 10) script.push(`write -P ${1 + next(255)} ${off} ${len}`);
    else if (k < 12) script.push(`write -f -P ${1 + next(255)} ${off} ${len}`);
    else if (k < 14) script.push(`write -z ${off} ${len}`);
    else if (k < 16) script.push(`write -z -u ${off} ${len}`);
    else if (k < 18) script.push(`discard ${off} ${len}`);
    else script.push("flush");
  }
  return script;
}

function createImage(file: string, size = SIZE, cs = CS): void {
  qemuImg(["create", "-q", "-f", "qcow2", "-o", `cluster_size=${cs}`, file, String(size)]);
}

/** fio, run in the test directory (it may leave a verify state file in its working directory). */
function fio(args: string[]): ReturnType<typeof run> {
  return run("fio", args, { cwd: dir });
}

async function expectExitClean(server: Awaited<ReturnType<typeof startNbd>>): Promise<void> {
  const end = await server.exited;
  expect(end.code, end.stderr).toBe(0);
}

describe("qemu-io scripts through refcow nbd end equal to qemu-io on a local copy", () => {
  let seed = 20261201;
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writeback", "writethrough"] as const) {
      it(`${scheme}/${cache}`, async () => {
        const mine = path.join(dir, `m-${scheme}-${cache}.qcow2`);
        const theirs = path.join(dir, `q-${scheme}-${cache}.qcow2`);
        createImage(mine);
        createImage(theirs);
        const script = ioScript(seed++, 40);
        const server = await startNbd(socketIn(dir, `m-${scheme}-${cache}`), [
          "-f", "qcow2", `--cache=${cache}`, "--discard=unmap", "--scheme", scheme, mine,
        ]);
        const viaNbd = await run("qemu-io", ["-f", "raw", ...script.flatMap((c) => ["-c", c]), server.uri]);
        expect(viaNbd.status, viaNbd.stderr + viaNbd.stdout).toBe(0);
        expect(viaNbd.stdout).not.toMatch(/error|failed/i);
        await expectExitClean(server); // the last client left: the server closes the image and exits
        qemuIo(theirs, script, { cache });
        const check = qemuCheck(mine);
        expect(check.status, check.out).toBe(0);
        expect(qemuCompare(mine, theirs)).toBe(true);
      }, 60_000);
    }
  }
});

describe("one image, many clients", () => {
  const image = path.join(dir, "shared.qcow2");
  const snapBytes = path.join(dir, "s1.raw");
  beforeAll(() => {
    createImage(image, 4 << 20, 65536);
    qemuIo(image, ["write -P 0x11 0 192k", "write -P 0x22 1m 64k", "write -z 2m 128k", "write -P 0x33 3m 4k"]);
    qemuImg(["snapshot", "-c", "s1", image]);
    qemuIo(image, ["write -P 0x44 0 64k", "write -P 0x55 2m 64k", "discard 1m 64k"]);
    fs.writeFileSync(snapBytes, qemuRaw(image, "s1"));
  });

  it("qemu-img convert over the export equals refcow convert; nbdcopy too", async () => {
    const server = await startNbd(socketIn(dir, "conv"), ["-f", "qcow2", "-r", "-t", "-e", "4", image]);
    try {
      const viaNbd = path.join(dir, "via-nbd.raw");
      const viaCopy = path.join(dir, "via-nbdcopy.raw");
      const local = path.join(dir, "local.raw");
      qemuImg(["convert", "-f", "raw", "-O", "raw", server.uri, viaNbd]);
      const copy = await run("nbdcopy", [server.uri, viaCopy]);
      expect(copy.status, copy.stderr).toBe(0);
      const conv = await refcow(["convert", "-O", "raw", image, local]);
      expect(conv.status, conv.stderr).toBe(0);
      expect(fs.readFileSync(viaNbd).equals(fs.readFileSync(local))).toBe(true);
      expect(fs.readFileSync(viaCopy).equals(fs.readFileSync(local))).toBe(true);
    } finally {
      server.child.kill("SIGTERM");
      await expectExitClean(server);
    }
  }, 60_000);

  it("block status: qemu-img map and nbdinfo --map over the export agree with qemu-img map of the file", async () => {
    const server = await startNbd(socketIn(dir, "map"), ["-f", "qcow2", "-r", "-t", image]);
    try {
      type Entry = { start: number; length: number; data: boolean; zero: boolean };
      const fileMap = mergeRuns((JSON.parse(qemuImg(["map", "--output=json", image])) as Entry[]).map(({ start, length, data, zero }) => ({ start, length, data, zero })));
      const nbdMap = mergeRuns((JSON.parse(qemuImg(["map", "--output=json", "-f", "raw", server.uri])) as Entry[]).map(({ start, length, data, zero }) => ({ start, length, data, zero })));
      expect(nbdMap).toEqual(fileMap);
      expect(fileMap.some((r) => r.data) && fileMap.some((r) => !r.data)).toBe(true);
      const info = await run("nbdinfo", ["--map", server.uri]);
      expect(info.status, info.stderr).toBe(0);
      const runs: MapRun[] = info.stdout
        .trim()
        .split("\n")
        .map((line) => line.trim().split(/\s+/))
        .map(([start, length, type]) => ({ start: Number(start), length: Number(length), data: (Number(type) & 1) === 0, zero: (Number(type) & 2) !== 0 }));
      expect(mergeRuns(runs)).toEqual(fileMap);
    } finally {
      server.child.kill("SIGTERM");
      await expectExitClean(server);
    }
  }, 60_000);

  it("-l NAME exports exactly that snapshot's bytes, read-only, and leaves the file as it was", async () => {
    const before = fs.readFileSync(image);
    const server = await startNbd(socketIn(dir, "snap"), ["-f", "qcow2", "-l", "s1", "-t", image]);
    try {
      const out = path.join(dir, "snap-export.raw");
      const copy = await run("nbdcopy", [server.uri, out]);
      expect(copy.status, copy.stderr).toBe(0);
      expect(fs.readFileSync(out).equals(fs.readFileSync(snapBytes))).toBe(true);
      const info = await run("nbdinfo", ["--json", server.uri]);
      expect(JSON.parse(info.stdout).exports[0].is_read_only).toBe(true);
      const write = await run("qemu-io", ["-f", "raw", "-c", "write -P 1 0 4k", server.uri]);
      expect(`${write.stdout}${write.stderr}`).toMatch(/read-only|Operation not permitted|Permission denied/i);
    } finally {
      server.child.kill("SIGTERM");
      await expectExitClean(server);
    }
    expect(fs.readFileSync(image).equals(before)).toBe(true);
    const missing = await refcow(["nbd", "-k", socketIn(dir, "nosnap"), "-l", "nope", image]);
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim().split("\n")).toEqual(["refcow: Failed to load snapshot: Can't find snapshot"]);
  }, 60_000);

  it("-s: writes go to a temporary overlay; the image is not modified", async () => {
    const before = fs.readFileSync(image);
    const server = await startNbd(socketIn(dir, "overlay"), ["-f", "qcow2", "-s", image]);
    const io = await run("qemu-io", ["-f", "raw", "-c", "write -P 0x66 0 64k", "-c", "read -P 0x66 0 64k", "-c", "read -P 0x11 64k 64k", server.uri]);
    expect(io.status, io.stdout + io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
    await expectExitClean(server);
    expect(fs.readFileSync(image).equals(before)).toBe(true);
  }, 60_000);
});

describe("fio's nbd engine", () => {
  const fioArgs = (uri: string, extra: string[]): string[] => [
    "--name=nbd", "--ioengine=nbd", `--uri=${uri}`, "--rw=randwrite", "--bs=4k", "--randrepeat=1", "--verify=crc32c",
    "--verify_fatal=1", ...extra,
  ];

  for (const iodepth of [1, 32]) {
    it(`random 4 KiB writes with verify=crc32c at iodepth=${iodepth} pass`, async () => {
      const image = path.join(dir, `fio-${iodepth}.qcow2`);
      createImage(image, 64 << 20, 65536);
      // -t: fio connects again for its verify phase.
      const server = await startNbd(socketIn(dir, `fio-${iodepth}`), ["-f", "qcow2", "--cache=writeback", "-t", image]);
      const result = await fio(fioArgs(server.uri, [`--iodepth=${iodepth}`, "--size=8m", "--do_verify=1"]));
      server.child.kill("SIGTERM");
      await expectExitClean(server);
      expect(result.status, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toMatch(/err= 0/);
      expect(qemuCheck(image).status).toBe(0);
    }, 120_000);
  }

  for (const scheme of ["lazy", "journal"]) {
    it(`SIGKILL mid-run (${scheme}, after a snapshot): check -r all and qemu-img check accept the image, flushed ranges intact`, async () => {
      const image = path.join(dir, `kill-${scheme}.qcow2`);
      createImage(image, 64 << 20, 65536);
      const base = ["--scheme", scheme, "-f", "qcow2", "--cache=writeback", "-t", image];
      // Phase 1: a verified workload over [0, 8M), flushed at its end.
      const region1 = ["--offset=0", "--size=8m", "--end_fsync=1", "--iodepth=16"];
      let server = await startNbd(socketIn(dir, `kill1-${scheme}`), base);
      const first = await fio(fioArgs(server.uri, [...region1, "--do_verify=1"]));
      expect(first.status, first.stdout + first.stderr).toBe(0);
      server.child.kill("SIGTERM");
      await expectExitClean(server);
      const snap = await refcow(["snapshot", "-c", "before-kill", image]);
      expect(snap.status, snap.stderr).toBe(0);
      // Phase 2: writes with flushes over [8M, 24M) — copy-on-write after the snapshot — killed midway.
      server = await startNbd(socketIn(dir, `kill2-${scheme}`), base);
      const second = fio([
        "--name=load", "--ioengine=nbd", `--uri=${server.uri}`, "--rw=randwrite", "--bs=4k", "--iodepth=32",
        "--offset=8m", "--size=16m", "--fsync=8", "--time_based=1", "--runtime=30",
      ]);
      await new Promise((r) => setTimeout(r, 1500));
      server.child.kill("SIGKILL");
      const end = await server.exited;
      expect(end.signal).toBe("SIGKILL");
      await second;
      const repair = await refcow(["check", "-r", "all", image]);
      expect([0, 3], repair.stdout + repair.stderr).toContain(repair.status);
      const check = qemuCheck(image);
      expect(check.status, check.out).toBe(0);
      // Everything phase 1 wrote (and flushed) reads back as fio wrote it.
      server = await startNbd(socketIn(dir, `kill3-${scheme}`), ["-f", "qcow2", "-r", "-t", image]);
      const verify = await fio(fioArgs(server.uri, [...region1, "--verify_only=1"]));
      server.child.kill("SIGTERM");
      await expectExitClean(server);
      expect(verify.status, verify.stdout + verify.stderr).toBe(0);
    }, 180_000);
  }
});

describe("shutdown", () => {
  it("SIGTERM during a fio run: in-flight requests answered, image closed cleanly (dirty bit clear)", async () => {
    const image = path.join(dir, "term.qcow2");
    createImage(image, 64 << 20, 65536);
    const server = await startNbd(socketIn(dir, "term"), ["--scheme", "lazy", "-f", "qcow2", image]);
    const load = fio([
      "--name=load", "--ioengine=nbd", `--uri=${server.uri}`, "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=16m",
      "--time_based=1", "--runtime=30",
    ]);
    await new Promise((r) => setTimeout(r, 1000));
    server.child.kill("SIGTERM");
    await expectExitClean(server);
    await load;
    const check = qemuCheck(image);
    expect(check.status, check.out).toBe(0);
    const info = JSON.parse(qemuImg(["info", "--output=json", image]));
    expect(info["dirty-flag"]).toBe(false);
  }, 60_000);

  it("--fork returns once serving; --pid-file names the server; it exits after its client", async () => {
    const image = path.join(dir, "fork.qcow2");
    createImage(image, 1 << 20, 65536);
    const sock = socketIn(dir, "fork");
    const pidFile = path.join(dir, "fork.pid");
    const started = await refcow(["nbd", "--fork", "--pid-file", pidFile, "-k", sock, "-f", "qcow2", image]);
    expect(started.status, started.stderr).toBe(0);
    const pid = Number(fs.readFileSync(pidFile, "utf8"));
    expect(pid).toBeGreaterThan(0);
    const io = await run("qemu-io", ["-f", "raw", "-c", "write -P 7 0 4k", `nbd+unix:///?socket=${sock}`]);
    expect(io.status, io.stderr).toBe(0);
    for (let i = 0; i < 200 && fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 25));
    expect(fs.existsSync(pidFile)).toBe(false);
    expect(qemuCheck(image).status).toBe(0);
    expect(qemuIo(image, ["read -P 7 0 4k"])).not.toMatch(/Pattern verification failed/);
  }, 60_000);
});

describe("options", () => {
  it("TCP (-p, -b), -x, -D, -e 2 with two writers at once, --detect-zeroes=unmap", async () => {
    const image = path.join(dir, "tcp.qcow2");
    createImage(image, 8 << 20, 65536);
    qemuIo(image, ["write -P 0x99 4m 1m"]);
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const args = ["nbd", "-p", String(port), "-b", "127.0.0.1", "-x", "disk0", "-D", "a test disk", "-e", "2", "-t", "--detect-zeroes=unmap", "--discard=unmap", "-f", "qcow2", image];
    const child = spawn(process.execPath, [REFCOW_BIN, ...args], { stdio: "ignore" });
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    try {
      const uri = `nbd://127.0.0.1:${port}/disk0`;
      let info = await run("nbdinfo", ["--json", uri]);
      for (let i = 0; i < 100 && info.status !== 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        info = await run("nbdinfo", ["--json", uri]);
      }
      expect(info.status, info.stderr).toBe(0);
      const exp = JSON.parse(info.stdout).exports[0];
      expect(exp["export-name"]).toBe("disk0");
      expect(exp.description).toBe("a test disk");
      expect(exp.can_multi_conn).toBe(true);
      const [a, b] = await Promise.all([
        run("qemu-io", ["-f", "raw", "-c", "write -P 0x31 0 1m", "-c", "flush", uri]),
        run("qemu-io", ["-f", "raw", "-c", "write -P 0x32 2m 1m", "-c", "write -P 0 4m 1m", uri]),
      ]);
      expect(a.status, a.stderr).toBe(0);
      expect(b.status, b.stderr).toBe(0);
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    expect(qemuCheck(image).status).toBe(0);
    expect(qemuIo(image, ["read -P 0x31 0 1m", "read -P 0x32 2m 1m", "read -P 0 4m 1m"])).not.toMatch(/Pattern verification failed/);
    // The zeroes were detected and unmapped: no data there any more.
    const map = JSON.parse(qemuImg(["map", "--output=json", image])) as { start: number; length: number; data: boolean }[];
    expect(map.filter((e) => e.data && e.start < (5 << 20) && e.start + e.length > 4 << 20)).toEqual([]);
  }, 60_000);
});

describe("command line", () => {
  it("unsupported qemu-nbd options and bad values fail with one clear line", async () => {
    const image = path.join(dir, "cli.qcow2");
    createImage(image, 1 << 20, 65536);
    const cases: [string[], RegExp][] = [
      [["--tls-hostname", "x", image], /^refcow: qemu-nbd option --tls-hostname is not supported by refcow nbd$/],
      [["--tls-creds", "x", image], /^refcow: No TLS credentials with id 'x'$/],
      [["-c", "/dev/nbd0", image], /^refcow: qemu-nbd option -c\/--connect is not supported/],
      [["--cache=bogus", image], /^refcow: Invalid cache option: bogus$/],
      [["--detect-zeroes=unmap", image], /^refcow: --detect-zeroes=unmap can only be used if --discard=unmap$/],
      [["-k", "/tmp/x.sock", "-p", "10809", image], /^refcow: -k \(--socket\) cannot be used with -p/],
      [["-e", "-1", image], /unrecognized option '-1'|Invalid shared device number/],
      [["-k", socketIn(dir, "missing"), path.join(dir, "missing.qcow2")], /^refcow: Failed to blk_new_open/],
      [[], /^refcow: Not enough arguments/],
    ];
    for (const [args, re] of cases) {
      const r = await refcow(["nbd", ...args]);
      expect(r.status, args.join(" ")).not.toBe(0);
      const lines = r.stderr.trim().split("\n");
      expect(lines.length, r.stderr).toBe(1);
      expect(lines[0]).toMatch(re);
    }
  }, 60_000);
});
