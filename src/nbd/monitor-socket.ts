/**
 * The control socket of a serving export (`refcow nbd --monitor SOCK`): a Unix stream socket on which a
 * local program asks the server for operations on the image it serves, while clients go on using the export
 * — a live internal snapshot, as QEMU's `blockdev-snapshot-internal-sync` takes one of a running guest's disk.
 *
 * Wire format (text, UTF-8, one request at a time per connection, any number per connection):
 *
 *   request   one command line ending in "\n" (a trailing "\r" is ignored), at most 4096 bytes
 *   answer    zero or more output lines, each ending in "\n", then one status line:
 *               "OK\n"                 the command succeeded
 *               "ERROR <message>\n"    it failed, or was not understood; the connection stays usable
 *
 * Commands (qemu-img snapshot's options):
 *
 *   snapshot -c NAME   flush what was acknowledged, then create internal snapshot NAME of the live image;
 *                      the answer's one output line is "ID NAME" of the new snapshot
 *   snapshot -l        list the snapshots (qemu-img snapshot -l's table; no lines when there are none)
 *   snapshot -d NAME   delete snapshot NAME (an ID or a name)
 *   help               the commands, one a line
 *
 * Requests from every connection run one after the other, never two at once. The export's own ordering
 * (a write acknowledged before the request is read is in the snapshot) is the target's: see MonitorTarget.
 * A line longer than 4096 bytes closes the connection after its ERROR answer.
 *
 *   const mon = await MonitorSocket.listen("/tmp/disk.mon", target, { formatSnapshots });
 *   await monitorCommand("/tmp/disk.mon", "snapshot -c before-upgrade");   // from another process too
 *   await mon.close();
 */
import * as fs from "node:fs";
import * as net from "node:net";
import type { SnapshotInfo } from "../engine/types.js";

/** What the control socket operates on: the serving export's image. */
export interface MonitorTarget {
  /**
   * Creates internal snapshot `name` of the live image, after every write acknowledged to a client so far
   * is durable and no write is half applied.
   */
  snapshotCreate(name: string): Promise<SnapshotInfo>;
  snapshotList(): Promise<SnapshotInfo[]>;
  snapshotDelete(idOrName: string): Promise<void>;
}

export interface MonitorOptions {
  /** The lines of `snapshot -l` (default: one "ID NAME" line per snapshot). */
  formatSnapshots?: (list: readonly SnapshotInfo[]) => string;
}

export const MONITOR_MAX_LINE = 4096;

export const MONITOR_HELP = ["snapshot -c NAME   create internal snapshot NAME of the live image", "snapshot -l        list the snapshots", "snapshot -d NAME   delete snapshot NAME", "help               this list"];

/** Thrown for a command the monitor does not understand; its message is the ERROR line's. */
class MonitorUsageError extends Error {}

type MonitorCommand = { kind: "create" | "delete"; name: string } | { kind: "list" } | { kind: "help" };

/** Parses one request line. Throws MonitorUsageError with a message for the ERROR line. */
export function parseMonitorCommand(line: string): MonitorCommand {
  const words = line.trim().split(/\s+/).filter((w) => w.length > 0);
  if (words.length === 0) throw new MonitorUsageError("empty command (try 'help')");
  if (words[0] === "help" && words.length === 1) return { kind: "help" };
  if (words[0] !== "snapshot") throw new MonitorUsageError(`unknown command '${words[0]}' (try 'help')`);
  const flag = words[1];
  if (flag === "-l" && words.length === 2) return { kind: "list" };
  if ((flag === "-c" || flag === "-d") && words.length === 3) return { kind: flag === "-c" ? "create" : "delete", name: words[2]! };
  if ((flag === "-c" || flag === "-d") && words.length === 2) throw new MonitorUsageError(`snapshot ${flag} needs a snapshot name`);
  throw new MonitorUsageError("usage: snapshot -c NAME | snapshot -l | snapshot -d NAME");
}

const defaultFormat = (list: readonly SnapshotInfo[]): string => list.map((s) => `${s.id} ${s.name}\n`).join("");

