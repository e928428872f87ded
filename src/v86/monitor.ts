/**
 * The monitor a person reaches with Ctrl-A c: a prompt `(refcow) `, a line editor for a terminal in raw mode
 * (printable characters echoed, Backspace/DEL erase, Ctrl-U clears the line, Enter runs it), and the
 * commands of monitor-commands.ts run against a `MonitorTarget` (the boot session), one at a time; what is
 * typed while one runs waits for it.
 *
 * Output lines end in "\n": a terminal in Node's raw mode keeps its output processing (libuv leaves ONLCR on),
 * so "\n" shows as a new line there and in a file alike. Errors are printed as QEMU's HMP prints them,
 * "Error: <message>".
 */
import type { SnapshotInfo } from "../engine/types.js";
import { defaultSnapshotName, monitorHelp, parseMonitorCommand, type MonitorCommand } from "./monitor-commands.js";

export const MONITOR_PROMPT = "(refcow) ";

export interface MonitorTarget {
  savevm(name: string): Promise<unknown>;
  loadvm(name: string): Promise<void>;
  delvm(name: string): Promise<void>;
  snapshots(): Promise<SnapshotInfo[]>;
  /** `info block`'s text, lines ending in "\n". */
  blockInfo(): string;
  readonly stopped: boolean;
  stop(): Promise<void>;
  cont(): Promise<void>;
  quit(): void;
}

export interface MonitorOptions {
  target: MonitorTarget;
  write: (text: string) => void;
  /** The snapshot table of `info snapshots` (header and rows, lines ending in "\n"). */
  formatSnapshots: (list: SnapshotInfo[]) => string;
}

export class Monitor {
  private line = "";
  private queue: Promise<void> = Promise.resolve();
  private greeted = false;

  constructor(private readonly o: MonitorOptions) {}

  /** Called when the monitor gets the input: greets once, then shows the prompt and the line typed so far. */
  enter(): void {
    if (!this.greeted) {
      this.greeted = true;
      this.o.write("refcow monitor - type 'help' for more information\n");
    }
    this.o.write(MONITOR_PROMPT + this.line);
  }

  /** Bytes typed while the monitor has the input. */
  input(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (b === 0x0d || b === 0x0a) {
        const line = this.line;
        this.line = "";
        this.o.write("\n");
        this.queue = this.queue.then(() => this.run(line));
      } else if (b === 0x7f || b === 0x08) {
        if (this.line.length > 0) {
          this.line = this.line.slice(0, -1);
          this.o.write("\b \b");
        }
      } else if (b === 0x15) {
        this.o.write("\b \b".repeat(this.line.length));
        this.line = "";
      } else if (b >= 0x20 && b < 0x7f) {
        this.line += String.fromCharCode(b);
        this.o.write(String.fromCharCode(b));
      }
      // Other control bytes (escape sequences of arrow keys, say) are dropped.
    }
  }

  /** Resolves when every command typed so far has finished. */
  idle(): Promise<void> {
    return this.queue;
  }

  /** Runs one line; prints its output, then the prompt again (unless it quit). */
  async run(line: string): Promise<void> {
    const parsed = parseMonitorCommand(line);
    let quit = false;
    if (!parsed.ok) {
      this.o.write(parsed.error + "\n");
    } else {
      quit = parsed.command.kind === "quit";
      try {
        const text = await this.execute(parsed.command);
        if (text) this.o.write(text);
      } catch (e) {
        this.o.write(`Error: ${e instanceof Error ? e.message : String(e)}\n`);
      }
    }
    if (!quit) this.o.write(MONITOR_PROMPT + this.line);
  }

  private async execute(c: MonitorCommand): Promise<string> {
    const t = this.o.target;
    switch (c.kind) {
      case "none":
        return "";
      case "savevm":
        await t.savevm(c.name ?? defaultSnapshotName());
        return "";
      case "loadvm":
        await t.loadvm(c.name);
        return "";
      case "delvm":
        await t.delvm(c.name);
        return "";
      case "info":
        if (c.what === "snapshots") {
          const list = await t.snapshots();
          if (list.length === 0) return "There is no snapshot available.\n";
          return "List of snapshots present on all disks:\n" + this.o.formatSnapshots(list);
        }
        if (c.what === "block") return t.blockInfo();
        return `VM status: ${t.stopped ? "paused" : "running"}\n`;
      case "stop":
        await t.stop();
        return "";
      case "cont":
        await t.cont();
        return "";
      case "quit":
        t.quit();
        return "";
      case "help":
        return monitorHelp(c.topic);
    }
  }
}
