/**
 * Progress on stderr: on a terminal, `transient` messages (counters) overwrite each other on one line and
 * a permanent message clears it first; elsewhere (a log, CI) only permanent messages are written, a line
 * each. `done()` clears a transient line left at the end.
 */
import { type CliIo, processIo } from "./command.js";

export interface Progress {
  (message: string, transient?: boolean): void;
  done(): void;
}

export function progressPrinter(io: CliIo): Progress {
  const tty = Boolean(process.stderr.isTTY) && io === processIo;
  let transientShown = false;
  const clear = () => {
    if (transientShown) io.err("\r\x1b[K");
    transientShown = false;
  };
  const p = ((message: string, transient?: boolean) => {
    if (tty && transient) {
      io.err(`\r\x1b[K${message}`);
      transientShown = true;
      return;
    }
    if (transient) return;
    clear();
    io.err(message + "\n");
  }) as Progress;
  p.done = clear;
  return p;
}
