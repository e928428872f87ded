/**
 * A benchmark run in a fresh Node process: the runner's own script started again with run options; the
 * child prints its result as one JSON line last on stdout, and its stderr is passed through as progress.
 */
import { spawn } from "node:child_process";

export function runJsonChild<T>(script: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"], env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      process.stderr.write(d);
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const line = stdout.trim().split("\n").pop();
      if (code === 0 && line) resolve(JSON.parse(line) as T);
      else reject(new Error(`the run exited with status ${code}: ${stderr.trim().split("\n").slice(-3).join(" / ")}`));
    });
  });
}
