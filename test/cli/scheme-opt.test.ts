/**
 * --scheme-opt on the commands that take --scheme: a bad option fails before the image is opened, with one
 * line on stderr and exit 1, and the image is left as it was; --help lists the options the schemes declare.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertBuilt, run, tempDir } from "./qemu-harness.js";

const T = 60_000;
let dir: string;
let image: string;
beforeAll(async () => {
  assertBuilt();
  dir = tempDir("scheme-opt");
  image = path.join(dir, "d.qcow2");
  expect((await run("qemu-img", ["create", "-q", "-f", "qcow2", image, "16M"], dir)).status).toBe(0);
  expect((await run("qemu-io", ["-c", "write -P 1 0 64k", image], dir)).status).toBe(0);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const BAD: [string, string[], string][] = [
  ["unknown key", ["--scheme", "log", "--scheme-opt", "depth=3"], "refcow: scheme 'log' has no option 'depth' (its options: pending, log-size)"],
  ["bad number", ["--scheme", "log", "--scheme-opt", "pending=lots"], "refcow: scheme 'log' option pending=lots: expecting a whole number"],
  ["zero pending", ["--scheme", "log", "--scheme-opt", "pending=0"], "refcow: scheme 'log' option pending=0: below the minimum, 1"],
  ["bad size", ["--scheme", "log", "--scheme-opt", "log-size=big"], "refcow: scheme 'log' option log-size=big: expecting a size in bytes (suffixes k, M, G, T)"],
  ["log size below the minimum", ["--scheme", "log", "--scheme-opt", "pending=8,log-size=16k"], "refcow: scheme 'log' option log-size=16k: below the minimum, 64 KiB"],
  ["log size above the maximum", ["--scheme", "log", "--scheme-opt", "log-size=1G"], "refcow: scheme 'log' option log-size=1G: above the maximum, 256 MiB"],
  ["not key=value", ["--scheme", "log", "--scheme-opt", "pending"], "refcow: scheme option 'pending' is not of the form key=value"],
  ["a scheme without options", ["--scheme", "journal", "--scheme-opt", "pending=4"], "refcow: scheme 'journal' takes no options (given: pending)"],
  ["the default scheme (eager)", ["--scheme-opt", "log-size=1M"], "refcow: scheme 'eager' takes no options (given: log-size)"],
  // (nbd words the rest of this line as it did before --scheme-opt.)
  ["an unknown scheme", ["--scheme", "logg", "--scheme-opt", "pending=4"], "refcow: unknown refcount scheme 'logg' ("],
];

/** Each command that takes --scheme, with the rest of its command line (the image last). */
const COMMANDS: [string, (opts: string[]) => string[]][] = [
  ["io", (o) => ["io", ...o, "-c", "write -P 2 0 4k"]],
  ["snapshot", (o) => ["snapshot", ...o, "-c", "s"]],
  ["check", (o) => ["check", "-r", "all", ...o]],
  ["convert", (o) => ["convert", "-O", "qcow2", ...o]],
  ["compact", (o) => ["compact", ...o]],
  ["nbd", (o) => ["nbd", "-k", path.join(dir, "nbd.sock"), ...o]],
];

describe.each(COMMANDS)("%s --scheme-opt", (name, line) => {
  it(
    "a bad option: exit 1, one line, the image untouched",
    async () => {
      const before = fs.readFileSync(image);
      // Every case through io; four through the other commands (the same helper parses them all).
      const cases = name === "io" ? BAD : BAD.filter(([what]) => ["unknown key", "log size below the minimum", "a scheme without options", "an unknown scheme"].includes(what));
      for (const [, opts, message] of cases) {
        const args = line(opts);
        args.push(image);
        if (name === "convert") args.push(path.join(dir, "out.qcow2"));
        const r = await run("refcow", args, dir);
        // One line: the message (for an unknown scheme, its start).
        const lines = r.stderr.split("\n");
        expect({ what: opts.join(" "), status: r.status, lines: lines.length, stdout: r.stdout }).toEqual({ what: opts.join(" "), status: 1, lines: 2, stdout: "" });
        if (message.endsWith("(")) expect(lines[0]!.slice(0, message.length)).toBe(message);
        else expect(lines[0]).toBe(message);
      }
      expect(Buffer.compare(fs.readFileSync(image), before)).toBe(0);
      expect(fs.existsSync(path.join(dir, "out.qcow2"))).toBe(false);
    },
    T,
  );
});

describe("--scheme-opt", () => {
  it("run: a bad option fails before the guest is built or booted", async () => {
    const r = await run("refcow", ["run", "--scheme", "log", "--scheme-opt", "pending=-1", path.join(dir, "guest.qcow2")], dir);
    expect(r).toMatchObject({ status: 1, stderr: "refcow: scheme 'log' option pending=-1: expecting a whole number\n" });
    expect(fs.existsSync(path.join(dir, "guest.qcow2"))).toBe(false);
  }, T);

  it("good options are accepted by every command that takes --scheme", async () => {
    const opts = ["--scheme", "log", "--scheme-opt", "pending=8", "--scheme-opt", "log-size=128k"];
    expect(await run("refcow", ["io", ...opts, "-c", "write -P 2 0 4k", image], dir)).toMatchObject({ status: 0, stderr: "" });
    expect(await run("refcow", ["snapshot", ...opts, "-c", "s", image], dir)).toMatchObject({ status: 0, stderr: "" });
    expect(await run("refcow", ["io", ...opts, "-c", "write -P 3 4k 4k", image], dir)).toMatchObject({ status: 0, stderr: "" });
    expect(await run("refcow", ["check", ...opts, image], dir)).toMatchObject({ status: 0 });
    expect(await run("refcow", ["compact", "-q", ...opts, image], dir)).toMatchObject({ status: 0, stderr: "" });
    const out = path.join(dir, "good-out.qcow2");
    expect(await run("refcow", ["convert", "-O", "qcow2", ...opts, image, out], dir)).toMatchObject({ status: 0, stderr: "" });
    expect((await run("qemu-img", ["check", image], dir)).status).toBe(0);
    expect((await run("qemu-io", ["-r", "-c", "read -P 2 0 4k", "-c", "read -P 3 4k 4k", image], dir)).stdout).not.toContain("Pattern verification failed");
  }, T);

  it("--help lists the log scheme's options", async () => {
    for (const cmd of ["io", "snapshot", "check", "convert", "compact", "nbd", "run"]) {
      const r = await run("refcow", [cmd, "--help"], dir);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain("--scheme-opt K=V,...");
      expect(r.stdout).toMatch(/log: pending=N +pending copies held before an early apply \(1 to 1048576; default 1024\)/);
      expect(r.stdout).toMatch(/log: log-size=SIZE +size of the data log area \(64 KiB to 256 MiB; default a 16th of the disk, 64 KiB to 4 MiB\)/);
    }
  }, T);
});