export class MonitorSocket {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Requests of every connection, one after the other. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    private readonly target: MonitorTarget,
    private readonly opts: MonitorOptions,
  ) {
    this.server = net.createServer((s) => this.connection(s));
  }

  /** Listens on `path` (an existing socket file there is replaced; any other file is refused). */
  static async listen(path: string, target: MonitorTarget, opts: MonitorOptions = {}): Promise<MonitorSocket> {
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(path);
    } catch {
      /* nothing there */
    }
    if (st && !st.isSocket()) throw new Error(`--monitor ${path}: a file that is not a socket is in the way`);
    if (st) fs.rmSync(path);
    const m = new MonitorSocket(path, target, opts);
    await new Promise<void>((resolve, reject) => {
      m.server.once("error", reject);
      m.server.listen(path, () => {
        m.server.off("error", reject);
        resolve();
      });
    });
    return m;
  }

  /** Stops listening, ends the connections after their current request, removes the socket file. */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    await this.queue;
    for (const s of this.sockets) s.end();
    await closed;
    fs.rmSync(this.path, { force: true });
  }

  private connection(s: net.Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => undefined); // a client that went away
    let pending = "";
    s.setEncoding("utf8");
    s.on("data", (chunk: string) => {
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl).replace(/\r$/, "");
        pending = pending.slice(nl + 1);
        this.enqueue(s, line);
      }
      if (pending.length > MONITOR_MAX_LINE) {
        pending = "";
        this.queue = this.queue.then(() => {
          s.end(`ERROR request line longer than ${MONITOR_MAX_LINE} bytes\n`);
        });
      }
    });
  }

  private enqueue(s: net.Socket, line: string): void {
    this.queue = this.queue.then(async () => {
      const answer = await this.answer(line);
      if (!s.destroyed) s.write(answer);
    });
  }

  /** The whole answer to one request line: output lines and the status line. */
  private async answer(line: string): Promise<string> {
    try {
      const c = parseMonitorCommand(line);
      switch (c.kind) {
        case "help":
          return MONITOR_HELP.map((l) => l + "\n").join("") + "OK\n";
        case "list":
          return (this.opts.formatSnapshots ?? defaultFormat)(await this.target.snapshotList()) + "OK\n";
        case "create": {
          if ((await this.target.snapshotList()).some((sn) => sn.name === c.name)) throw new Error(`a snapshot named '${c.name}' already exists`);
          const sn = await this.target.snapshotCreate(c.name);
          return `${sn.id} ${sn.name}\nOK\n`;
        }
        case "delete":
          await this.target.snapshotDelete(c.name);
          return "OK\n";
      }
    } catch (e) {
      const message = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ");
      return `ERROR ${message}\n`;
    }
  }
}

/** What a monitor answered: its output lines, and the error when the status line was ERROR. */
export interface MonitorAnswer {
  lines: string[];
  error?: string;
}

