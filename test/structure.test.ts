// The source tree's structure rules, read from the import graph of src/ (every `import` and `export ... from`,
// type-only ones included): no import cycle; the engine imports no scheme; no file over 800 lines.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");
const MAX_LINES = 800;


function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

/** The relative specifiers a file imports or re-exports from (static `from "..."` and `import("...")`). */
function specifiers(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: string[] = [];
  for (const m of code.matchAll(/(?:^|[;\s])(?:import|export)\s[^;]*?\sfrom\s*["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of code.matchAll(/(?:^|[;\s])import\s*["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]!);
  return out.filter((s) => s.startsWith("."));
}

function importGraph(): Map<string, string[]> {
  const files = sourceFiles(SRC);
  const known = new Set(files.map((f) => relative(ROOT, f)));
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const from = relative(ROOT, f);
    const deps: string[] = [];
    for (const s of specifiers(readFileSync(f, "utf8"))) {
      const target = relative(ROOT, resolve(dirname(f), s.replace(/\.js$/, ".ts")));
      if (known.has(target)) deps.push(target);
      else if (known.has(`${target}/index.ts`)) deps.push(`${target}/index.ts`);
    }
    graph.set(from, deps);
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

describe("source structure", () => {
  const graph = importGraph();

  it("reads the import graph", () => {
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get("src/index.ts")!.length).toBeGreaterThan(3);
  });

  it("has no import cycle in src/", () => {
    expect(cycles(graph)).toEqual([]);
  });

  it("keeps the engine free of the schemes", () => {
    const bad = [...graph].flatMap(([f, deps]) => (f.startsWith("src/engine/") ? deps.filter((d) => d.startsWith("src/schemes/")).map((d) => `${f} -> ${d}`) : []));
    expect(bad).toEqual([]);
  });

  it("shows the engine's architecture in its folders: only the facade, the image state and the types at its top", () => {
    const top = readdirSync(join(ROOT, "src/engine")).filter((n) => n.endsWith(".ts")).sort();
    expect(top).toEqual(["errors.ts", "image-core.ts", "image-state.ts", "qcow2-image.ts", "types.ts"]);
    const folders = readdirSync(join(ROOT, "src/engine")).filter((n) => statSync(join(ROOT, "src/engine", n)).isDirectory()).sort();
    expect(folders).toEqual(["allocation", "check", "data", "open", "snapshots", "tables", "tools"]);
  });

  it(`has no file over ${MAX_LINES} lines`, () => {
    const over = [...graph.keys()].filter((f) => readFileSync(join(ROOT, f), "utf8").split("\n").length > MAX_LINES);
    expect(over).toEqual([]);
  });
});
