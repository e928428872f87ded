/**
 * The WebAssembly compiler choice of refcow's v86 processes (src/v86/wasm-tiering.ts), judged by V8 itself:
 * a child process makes the choice, runs WebAssembly functions hot enough for V8 to tier them up, and asks
 * V8 (`%IsLiftoffFunction`, with --allow-natives-syntax) which compiler's code each runs.
 */
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { chooseWasmTiering, describeWasmTiering, wasmTieringFor } from "../../src/v86/wasm-tiering.js";

const built = pathToFileURL(path.resolve(__dirname, "../../dist/v86/wasm-tiering.js")).href;

/**
 * In a fresh process with `env`: the choice made; a module compiled after it (as v86.wasm is) and one compiled
 * after `wasmTieringLoaded` (as the JIT's are), each run hot; whether each still runs Liftoff code.
 */
function hotFunctionsIn(env: NodeJS.ProcessEnv): Record<string, string | boolean> {
  // (module (func (export "f") (param i32) (result i32) local.get 0 i32.const k i32.add))
  const script = `
    import(${JSON.stringify(built)}).then(async ({ chooseWasmTiering, wasmTieringLoaded }) => {
      // i32.const k: distinct bytes, or V8 would hand back the module it compiled already
      const bytes = (k) => new Uint8Array([0,97,115,109,1,0,0,0,1,6,1,96,1,127,1,127,3,2,1,0,7,5,1,1,102,0,0,10,9,1,7,0,32,0,65,k,106,11]);
      const hot = async (f) => {
        for (let round = 0; round < 40; round++) {
          for (let i = 0; i < 1e6; i++) f(i);
          await new Promise((r) => setTimeout(r, 5)); // lets a background compile finish
        }
      };
      const choice = chooseWasmTiering();
      const core = (await WebAssembly.instantiate(bytes(1))).instance.exports.f;
      await hot(core);
      wasmTieringLoaded();
      const jit = (await WebAssembly.instantiate(bytes(2))).instance.exports.f;
      await hot(jit);
      // a second emulator of the same process: its v86.wasm compiled after the first one's JIT modules
      chooseWasmTiering();
      const core2 = (await WebAssembly.instantiate(bytes(3))).instance.exports.f;
      await hot(core2);
      wasmTieringLoaded();
      const jit2 = (await WebAssembly.instantiate(bytes(4))).instance.exports.f;
      await hot(jit2);
      console.log(JSON.stringify({ choice, core: %IsLiftoffFunction(core), jit: %IsLiftoffFunction(jit), core2: %IsLiftoffFunction(core2), jit2: %IsLiftoffFunction(jit2) }));
    });`;
  const out = execFileSync(process.execPath, ["--allow-natives-syntax", "-e", script], { env: { ...process.env, ...env }, encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop()!) as Record<string, string | boolean>;
}

describe("wasm tiering", () => {
  it("optimizes the module compiled before v86 loads and keeps those compiled after on Liftoff; V8's default with REFCOW_WASM_TIERUP=1", () => {
    expect(hotFunctionsIn({ REFCOW_WASM_TIERUP: "" })).toEqual({ choice: "core-optimized-jit-liftoff", core: false, jit: true, core2: false, jit2: true });
    expect(hotFunctionsIn({ REFCOW_WASM_TIERUP: "1" })).toEqual({ choice: "v8-default", core: false, jit: false, core2: false, jit2: false });
  }, 60_000);

  it("reads the environment: unset, empty or 0 mean Liftoff only", () => {
    expect(wasmTieringFor({})).toBe("core-optimized-jit-liftoff");
    expect(wasmTieringFor({ REFCOW_WASM_TIERUP: "0" })).toBe("core-optimized-jit-liftoff");
    expect(wasmTieringFor({ REFCOW_WASM_TIERUP: "yes" })).toBe("v8-default");
    expect(describeWasmTiering("core-optimized-jit-liftoff")).toMatch(/JIT's modules by Liftoff only/);
  });

  it("decides once per process, from the environment of its first call", () => {
    const first = chooseWasmTiering({}, () => undefined);
    expect(chooseWasmTiering({ REFCOW_WASM_TIERUP: "1" }, () => undefined)).toBe(first);
  });
});
