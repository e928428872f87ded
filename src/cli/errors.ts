/**
 * CLI errors. main() turns each into one line on stderr, "refcow: <message>", and an exit code; nothing
 * thrown by a command ever reaches the user as a stack trace.
 */

/** A failure with a message meant for the user (qemu-img's error_report text) and an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** Bad command line: unknown option, missing operand... Reported with a pointer to --help. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 1);
    this.name = "UsageError";
  }
}

/** The message of anything thrown, for a one-line report. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message.split("\n").join(" ");
  return String(e);
}
