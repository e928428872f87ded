/**
 * A command driven through a pseudo-terminal (test/helpers/pty-relay.py), as a person types at it: keys are
 * written a few at a time, the terminal's output is collected and waited on.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const RELAY = path.join(path.dirname(fileURLToPath(import.meta.url)), "pty-relay.py");

export class PtySession {
  /** Everything the terminal showed so far (latin1). */
  output = "";
  /** stderr of the relay after its PID line (nothing: the command's stderr is the terminal). */
  relayErr = "";
  readonly exited: Promise<number>;
  private readonly child: ChildProcess;
  private pidValue: number | undefined;
  private readonly pidKnown: Promise<number>;
  private waiters: Array<() => void> = [];

  constructor(command: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
    this.child = spawn("python3", [RELAY, command, ...args], { cwd: opts.cwd, env: opts.env, stdio: ["pipe", "pipe", "pipe"] });
    let resolvePid!: (pid: number) => void;
    this.pidKnown = new Promise((r) => (resolvePid = r));
    this.child.stdout!.on("data", (d: Buffer) => {
      this.output += d.toString("latin1");
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr!.on("data", (d: Buffer) => {
      this.relayErr += d.toString();
      const m = /^PID (\d+)$/m.exec(this.relayErr);
      if (m && this.pidValue === undefined) {
        this.pidValue = Number(m[1]);
        resolvePid(this.pidValue);
      }
    });
    this.exited = new Promise((resolve) =>
      this.child.on("close", (code) => {
        for (const w of this.waiters.splice(0)) w();
        resolve(code ?? -1);
      }),
    );
  }

  /** The command's pid (not the relay's). */
  pid(): Promise<number> {
    return this.pidKnown;
  }

  /** Resolves with the position after the first match of `pattern` at or after `from`. */
  async waitFor(pattern: string | RegExp, from: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const tail = this.output.slice(from);
      if (typeof pattern === "string") {
        const i = tail.indexOf(pattern);
        if (i >= 0) return from + i + pattern.length;
      } else {
        const m = new RegExp(pattern.source, pattern.flags.replace("g", "")).exec(tail);
        if (m) return from + m.index + m[0].length;
      }
      if (exited) throw new Error(`the command exited before ${String(pattern)} appeared; output:\n${this.output.slice(-3000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${String(pattern)}; output:\n${this.output.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Types `text` a few characters at a time, as a person would. */
  async type(text: string): Promise<void> {
    for (let i = 0; i < text.length; i += 4) {
      this.child.stdin!.write(Buffer.from(text.slice(i, i + 4), "latin1"));
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Ends the relay's stdin: the relay kills the command (a test's clean-up). */
  end(): void {
    this.child.stdin!.end();
  }
}
