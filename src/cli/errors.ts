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

/** JavaScript's own error types: one of them reaching a report is a bug in refcow, not a problem with the input. */
const INTERNAL_ERROR_NAMES = new Set(["TypeError", "RangeError", "ReferenceError", "SyntaxError", "EvalError", "URIError", "AggregateError"]);

/** Bugs seen by messageOf (the most recent ones), for tests that feed the commands hostile input. */
const internalErrors: Error[] = [];

/** Returns and forgets the internal errors reported since the last call. */
export function takeInternalErrors(): Error[] {
  return internalErrors.splice(0, internalErrors.length);
}

/** The message of anything thrown, for a one-line report. A bug is reported as such ("internal error: ..."). */
export function messageOf(e: unknown): string {
  if (e instanceof Error) {
    const text = e.message.split("\n").join(" ");
    if (INTERNAL_ERROR_NAMES.has(e.name) || text.startsWith("internal:")) {
      if (internalErrors.length < 100) internalErrors.push(e);
      return `internal error: ${e.name}: ${text}`;
    }
    return text;
  }
  return String(e);
}
