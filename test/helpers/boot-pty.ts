/** `refcow boot` in a pseudo-terminal for the OS boot tests: starting machines, shell lines at the guest's prompt, cleanup. */
import path from "node:path";
import { repoRoot } from "../../src/guest/guest-image.js";
import { PtySession } from "./pty.js";

/** The demo OS's shell prompt. */
export const PROMPT = /refcow:[^\n]*# /;
export const REFCOW_BIN = path.join(repoRoot(), "dist", "cli", "bin.js");

/** Machines started by a test file; `endAll` (in afterEach) kills what a failed test left running. */
export class BootMachines {
  private readonly live = new Set<PtySession>();

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  boot(args: string[]): PtySession {
    const s = new PtySession(process.execPath, [REFCOW_BIN, "boot", ...args], { env: { ...this.env, TERM: "xterm" } });
    this.live.add(s);
    void s.exited.then(() => this.live.delete(s));
    return s;
  }

  async endAll(): Promise<void> {
    for (const s of this.live) {
      s.end();
      await s.exited;
    }
    this.live.clear();
  }
}

/** Runs a shell line at the guest's prompt and resolves with the output position after the next prompt. */
export async function shell(s: PtySession, line: string, from: number, timeoutMs = 60_000): Promise<number> {
  await s.type(line + "\r");
  return s.waitFor(PROMPT, from, timeoutMs);
}
