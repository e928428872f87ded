/**
 * The escape keys of a serial console multiplexed with a monitor, as QEMU's `-nographic` has them
 * (chardev/char-mux.c): Ctrl-A (0x01) then one key.
 *
 *   Ctrl-A x        quit (the image is closed cleanly)
 *   Ctrl-A c        switch between the guest's console and the monitor
 *   Ctrl-A h, ?     list the escapes
 *   Ctrl-A Ctrl-A   a literal Ctrl-A (to the guest, or to the monitor's line)
 *   Ctrl-A s        save disk data back to file: with -snapshot, the temporary overlay's data is committed
 *                   into the image (the guest paused meanwhile); without, the image is flushed
 *   Ctrl-A other    both bytes are dropped, as QEMU drops them (QEMU's b, break, and t, timestamps, too)
 *
 * `EscapeParser.feed(bytes)` turns the bytes typed into a list of events: runs of data for the side that
 * has the input, and commands. The escape state lives across calls, so Ctrl-A and its key may come in
 * separate reads (a person typing them, or a pipe).
 */

export const ESCAPE_BYTE = 0x01;

export type EscapeCommand = "quit" | "switch" | "help" | "sync";

export type EscapeEvent = { type: "data"; bytes: Uint8Array } | { type: "command"; command: EscapeCommand };

const COMMAND_KEYS: Record<string, EscapeCommand> = {
  x: "quit",
  c: "switch",
  h: "help",
  "?": "help",
  s: "sync",
};

/** The text Ctrl-A h prints. */
export const ESCAPE_HELP =
  [
    "C-a h    print this help",
    "C-a x    exit emulator",
    "C-a s    save disk data back to file (if -snapshot)",
    "C-a c    switch between console and monitor",
    "C-a C-a  sends C-a",
  ].join("\n") + "\n";

export class EscapeParser {
  private pending = false;

  /** True after a Ctrl-A whose key has not arrived yet. */
  get inEscape(): boolean {
    return this.pending;
  }

  feed(input: Uint8Array): EscapeEvent[] {
    const events: EscapeEvent[] = [];
    let runStart = 0;
    const flushRun = (end: number) => {
      if (end > runStart) events.push({ type: "data", bytes: input.slice(runStart, end) });
    };
    for (let i = 0; i < input.length; i++) {
      const b = input[i]!;
      if (this.pending) {
        this.pending = false;
        runStart = i + 1;
        if (b === ESCAPE_BYTE) {
          events.push({ type: "data", bytes: Uint8Array.of(ESCAPE_BYTE) });
          continue;
        }
        const command = COMMAND_KEYS[String.fromCharCode(b)];
        if (command) events.push({ type: "command", command });
        continue;
      }
      if (b === ESCAPE_BYTE) {
        flushRun(i);
        this.pending = true;
        runStart = i + 1;
      }
    }
    if (!this.pending) flushRun(input.length);
    return mergeData(events);
  }
}

/** Adjacent data events as one (a literal Ctrl-A between two runs). */
function mergeData(events: EscapeEvent[]): EscapeEvent[] {
  const out: EscapeEvent[] = [];
  for (const e of events) {
    const last = out[out.length - 1];
    if (e.type === "data" && last?.type === "data") {
      const joined = new Uint8Array(last.bytes.length + e.bytes.length);
      joined.set(last.bytes);
      joined.set(e.bytes, last.bytes.length);
      out[out.length - 1] = { type: "data", bytes: joined };
    } else {
      out.push(e);
    }
  }
  return out;
}
