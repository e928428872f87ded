/**
 * Which of V8's WebAssembly compilers a Node process running v86 uses, and when.
 *
 * v86 is one large WebAssembly module (v86.wasm: the CPU, its interpreter, memory, the JIT's code
 * generator) plus the small modules its JIT makes of the guest's hot code, each instantiated asynchronously
 * (`codegen_finalize`: `WebAssembly.instantiate`). By default V8 compiles every module with its baseline
 * compiler (Liftoff) and then, function by function as they run hot, again with its optimizing compiler
 * (TurboFan) on background threads. A guest keeps producing JIT modules, so those background compiles never
 * stop: on a 2-core host they took about 13 s of CPU while the emulator's thread took 19, on the core the
 * disk's worker thread needs (one guest run, per-thread CPU time from /proc; in single diagnostic runs,
 * waking that worker took the emulator's thread 55–104 µs at the 90th percentile, against 26–28 without
 * them). With Liftoff alone (`--liftoff-only`) that CPU went, but v86's own module then ran as Liftoff code
 * too: the demo OS's boot from virtio-blk, most of which is SeaBIOS reading the kernel through the device
 * (v86 running its code, likely in v86's own module rather than JIT code), took 1.14 and 1.23× as long in a
 * 2-repetition run.
 *
 * So, in two steps, around every `new V86` of the process (a process may build several emulators, one after
 * the other, and each compiles v86.wasm again unless V8 still holds the last compile):
 *   chooseWasmTiering()   before `new V86`: `--no-liftoff-only --wasm-tier-up --no-wasm-dynamic-tiering`
 *                         (`--liftoff-only` turned tier-up off with it), so that v86.wasm, compiled next, is
 *                         compiled by TurboFan once, in full, in the background (V8 queues those compiles
 *                         when the module is compiled)
 *   wasmTieringLoaded()   once v86 has loaded (its module compiled): `--liftoff-only`, so that every JIT
 *                         module from then on is compiled by Liftoff alone, and none is compiled again
 * (figures: README, "WebAssembly compilers"). `REFCOW_WASM_TIERUP=1` keeps V8's default throughout. refcow's
 * own Node processes that run v86 (`refcow boot`, the research harness, the benchmarks) do both; an embedder
 * calls them around its own `new V86`. A browser's flags are its own: the page cannot set them.
 */
import * as v8 from "node:v8";

export type WasmTiering = "core-optimized-jit-liftoff" | "v8-default";

let chosen: WasmTiering | undefined;

/** The choice `env` makes (REFCOW_WASM_TIERUP set to anything but "" or "0": V8's default). */
export function wasmTieringFor(env: NodeJS.ProcessEnv = process.env): WasmTiering {
  const v = env.REFCOW_WASM_TIERUP;
  return v !== undefined && v !== "" && v !== "0" ? "v8-default" : "core-optimized-jit-liftoff";
}

/**
 * Before each `new V86`: the process's choice (made by its first call, from `env`; see the module comment),
 * and with ours, the flags under which v86.wasm is compiled next. Returns the choice.
 */
export function chooseWasmTiering(env: NodeJS.ProcessEnv = process.env, setFlags: (flags: string) => void = v8.setFlagsFromString): WasmTiering {
  chosen ??= wasmTieringFor(env);
  if (chosen === "core-optimized-jit-liftoff") setFlags("--no-liftoff-only --wasm-tier-up --no-wasm-dynamic-tiering");
  return chosen;
}

/** Once that v86 has loaded: its JIT's modules from now on by Liftoff alone (when chooseWasmTiering chose so). */
export function wasmTieringLoaded(setFlags: (flags: string) => void = v8.setFlagsFromString): void {
  if (chosen === "core-optimized-jit-liftoff") setFlags("--liftoff-only");
}

/** How the process compiles WebAssembly, as a report's line says it. */
export function describeWasmTiering(t: WasmTiering): string {
  return t === "core-optimized-jit-liftoff"
    ? "WebAssembly: v86.wasm optimized once at load (TurboFan), its JIT's modules by Liftoff only (REFCOW_WASM_TIERUP=1 for V8's default)"
    : "WebAssembly: V8's default (Liftoff, then TurboFan tier-up on background threads; REFCOW_WASM_TIERUP is set)";
}
