/** The machine a run's figures come from, and the refcow that made them, as results.json records them. */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describeWasmTiering, wasmTieringFor } from "../v86/wasm-tiering.js";

/**
 * refcow's version: package.json's, and the commit of the checkout when it is one (with "+changes" when the
 * work tree differs from it). Shards of one matrix must share it to be merged.
 */
export function refcowVersion(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
  let version = "unknown";
  try {
    version = (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    // Not in a checkout or package: the version stays unknown.
  }
  const git = (args: string[]) => execFileSync("git", ["-C", root, ...args], { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  try {
    const commit = git(["rev-parse", "--short=12", "HEAD"]);
    const dirty = git(["status", "--porcelain", "--untracked-files=no", "--", "src", "native", "package.json"]) !== "";
    return `${version} (${commit}${dirty ? "+changes" : ""})`;
  } catch {
    return version;
  }
}

export function machine(dir: string): Record<string, string> {
  const sh = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
    } catch {
      return "unknown";
    }
  };
  const cpu = fs.readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
  return {
    cpu: `${cpu} (${os.cpus().length} cores)`,
    kernel: os.release(),
    filesystem: sh("stat", ["-f", "-c", "%T", dir]),
    node: process.version,
    qemu: sh("qemu-img", ["--version"]).split("\n")[0],
    // What refcow's v86 processes compile WebAssembly with (they read the same environment).
    wasm: describeWasmTiering(wasmTieringFor()),
  };
}
