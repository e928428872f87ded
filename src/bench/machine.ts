/** The machine a run's figures come from, as results.json records it. */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";

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
  };
}
