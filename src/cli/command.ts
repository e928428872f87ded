/** What a CLI command is, and where it writes. */

/** Output streams of a command (process stdout/stderr in the binary; buffers in tests). */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

let pipeGuard = false;

/** A reader that goes away (`refcow map ... | head`) ends the command quietly, as SIGPIPE ends qemu-img. */
function guardPipes(): void {
  if (pipeGuard) return;
  pipeGuard = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "EPIPE") process.exit(141);
      throw e;
    });
  }
}

export const processIo: CliIo = {
  out: (text) => {
    guardPipes();
    process.stdout.write(text);
  },
  err: (text) => {
    guardPipes();
    process.stderr.write(text);
  },
};

/** A subcommand: runs with the arguments after its name and returns the exit code. */
export type CommandRun = (argv: string[], io?: CliIo) => Promise<number>;

export interface Command {
  /** One line for the top-level help. */
  summary: string;
  /** Synopsis ("info [-f fmt] [--output=ofmt] ... filename"), shown by `refcow <cmd> --help`. */
  usage?: string;
  /** Text after the synopsis in `refcow <cmd> --help`. */
  help?: string;
  run: CommandRun;
}
