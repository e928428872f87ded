/** The monitor of `refcow boot`: its command parser (QEMU HMP names and messages) and its line editor. */
import { describe, expect, it } from "vitest";
import type { SnapshotInfo } from "../../src/engine/types.js";
import { defaultSnapshotName, monitorHelp, parseMonitorCommand } from "../../src/v86/monitor-commands.js";
import { Monitor, type MonitorTarget } from "../../src/v86/monitor.js";

describe("parseMonitorCommand", () => {
  it("parses the commands and their arguments", () => {
    expect(parseMonitorCommand("savevm s1")).toEqual({ ok: true, command: { kind: "savevm", name: "s1" } });
    expect(parseMonitorCommand("  savevm  ")).toEqual({ ok: true, command: { kind: "savevm", name: undefined } });
    expect(parseMonitorCommand("loadvm s1")).toEqual({ ok: true, command: { kind: "loadvm", name: "s1" } });
    expect(parseMonitorCommand("delvm 2")).toEqual({ ok: true, command: { kind: "delvm", name: "2" } });
    expect(parseMonitorCommand("info snapshots")).toEqual({ ok: true, command: { kind: "info", what: "snapshots" } });
    expect(parseMonitorCommand("info block")).toEqual({ ok: true, command: { kind: "info", what: "block" } });
    expect(parseMonitorCommand("info status")).toEqual({ ok: true, command: { kind: "info", what: "status" } });
    expect(parseMonitorCommand("stop")).toEqual({ ok: true, command: { kind: "stop" } });
    expect(parseMonitorCommand("cont")).toEqual({ ok: true, command: { kind: "cont" } });
    expect(parseMonitorCommand("c")).toEqual({ ok: true, command: { kind: "cont" } });
    expect(parseMonitorCommand("quit")).toEqual({ ok: true, command: { kind: "quit" } });
    expect(parseMonitorCommand("q")).toEqual({ ok: true, command: { kind: "quit" } });
    expect(parseMonitorCommand("help savevm")).toEqual({ ok: true, command: { kind: "help", topic: "savevm" } });
    expect(parseMonitorCommand("")).toEqual({ ok: true, command: { kind: "none" } });
    expect(parseMonitorCommand("info")).toEqual({ ok: true, command: { kind: "help", topic: "info" } });
  });

  it("refuses with QEMU's wording", () => {
    expect(parseMonitorCommand("frobnicate")).toEqual({ ok: false, error: "unknown command: 'frobnicate'" });
    expect(parseMonitorCommand("loadvm")).toEqual({ ok: false, error: "Parameter 'name' is missing" });
    expect(parseMonitorCommand("delvm")).toEqual({ ok: false, error: "Parameter 'name' is missing" });
    expect(parseMonitorCommand("stop now")).toEqual({ ok: false, error: "stop: extraneous characters at the end of line" });
    expect(parseMonitorCommand("info cpus")).toMatchObject({ ok: false });
  });

  it("names an unnamed savevm vm-YYYYMMDDHHMMSS, and lists the commands", () => {
    expect(defaultSnapshotName(new Date(2024, 0, 2, 3, 4, 5))).toBe("vm-20240102030405");
    const help = monitorHelp();
    for (const c of ["savevm", "loadvm", "delvm", "info", "stop", "cont", "quit"]) expect(help).toMatch(new RegExp(`^${c}`, "m"));
    expect(monitorHelp("info")).toContain("info snapshots");
  });
});

describe("Monitor", () => {
  function harness() {
    const calls: string[] = [];
    let stopped = false;
    const target: MonitorTarget = {
      savevm: async (n) => void calls.push(`savevm ${n}`),
      loadvm: async (n) => {
        if (n === "missing") throw new Error(`Snapshot '${n}' does not exist in one or more devices`);
        calls.push(`loadvm ${n}`);
      },
      delvm: async (n) => void calls.push(`delvm ${n}`),
      snapshots: async () => [{ id: "1", name: "s1", vmStateSize: 2 ** 20, dateSec: 0, dateNsec: 0, vmClockNsec: 0, l1Size: 0, l1TableOffset: 0 } as SnapshotInfo],
      blockInfo: () => "ide0-hd0: x.qcow2 (qcow2)\n",
      get stopped() {
        return stopped;
      },
      stop: async () => void (stopped = true),
      cont: async () => void (stopped = false),
      quit: () => void calls.push("quit"),
    };
    let out = "";
    const m = new Monitor({ target, write: (t) => (out += t), formatSnapshots: (l) => l.map((s) => `-- ${s.name}\n`).join("") });
    const type = async (s: string) => {
      m.input(Uint8Array.from(s, (c) => c.charCodeAt(0)));
      await m.idle();
    };
    return { m, calls, type, out: () => out, clear: () => (out = "") };
  }

  it("echoes, edits the line (backspace, Ctrl-U) and runs it on Enter", async () => {
    const h = harness();
    h.m.enter();
    expect(h.out()).toBe("refcow monitor - type 'help' for more information\n(refcow) ");
    h.clear();
    await h.type("savevx\x7fm s1\r");
    expect(h.calls).toEqual(["savevm s1"]);
    expect(h.out()).toBe("savevx\b \bm s1\n(refcow) ");
    await h.type("garbage\x15delvm s1\r");
    expect(h.calls).toEqual(["savevm s1", "delvm s1"]);
  });

  it("prints results, QEMU-style errors, and stops prompting after quit", async () => {
    const h = harness();
    await h.type("info snapshots\r");
    expect(h.out()).toContain("List of snapshots present on all disks:\n-- s1\n(refcow) ");
    h.clear();
    await h.type("loadvm missing\r");
    expect(h.out()).toBe("loadvm missing\nError: Snapshot 'missing' does not exist in one or more devices\n(refcow) ");
    h.clear();
    await h.type("stop\rinfo status\r");
    expect(h.out()).toContain("VM status: paused\n");
    h.clear();
    await h.type("nope\r");
    expect(h.out()).toBe("nope\nunknown command: 'nope'\n(refcow) ");
    h.clear();
    await h.type("quit\r");
    expect(h.calls).toContain("quit");
    expect(h.out()).toBe("quit\n");
  });
});
