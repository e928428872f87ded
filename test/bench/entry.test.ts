/**
 * The benchmark programs' one entry (src/bench/entry.ts): option parsing, and every runner started the way
 * its documentation and package.json start it (`node dist/bench/NAME.js`), answering --help and refusing an
 * unknown option with one line and status 1, without running anything.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { BenchUsageError, guestMatrixValues, integerOption, listOption, nonNegativeOption, parseOptions } from "../../src/bench/entry.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const RUNNERS = ["ring", "nbd-fio", "owner-open", "virtio", "guest-cuts", "boot"];

describe("parseOptions", () => {
  const options = { reps: { type: "string" }, "refcow-args": { type: "string" }, sized: { type: "boolean" } } as const;

  it("takes the word after a string option as its value, even when it starts with a dash", () => {
    expect(parseOptions(["--refcow-args", "--serve=ring", "--reps", "2", "--sized"], options)).toEqual({ "refcow-args": "--serve=ring", reps: "2", sized: true });
    expect(parseOptions(["--reps=3"], options)).toEqual({ reps: "3" });
  });

  it("answers help, and refuses unknown options and missing values as usage errors", () => {
    expect(parseOptions(["--reps", "2", "-h"], options)).toBe("help");
    expect(parseOptions(["--help"], options)).toBe("help");
    expect(() => parseOptions(["--bogus"], options)).toThrow(BenchUsageError);
    expect(() => parseOptions(["--reps"], options)).toThrow(BenchUsageError);
    expect(() => parseOptions(["stray"], options)).toThrow(BenchUsageError);
  });

  it("checks numbers and splits lists", () => {
    expect(integerOption("reps", undefined)).toBeUndefined();
    expect(integerOption("reps", "4")).toBe(4);
    expect(() => integerOption("reps", "0")).toThrow(/--reps needs an integer of at least 1, not '0'/);
    expect(() => integerOption("reps", "2.5")).toThrow(BenchUsageError);
    expect(nonNegativeOption("idle", "0.5")).toBe(0.5);
    expect(() => nonNegativeOption("idle", "-1")).toThrow(/--idle needs a non-negative number/);
    expect(() => nonNegativeOption("idle", "")).toThrow(BenchUsageError);
    expect(listOption("eager,,owner")).toEqual(["eager", "owner"]);
    expect(guestMatrixValues({ reps: "2", cache: "writeback,writethrough", schemes: "eager" })).toEqual({ reps: 2, clusters: undefined, schemes: ["eager"], caches: ["writeback", "writethrough"] });
    expect(() => guestMatrixValues({ cache: "writeback,none" })).toThrow(/--cache takes writethrough, writeback, unsafe, not 'none'/);
  });
});

describe("the runners under dist/bench", () => {
  const node = (args: string[]) => spawnSync(process.execPath, args, { cwd: root, encoding: "utf8", timeout: 60_000 });

  for (const name of RUNNERS) {
    it(`${name}: --help prints its usage; an unknown option is one line on stderr and status 1`, () => {
      const help = node([`dist/bench/${name}.js`, "--help"]);
      expect(help.status, help.stderr).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^usage: node dist/bench/${name}\\.js`));
      const bad = node([`dist/bench/${name}.js`, "--no-such-option"]);
      expect(bad.status).toBe(1);
      expect(bad.stdout).toBe("");
      expect(bad.stderr.trim().split("\n")).toHaveLength(1);
      expect(bad.stderr).toMatch(/--no-such-option.*\(--help for the options\)/);
    });
  }

  it("importing a runner runs nothing", async () => {
    const r = node(["--input-type=module", "-e", `const m = await import(${JSON.stringify(`${root}dist/bench/ring.js`)}); console.log(Object.keys(m).sort().join(","));`]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("formatRingBench,formatRingCompare,runRingBench,runRingCompare,timeEach");
    expect(r.stderr).toBe("");
  });

  it("every npm script that starts a built file names one that exists", () => {
    const scripts = (JSON.parse(fs.readFileSync(`${root}package.json`, "utf8")) as { scripts: Record<string, string> }).scripts;
    const files = Object.values(scripts).flatMap((s) => [...s.matchAll(/node (dist\/\S+\.js)/g)].map((m) => m[1]!));
    expect(files).toContain("dist/bench/virtio.js");
    expect(files).toContain("dist/bench/guest-cuts.js");
    for (const f of files) expect(fs.existsSync(`${root}${f}`), f).toBe(true);
  });
});
