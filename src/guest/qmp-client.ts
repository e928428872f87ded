/**
 * A client of QEMU's machine protocol (QMP) on a Unix socket (`-qmp unix:PATH,server=on,wait=off`), for
 * what `refcow run --emulator qemu` asks of the emulator: internal snapshots of the guest's disk, the
 * block layer's view of it, and a clean quit.
 *
 * Wire format (QEMU's docs/interop/qmp-spec.rst): JSON objects, one after the other, each ending in "\r\n".
 *
 *   server greeting   {"QMP": {"version": {...}, "capabilities": [...]}}     once, on connect
 *   client command    {"execute": NAME, "arguments": {...}, "id": ID}         "arguments" optional
 *   success           {"return": VALUE, "id": ID}
 *   failure           {"error": {"class": CLASS, "desc": TEXT}, "id": ID}
 *   event             {"event": NAME, "data": {...}, "timestamp": {...}}      at any time, no id
 *
 * The session starts in capabilities-negotiation mode: the first command must be `qmp_capabilities`.
 * Commands are answered in order; the id pairs answers with commands all the same.
 */
import * as net from "node:net";

export interface QmpEvent {
  event: string;
  data?: unknown;
}

export class QmpClient {
  private buffer = "";
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }>();
  private closedWith: Error | undefined;
  /** Every event QEMU sent, in order. */
  readonly events: QmpEvent[] = [];
  /** QEMU's version, from the greeting ("7.2.22"). */
  version = "";

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.data(chunk));
    socket.on("error", (e) => this.fail(new Error(`QMP: ${e.message}`)));
    socket.on("close", () => this.fail(new Error("QMP: QEMU closed the connection")));
  }

  /**
   * Connects to the socket (retrying while QEMU has not created it yet, up to `timeoutMs`), reads the
   * greeting and leaves capabilities-negotiation mode.
   */
  static async connect(path: string, timeoutMs = 30_000): Promise<QmpClient> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(path);
          s.once("connect", () => {
            s.off("error", reject);
            resolve(s);
          });
          s.once("error", reject);
        });
        const c = new QmpClient(socket);
        await c.greeting(Math.max(1000, deadline - performance.now()));
        await c.execute("qmp_capabilities");
        return c;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== "ENOENT" && code !== "ECONNREFUSED") || performance.now() > deadline) throw new Error(`QMP socket ${path}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private greetingResolve?: (v: unknown) => void;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
      this.greetingResolve = (g) => {
        clearTimeout(timer);
        const v = (g as { QMP?: { version?: { qemu?: { major: number; minor: number; micro: number } } } }).QMP?.version?.qemu;
        if (v) this.version = `${v.major}.${v.minor}.${v.micro}`;
        resolve();
      };
    });
  }

  /** Runs one command and resolves with its "return" value; rejects with QEMU's class and description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + "\r\n");
    });
  }

  /** Closes the connection (QEMU goes on running). */
  close(): void {
    this.socket.destroy();
  }

  private data(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.message(line);
    }
  }

  private message(line: string): void {
    let m: { QMP?: unknown; event?: string; data?: unknown; id?: number; return?: unknown; error?: { class?: string; desc?: string } };
    try {
      m = JSON.parse(line);
    } catch {
      this.fail(new Error(`QMP: not JSON: ${line.slice(0, 200)}`));
      return;
    }
    if (m.QMP !== undefined) {
      this.greetingResolve?.(m);
      return;
    }
    if (m.event !== undefined) {
      this.events.push({ event: m.event, data: m.data });
      return;
    }
    const w = typeof m.id === "number" ? this.waiting.get(m.id) : undefined;
    if (!w) return;
    this.waiting.delete(m.id!);
    if (m.error) w.reject(new Error(`QMP ${w.command}: ${m.error.class ?? "Error"}: ${m.error.desc ?? "(no description)"}`));
    else w.resolve(m.return);
  }

  private fail(e: Error): void {
    this.closedWith ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
}
