/**
 * The host side of the guest's serial console: collects the bytes of ttyS0 and lets callers wait for text
 * to appear after a given position.
 *
 * Control protocol (guest side in guest-images/init): the guest prints `REFCOW-READY` once; the host sends
 * one command line ending in "\n"; the guest runs it and prints its output, then `REFCOW-DONE <exit code>`
 * on a line of its own. Lines from the guest end in "\n" (kernel messages in "\r\n").
 *
 * Phases: a workload command announces each of its phases with a line `REFCOW-PHASE <name>` and then reads
 * one line from the console (`read -r _ </dev/ttyS0`) before doing the phase's I/O; the host labels the disk
 * requests that follow with <name>, does what it has to at that point (a snapshot, say), and answers with
 * an empty line. So no request of a phase is issued before the host knows the phase has begun.
 *
 * Positions are absolute byte counts since the console was created, so they stay valid when old text is
 * dropped (only the last `keepChars` characters are kept).
 */

export const READY_MARKER = "REFCOW-READY";
export const DONE_MARKER = "REFCOW-DONE";
/** `REFCOW-DONE <code>` on its own line; group 1 is the code. Matched against text starting at a line start. */
export const DONE_LINE = /(?:^|\n)REFCOW-DONE (\d+)\r?\n/;
export const READY_LINE = /(?:^|\n)REFCOW-READY\r?\n/;
export const PHASE_MARKER = "REFCOW-PHASE";
/** A complete console line (as given to `onLine`) announcing a phase; group 1 is its name. */
export const PHASE_LINE = /^REFCOW-PHASE ([A-Za-z0-9._-]+)$/;

export interface ConsoleMatch {
  /** Absolute position where the match starts. */
  start: number;
  /** Absolute position just after the match. */
  end: number;
  match: RegExpExecArray;
}

interface Waiter {
  pattern: RegExp;
  from: number;
  resolve: (m: ConsoleMatch) => void;
  reject: (e: Error) => void;
  timer?: ReturnType<typeof setTimeout>;
}

export class SerialConsole {
  private text = "";
  /** Absolute position of text[0]. */
  private base = 0;
  private partialLine = "";
  private waiters = new Set<Waiter>();
  private checkScheduled = false;
  private closedWith: Error | undefined;

  /** Called with every complete line (without its line ending). */
  onLine?: (line: string) => void;

  constructor(private readonly keepChars = 4 << 20) {}

  /** Position just after the last byte received. */
  get position(): number {
    return this.base + this.text.length;
  }

  push(byte: number): void {
    const ch = String.fromCharCode(byte & 0xff);
    this.text += ch;
    if (this.onLine) {
      if (ch === "\n") {
        const line = this.partialLine.endsWith("\r") ? this.partialLine.slice(0, -1) : this.partialLine;
        this.partialLine = "";
        this.onLine(line);
      } else if (this.partialLine.length < 65536) {
        this.partialLine += ch;
      }
    }
    if (this.text.length > this.keepChars * 2) {
      const drop = this.text.length - this.keepChars;
      this.text = this.text.slice(drop);
      this.base += drop;
    }
    if (this.waiters.size > 0 && !this.checkScheduled) {
      // Bytes arrive in bursts during one emulator slice: look once per burst.
      this.checkScheduled = true;
      queueMicrotask(() => {
        this.checkScheduled = false;
        this.check();
      });
    }
  }

  /** Text received from `from` (absolute) to `to` (default: now). Text already dropped is left out. */
  textBetween(from: number, to = this.position): string {
    return this.text.slice(Math.max(0, from - this.base), Math.max(0, to - this.base));
  }

  /** The last `n` characters, for error messages. */
  tail(n = 2000): string {
    return this.text.slice(-n);
  }

  /**
   * Resolves at the first match of `pattern` in the text from `from` on (a `^` in the pattern matches at
   * `from`). Rejects after `timeoutMs` or when the console is closed.
   */
  waitFor(pattern: RegExp | string, from: number, timeoutMs: number): Promise<ConsoleMatch> {
    const re = typeof pattern === "string" ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")) : pattern;
    return new Promise<ConsoleMatch>((resolve, reject) => {
      if (this.closedWith) {
        reject(this.closedWith);
        return;
      }
      const w: Waiter = { pattern: new RegExp(re.source, re.flags.replace("g", "")), from, resolve, reject };
      if (this.tryMatch(w)) return;
      if (Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(() => {
          this.waiters.delete(w);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} on the serial console; last output:\n${this.tail(1500)}`));
        }, timeoutMs);
      }
      this.waiters.add(w);
    });
  }

  /** Rejects every waiter (and later ones) with `err`. */
  close(err: Error): void {
    this.closedWith ??= err;
    for (const w of this.waiters) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }

  private check(): void {
    for (const w of [...this.waiters]) {
      if (this.tryMatch(w)) {
        this.waiters.delete(w);
        if (w.timer) clearTimeout(w.timer);
      }
    }
  }

  private tryMatch(w: Waiter): boolean {
    const offset = Math.max(0, w.from - this.base);
    const m = w.pattern.exec(this.text.slice(offset));
    if (!m) return false;
    const start = this.base + offset + m.index;
    w.resolve({ start, end: start + m[0].length, match: m });
    return true;
  }
}
