/**
 * Which of V8's WebAssembly compilers a Node process running v86 uses.
 *
 * v86 translates the guest's hot code into small WebAssembly modules and instantiates each asynchronously
 * (`codegen_finalize`: `WebAssembly.instantiate`). By default V8 then also compiles them with its optimizing
 * compiler (TurboFan) on background threads. A guest keeps producing such modules, so those compiles never
 * stop: on a 2-core host they took about 12 s of CPU in a 45 s guest run, on the core that the disk's worker
 * thread needs, and the emulator's thread was preempted whenever it woke that worker. With Liftoff alone
 * (V8's baseline compiler, `--liftoff-only`), on the same host, the same run, every source alike:
 * that background CPU fell to about 1 s, the demo OS booted in 11.0 s instead of 12.1 s under refcow (9.5
 * against 10.6 s on v86's own buffer), and the boot's CPU time fell from 20.7 to 12.0 s
 * (`node dist/bench/boot-os.js`, see README).
 *
 * So refcow's own Node processes that run v86 (`refcow boot`, the research harness, the benchmarks) compile
 * with Liftoff only, set before v86 compiles anything. `REFCOW_WASM_TIERUP=1` keeps V8's default (on a host
 * with cores to spare, TurboFan's code may win). A browser's flags are its own: the page cannot set them.
 */
import * as v8 from "node:v8";

export type WasmTiering = "liftoff-only" | "v8-default";

let chosen: WasmTiering | undefined;

/** The choice `env` makes (REFCOW_WASM_TIERUP set to anything but "" or "0": V8's default). */
export function wasmTieringFor(env: NodeJS.ProcessEnv = process.env): WasmTiering {
  const v = env.REFCOW_WASM_TIERUP;
  return v !== undefined && v !== "" && v !== "0" ? "v8-default" : "liftoff-only";
}

/** Sets the process's WebAssembly compiler choice once (see the module comment) and returns it. */
export function chooseWasmTiering(env: NodeJS.ProcessEnv = process.env, setFlags: (flags: string) => void = v8.setFlagsFromString): WasmTiering {
  if (chosen) return chosen;
  const choice = wasmTieringFor(env);
  if (choice === "liftoff-only") setFlags("--liftoff-only");
  chosen = choice;
  return chosen;
}

/** How the process compiles WebAssembly, as a report's line says it. */
export function describeWasmTiering(t: WasmTiering): string {
  return t === "liftoff-only"
    ? "WebAssembly: V8's Liftoff compiler only (REFCOW_WASM_TIERUP=1 for V8's default, TurboFan tier-up)"
    : "WebAssembly: V8's default (Liftoff, then TurboFan on background threads; REFCOW_WASM_TIERUP is set)";
}
