/** What a CLI command is, and where it writes. */

/** Output streams of a command (process stdout/stderr in the binary; buffers in tests). */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: CliIo = {
  out: (text) => {
    process.stdout.write(text);
  },
  err: (text) => {
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
