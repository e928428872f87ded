/**
 * The monitor's command language: a subset of QEMU's human monitor (HMP), same names, arguments and
 * messages where QEMU has them.
 *
 *   savevm [NAME]      internal snapshot of the disk with the machine state (QEMU names an unnamed one
 *                      vm-YYYYMMDDHHMMSS; a snapshot of the same name is replaced)
 *   loadvm NAME        back to a snapshot taken with savevm: disk and machine
 *   delvm NAME         delete a snapshot
 *   info snapshots     the snapshots of the disk
 *   info block         the disk: image, format, cache mode, backing file
 *   info status        running or paused
 *   stop / cont        pause / resume the guest (`c` is cont, as in QEMU)
 *   quit / q           close the image cleanly and exit
 *   help / ? [CMD]     list the commands
 *
 * `parseMonitorCommand` turns one line into a command or an error with QEMU's wording; an empty line is
 * `{ kind: "none" }`. Names are one word (QEMU's HMP takes the rest of the line up to a space too).
 */

export type MonitorCommand =
  | { kind: "none" }
  | { kind: "savevm"; name: string | undefined }
  | { kind: "loadvm"; name: string }
  | { kind: "delvm"; name: string }
  | { kind: "info"; what: "snapshots" | "block" | "status" }
  | { kind: "stop" }
  | { kind: "cont" }
  | { kind: "quit" }
  | { kind: "help"; topic: string | undefined };

export type ParsedMonitorLine = { ok: true; command: MonitorCommand } | { ok: false; error: string };

interface CommandSpec {
  names: string[];
  args: string;
  help: string;
}

const COMMANDS: CommandSpec[] = [
  { names: ["cont", "c"], args: "", help: "resume emulation" },
  { names: ["delvm"], args: "tag", help: "delete a VM snapshot from its tag" },
  { names: ["help", "?"], args: "[cmd]", help: "show the help" },
  { names: ["info"], args: "[subcommand]", help: "show various information about the system state" },
  { names: ["loadvm"], args: "tag", help: "restore a VM snapshot from its tag" },
  { names: ["quit", "q"], args: "", help: "quit the emulator" },
  { names: ["savevm"], args: "tag", help: "save a VM snapshot. If no tag is provided, a new snapshot is created" },
  { names: ["stop"], args: "", help: "stop emulation" },
];

const INFO_TOPICS: Array<{ name: "block" | "snapshots" | "status"; help: string }> = [
  { name: "block", help: "show info of one block device or all block devices" },
  { name: "snapshots", help: "show the currently saved VM snapshots" },
  { name: "status", help: "show the current VM status (running|paused)" },
];

/** The help listing (lines end in "\n"; the caller converts for a raw terminal). */
export function monitorHelp(topic?: string): string {
  if (topic === "info") return INFO_TOPICS.map((t) => `info ${t.name}  -- ${t.help}\n`).join("");
  const specs = topic === undefined ? COMMANDS : COMMANDS.filter((c) => c.names.includes(topic));
  return specs.map((c) => `${c.names.join("|")} ${c.args ? c.args + " " : ""}-- ${c.help}\n`).join("");
}

/** QEMU's default savevm name: vm-YYYYMMDDHHMMSS in local time. */
export function defaultSnapshotName(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `vm-${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export function parseMonitorCommand(line: string): ParsedMonitorLine {
  const words = line.trim().split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return { ok: true, command: { kind: "none" } };
  const [name, ...args] = words as [string, ...string[]];
  const spec = COMMANDS.find((c) => c.names.includes(name));
  if (!spec) return { ok: false, error: `unknown command: '${name}'` };
  const canonical = spec.names[0]!;
  const tooMany = (max: number): ParsedMonitorLine | undefined => (args.length > max ? { ok: false, error: `${canonical}: extraneous characters at the end of line` } : undefined);
  switch (canonical) {
    case "savevm":
      return tooMany(1) ?? { ok: true, command: { kind: "savevm", name: args[0] } };
    case "loadvm":
    case "delvm":
      if (args.length === 0) return { ok: false, error: "Parameter 'name' is missing" };
      return tooMany(1) ?? { ok: true, command: { kind: canonical, name: args[0]! } };
    case "info": {
      if (args.length === 0) return { ok: true, command: { kind: "help", topic: "info" } };
      const topic = INFO_TOPICS.find((t) => t.name === args[0]);
      if (!topic) return { ok: false, error: `info: unknown subcommand '${args[0]}' (info block, info snapshots, info status)` };
      return tooMany(1) ?? { ok: true, command: { kind: "info", what: topic.name } };
    }
    case "stop":
    case "cont":
    case "quit":
      return tooMany(0) ?? { ok: true, command: { kind: canonical } };
    case "help":
      return tooMany(1) ?? { ok: true, command: { kind: "help", topic: args[0] } };
  }
  return { ok: false, error: `unknown command: '${name}'` };
}
