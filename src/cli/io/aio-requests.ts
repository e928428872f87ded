/**
 * qemu-io's asynchronous requests (aio_read, aio_write, aio_flush). The requests of consecutive aio commands
 * start together, when the session goes on to any other command (or waits): made in one turn, they are all
 * published to the worker's request ring before the client looks for the first completion, so they are in
 * flight at once (the ring serves them in order, each as soon as the worker gets to it). What a
 * request prints when it completes (its report, or its failure) is held until the session next waits for
 * I/O, as qemu-io prints completions only when its event loop runs: during a later synchronous request
 * (read, write, flush, map, truncate, ...), sleep, aio_flush, at exit, and — commands read from stdin —
 * while the session waits for the next command. A completion never changes the
 * exit status (qemu-io's callbacks cannot).
 */
import type { CliIo } from "../command.js";

export class AioRequests {
  /** Requests of the aio commands run since the last start(). */
  private readonly submitted: (() => Promise<string>)[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** Output of completed requests, in completion order, not yet printed. */
  private readonly completed: string[] = [];

  /** Adds a request; `run` starts it and resolves with what its completion prints. */
  submit(run: () => Promise<string>): void {
    this.submitted.push(run);
  }

  /** Starts every submitted request, in submission order, in this turn. */
  start(): void {
    for (const run of this.submitted.splice(0)) this.begin(run);
  }

  private begin(run: () => Promise<string>): void {
    const p: Promise<void> = run().then(
      (text) => {
        this.completed.push(text);
        this.inFlight.delete(p);
      },
      (e: unknown) => {
        this.completed.push(`aio request failed: ${(e as Error).message}\n`);
        this.inFlight.delete(p);
      },
    );
    this.inFlight.add(p);
  }

  /** Requests submitted and not yet reported. */
  get outstanding(): number {
    return this.submitted.length + this.inFlight.size + this.completed.length;
  }

  /**
   * Prints the completions that have come in, without waiting for the others: what qemu-io's event loop does
   * while an interactive session waits for its next command.
   */
  async poll(io: CliIo): Promise<void> {
    this.start();
    await new Promise<void>((resolve) => setImmediate(resolve));
    for (const text of this.completed.splice(0)) io.out(text);
  }

  /**
   * Waits for every request in flight, then prints the completions. The ring serves an image's requests in
   * submission order, so after a synchronous request has completed every earlier one has too: the wait
   * ends at once there.
   */
  async drain(io: CliIo): Promise<void> {
    this.start();
    while (this.inFlight.size) await Promise.all([...this.inFlight]);
    for (const text of this.completed.splice(0)) io.out(text);
  }
}
