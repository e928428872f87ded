/** The Ctrl-A escape parser of `refcow boot` (QEMU's -nographic mux keys). */
import { describe, expect, it } from "vitest";
import { EscapeParser, type EscapeEvent } from "../../src/v86/escape-keys.js";

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
/** Events with data shown as strings. */
function feed(p: EscapeParser, s: string): Array<string | { command: string }> {
  return p.feed(bytes(s)).map((e: EscapeEvent) => (e.type === "data" ? String.fromCharCode(...e.bytes) : { command: e.command }));
}

describe("EscapeParser", () => {
  it("passes plain input through as one run", () => {
    expect(feed(new EscapeParser(), "ls -l\r")).toEqual(["ls -l\r"]);
  });

  it("recognises x, c, h, ?, s after Ctrl-A, between runs of data", () => {
    const p = new EscapeParser();
    expect(feed(p, "ab\x01xcd")).toEqual(["ab", { command: "quit" }, "cd"]);
    expect(feed(p, "\x01c")).toEqual([{ command: "switch" }]);
    expect(feed(p, "\x01h\x01?")).toEqual([{ command: "help" }, { command: "help" }]);
    expect(feed(p, "\x01s")).toEqual([{ command: "sync" }]);
  });

  it("Ctrl-A Ctrl-A is one literal Ctrl-A, joined with the data around it", () => {
    expect(feed(new EscapeParser(), "a\x01\x01b")).toEqual(["a\x01b"]);
  });

  it("keeps the escape across reads (Ctrl-A in one, its key in the next)", () => {
    const p = new EscapeParser();
    expect(feed(p, "echo\x01")).toEqual(["echo"]);
    expect(p.inEscape).toBe(true);
    expect(feed(p, "x")).toEqual([{ command: "quit" }]);
    expect(p.inEscape).toBe(false);
    expect(feed(p, "\x01")).toEqual([]);
    expect(feed(p, "\x01rest")).toEqual(["\x01rest"]);
  });

  it("drops Ctrl-A and an unknown key, as QEMU does", () => {
    expect(feed(new EscapeParser(), "a\x01zb\x01\x03c")).toEqual(["abc"]);
  });

  it("a command key without Ctrl-A is data", () => {
    expect(feed(new EscapeParser(), "xch")).toEqual(["xch"]);
  });
});