/** Sends one command line to the control socket at `path` and reads its answer. */
export function monitorCommand(path: string, line: string, timeoutMs = 60_000): Promise<MonitorAnswer> {
  if (/[\r\n]/.test(line)) return Promise.reject(new Error("one command line, without newlines"));
  return new Promise<MonitorAnswer>((resolve, reject) => {
    const s = net.createConnection(path);
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`the monitor at ${path} did not answer '${line}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (f: () => void) => {
      clearTimeout(timer);
      s.end();
      f();
    };
    s.setEncoding("utf8");
    s.on("connect", () => s.write(line + "\n"));
    s.on("data", (chunk: string) => {
      text += chunk;
      const lines = text.split("\n");
      lines.pop(); // the unfinished tail
      const status = lines.findIndex((l) => l === "OK" || l.startsWith("ERROR "));
      if (status < 0) return;
      const out = lines.slice(0, status);
      const st = lines[status]!;
      done(() => resolve(st === "OK" ? { lines: out } : { lines: out, error: st.slice("ERROR ".length) }));
    });
    s.on("error", (e) => done(() => reject(new Error(`monitor ${path}: ${e.message}`))));
    s.on("close", () => done(() => reject(new Error(`the monitor at ${path} closed the connection without answering '${line}'`))));
  });
}

/** What QEMU records for a snapshot of a running disk taken without the VM state: now, and no VM clock. */
export function liveSnapshotOptions(): { date: Date; vmClockNsec: number; icount: number } {
  return { date: new Date(), vmClockNsec: 0, icount: 0 };
}

// ---------------------------------------------------------------------------------------------------------
// A target in another thread: the export worker that owns the image (refcow nbd --serve=inline) serves the
// monitor's requests between two NBD requests, so no request is half applied when the snapshot is taken.

export type MonitorOp = "create" | "list" | "delete";
export interface MonitorRequest {
  type: "monitor";
  id: number;
  op: MonitorOp;
  name?: string;
}
export interface MonitorReply {
  type: "monitor-reply";
  id: number;
  value?: SnapshotInfo | SnapshotInfo[];
  error?: string;
}

/** The synchronous image an inline export owns (Qcow2Image; a raw disk has none of the snapshot calls). */
export interface SnapshotCapable {
  flush(): void;
  snapshotCreate?(name: string, opts?: ReturnType<typeof liveSnapshotOptions>): SnapshotInfo;
  snapshotList?(): SnapshotInfo[];
  snapshotDelete?(idOrName: string): void;
}

export function isMonitorRequest(m: unknown): m is MonitorRequest {
  return typeof m === "object" && m !== null && (m as { type?: unknown }).type === "monitor";
}

/**
 * A MonitorTarget on an image this thread owns and serves inline: each call runs at once, synchronously,
 * so between two NBD requests (no request is half applied).
 */
export function syncImageMonitorTarget(img: SnapshotCapable): MonitorTarget {
  const snapshots = (): Required<Pick<SnapshotCapable, "snapshotCreate" | "snapshotList" | "snapshotDelete">> => {
    if (!img.snapshotCreate || !img.snapshotList || !img.snapshotDelete) throw new Error("the image is raw: it has no internal snapshots");
    return img as Required<SnapshotCapable>;
  };
  return {
    snapshotCreate: async (name) => {
      const s = snapshots();
      img.flush();
      return s.snapshotCreate(name, liveSnapshotOptions());
    },
    snapshotList: async () => snapshots().snapshotList(),
    snapshotDelete: async (name) => snapshots().snapshotDelete(name),
  };
}

/** Serves one request that came from another thread (threadMonitorTarget) on this thread's target. */
export async function serveMonitorRequest(target: MonitorTarget, r: MonitorRequest): Promise<MonitorReply> {
  try {
    switch (r.op) {
      case "list":
        return { type: "monitor-reply", id: r.id, value: await target.snapshotList() };
      case "create":
        return { type: "monitor-reply", id: r.id, value: await target.snapshotCreate(r.name ?? "") };
      case "delete":
        await target.snapshotDelete(r.name ?? "");
        return { type: "monitor-reply", id: r.id };
    }
  } catch (e) {
    return { type: "monitor-reply", id: r.id, error: e instanceof Error ? e.message : String(e) };
  }
}

/** The thread end a MonitorTarget forwards to (a Worker, from the thread that started it). */
export interface MonitorPort {
  postMessage(m: MonitorRequest): void;
  on(event: "message", f: (m: unknown) => void): unknown;
}

/**
 * A MonitorTarget whose requests the thread behind `port` serves (serveMonitorRequest). `detach(reason)`
 * fails the requests still waiting and every later one (the thread has ended).
 */
export function threadMonitorTarget(port: MonitorPort): MonitorTarget & { detach(reason: string): void } {
  let detached: string | undefined;
  let next = 1;
  const waiting = new Map<number, (r: MonitorReply) => void>();
  port.on("message", (m) => {
    const r = m as Partial<MonitorReply>;
    if (r?.type !== "monitor-reply" || typeof r.id !== "number") return;
    waiting.get(r.id)?.(r as MonitorReply);
    waiting.delete(r.id);
  });
  const ask = (op: MonitorOp, name?: string): Promise<MonitorReply["value"]> =>
    new Promise((resolve, reject) => {
      if (detached !== undefined) return reject(new Error(detached));
      const id = next++;
      waiting.set(id, (r) => (r.error !== undefined ? reject(new Error(r.error)) : resolve(r.value)));
      port.postMessage({ type: "monitor", id, op, name });
    });
  return {
    snapshotCreate: async (name) => (await ask("create", name)) as SnapshotInfo,
    snapshotList: async () => (await ask("list")) as SnapshotInfo[],
    snapshotDelete: async (name) => void (await ask("delete", name)),
    detach(reason: string) {
      detached ??= reason;
      for (const f of waiting.values()) f({ type: "monitor-reply", id: 0, error: reason });
      waiting.clear();
    },
  };
}

/** The asynchronous image a MonitorTarget can drive directly (the ring's DiskClient, refcow nbd --serve=ring). */
export interface AsyncSnapshotImage {
  flush(): Promise<void>;
  snapshotCreate(name: string, opts?: ReturnType<typeof liveSnapshotOptions>): Promise<SnapshotInfo>;
  snapshotList(): Promise<SnapshotInfo[]>;
  snapshotDelete(idOrName: string): Promise<void>;
}

/**
 * A MonitorTarget on an image behind the request ring: the flush and the create are queued behind the
 * requests already handed to the ring, which the worker serves in order.
 */
export function asyncImageMonitorTarget(disk: AsyncSnapshotImage): MonitorTarget {
  return {
    async snapshotCreate(name) {
      await disk.flush();
      return disk.snapshotCreate(name, liveSnapshotOptions());
    },
    snapshotList: () => disk.snapshotList(),
    snapshotDelete: (name) => disk.snapshotDelete(name),
  };
}
