import { describe, expect, it } from "vitest";
import { DONE_LINE, READY_LINE, SerialConsole } from "../../src/guest/serial-console.js";

function feed(c: SerialConsole, s: string) {
  for (const ch of s) c.push(ch.charCodeAt(0));
}

describe("SerialConsole", () => {
  it("finds a marker split across bursts, from a given position", async () => {
    const c = new SerialConsole();
    feed(c, "[ 1.0] kernel noise\r\nREFCOW-RE");
    const p = c.waitFor(READY_LINE, 0, 1000);
    await Promise.resolve();
    feed(c, "ADY\n");
    const m = await p;
    expect(c.textBetween(m.end)).toBe("");
    expect(c.textBetween(0, m.start)).toBe("[ 1.0] kernel noise\r");
  });

  it("matches REFCOW-DONE at the start of the text after a command and extracts the exit code", async () => {
    const c = new SerialConsole();
    feed(c, "REFCOW-READY\n");
    const from = c.position;
    feed(c, "REFCOW-DONE 0\n"); // an empty command
    const m1 = await c.waitFor(DONE_LINE, from, 1000);
    expect(m1.match[1]).toBe("0");
    const from2 = c.position;
    const p = c.waitFor(DONE_LINE, from2, 1000);
    feed(c, "out REFCOW-DONE 9 is not a marker\nline2\nREFCOW-DONE 3\n");
    const m2 = await p;
    expect(m2.match[1]).toBe("3");
    expect(c.textBetween(from2, m2.start)).toBe("out REFCOW-DONE 9 is not a marker\nline2");
  });

  it("reports complete lines without their line ending", () => {
    const c = new SerialConsole();
    const lines: string[] = [];
    c.onLine = (l) => lines.push(l);
    feed(c, "a\r\nb\nc");
    expect(lines).toEqual(["a", "b"]);
  });

  it("times out with the console tail, and close() rejects waiters", async () => {
    const c = new SerialConsole();
    feed(c, "something else\n");
    await expect(c.waitFor("never", 0, 20)).rejects.toThrow(/timed out.*\n.*something else/s);
    const p = c.waitFor("never", 0, 10_000);
    c.close(new Error("gone"));
    await expect(p).rejects.toThrow("gone");
    await expect(c.waitFor("x", 0, 10)).rejects.toThrow("gone");
  });

  it("keeps positions absolute when old text is dropped", () => {
    const c = new SerialConsole(16);
    feed(c, "0123456789".repeat(5));
    expect(c.position).toBe(50);
    expect(c.textBetween(45)).toBe("56789");
    expect(c.textBetween(0, 5)).toBe("");
  });
});
