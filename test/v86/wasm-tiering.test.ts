/**
 * The WebAssembly compiler choice of refcow's v86 processes (src/v86/wasm-tiering.ts), judged by V8 itself:
 * a child process makes the choice, runs a WebAssembly function hot enough for V8 to tier it up, and asks
 * V8 (`%IsLiftoffFunction`, with --allow-natives-syntax) which compiler's code it runs.
 */
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { chooseWasmTiering, describeWasmTiering, wasmTieringFor } from "../../src/v86/wasm-tiering.js";

const built = pathToFileURL(path.resolve(__dirname, "../../dist/v86/wasm-tiering.js")).href;

/** In a fresh process with `env`: the choice made, and whether a hot function still runs Liftoff code. */
function hotFunctionIn(env: NodeJS.ProcessEnv): { choice: string; liftoff: boolean } {
  // (module (func (export "f") (param i32) (result i32) local.get 0 i32.const 1 i32.add))
  const script = `
    import(${JSON.stringify(built)}).then(async ({ chooseWasmTiering }) => {
      const choice = chooseWasmTiering();
      const bytes = new Uint8Array([0,97,115,109,1,0,0,0,1,6,1,96,1,127,1,127,3,2,1,0,7,5,1,1,102,0,0,10,9,1,7,0,32,0,65,1,106,11]);
      const { instance } = await WebAssembly.instantiate(bytes);
      const f = instance.exports.f;
      for (let round = 0; round < 40; round++) {
        for (let i = 0; i < 1e6; i++) f(i);
        await new Promise((r) => setTimeout(r, 5)); // lets a background tier-up finish
      }
      console.log(JSON.stringify({ choice, liftoff: %IsLiftoffFunction(f) }));
    });`;
  const out = execFileSync(process.execPath, ["--allow-natives-syntax", "-e", script], { env: { ...process.env, ...env }, encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop()!) as { choice: string; liftoff: boolean };
}

describe("wasm tiering", () => {
  it("keeps hot WebAssembly on Liftoff by default, and leaves V8 to tier it up with REFCOW_WASM_TIERUP=1", () => {
    expect(hotFunctionIn({ REFCOW_WASM_TIERUP: "" })).toEqual({ choice: "liftoff-only", liftoff: true });
    expect(hotFunctionIn({ REFCOW_WASM_TIERUP: "1" })).toEqual({ choice: "v8-default", liftoff: false });
  }, 60_000);

  it("reads the environment: unset, empty or 0 mean Liftoff only", () => {
    expect(wasmTieringFor({})).toBe("liftoff-only");
    expect(wasmTieringFor({ REFCOW_WASM_TIERUP: "0" })).toBe("liftoff-only");
    expect(wasmTieringFor({ REFCOW_WASM_TIERUP: "yes" })).toBe("v8-default");
    expect(describeWasmTiering("liftoff-only")).toMatch(/Liftoff compiler only/);
  });

  it("decides once per process", () => {
    const flags: string[] = [];
    const first = chooseWasmTiering({}, (f) => flags.push(f));
    const again = chooseWasmTiering({ REFCOW_WASM_TIERUP: "1" }, (f) => flags.push(f));
    expect(again).toBe(first);
    expect(flags.length).toBeLessThanOrEqual(1);
  });
});
