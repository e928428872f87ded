/**
 * The v86 integration (src/v86) ships to embedders; the research harness (src/guest) sits on it. So nothing
 * in src/v86 may reach src/guest, not even through another folder; neither folder may be part of an
 * import cycle; and no file of theirs is over 800 lines. The graph is read from the sources' relative
 * imports (type-only ones included: a type import ties the modules' meaning together just as well).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");
const src = path.join(root, "src");

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

const IMPORT = /(?:^|[\s;])(?:import|export)\s[^"';]*?from\s*["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)|^import\s+["'](\.{1,2}\/[^"']+)["']/gm;

/** Each source file (relative to src/) and the src/ files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(src)) {
    // Comments out (examples in doc comments are not imports); "//" inside strings rarely precedes an import.
    const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    const deps: string[] = [];
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      const target = path.resolve(path.dirname(file), spec).replace(/\.js$/, ".ts");
      if (existsSync(target)) deps.push(path.relative(src, target));
    }
    graph.set(path.relative(src, file), deps);
  }
  return graph;
}

/** Every file reachable from `start` (itself excluded unless on a cycle), with the path that reached it. */
function reach(graph: Map<string, string[]>, start: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const stack: Array<[string, string[]]> = [[start, [start]]];
  while (stack.length > 0) {
    const [f, via] = stack.pop()!;
    for (const d of graph.get(f) ?? []) {
      if (seen.has(d)) continue;
      seen.set(d, [...via, d]);
      stack.push([d, [...via, d]]);
    }
  }
  return seen;
}

describe("src/v86 and src/guest", () => {
  const graph = importGraph();
  const inFolder = (dir: string) => [...graph.keys()].filter((f) => f.startsWith(dir + "/"));

  it("replace src/vm", () => {
    expect(existsSync(path.join(src, "vm"))).toBe(false);
    expect(inFolder("v86").length).toBeGreaterThan(0);
    expect(inFolder("guest").length).toBeGreaterThan(0);
  });

  it("src/v86 (and the refcow/v86 entry) reach nothing in src/guest", () => {
    const bad: string[] = [];
    for (const f of [...inFolder("v86"), "v86.ts"]) {
      for (const [d, via] of reach(graph, f)) if (d.startsWith("guest/")) bad.push(via.join(" → "));
    }
    expect(bad).toEqual([]);
  });

  it("no file of either folder is over 800 lines", () => {
    const long = [...inFolder("v86"), ...inFolder("guest")]
      .map((f) => [f, readFileSync(path.join(src, f), "utf8").split("\n").length] as const)
      .filter(([, n]) => n > 800);
    expect(long).toEqual([]);
  });

  it("no import cycle runs through src/v86 or src/guest", () => {
    const cycles: string[] = [];
    for (const f of [...inFolder("v86"), ...inFolder("guest")]) {
      const back = reach(graph, f).get(f);
      if (back) cycles.push(back.join(" → "));
    }
    expect(cycles).toEqual([]);
  });
});
