/**
 * A serial console in a read-only textarea: the guest's output appended as text (a line editor's cursor
 * movements and colours — CSI escape sequences — dropped; backspace erases; carriage returns ignored), and
 * the keys typed while it has the focus sent to the guest as a terminal would (Enter is CR, Backspace DEL,
 * Ctrl+letter the control code, arrows ANSI sequences), pasted text too.
 *
 * A textarea is also what keeps v86's PS/2 keyboard out of it: v86 ignores keys aimed at inputs and textareas.
 */
const KEEP = 200_000;

const SEQUENCES: Record<string, string> = {
  Enter: "\r",
  Backspace: "\x7f",
  Tab: "\t",
  Escape: "\x1b",
  ArrowUp: "\x1b[A",
  ArrowDown: "\x1b[B",
  ArrowRight: "\x1b[C",
  ArrowLeft: "\x1b[D",
  Home: "\x1b[H",
  End: "\x1b[F",
  Delete: "\x1b[3~",
};

export class SerialTerminal {
  /** Everything shown since the last `clear()` (as shown: escape sequences dropped). */
  text = "";
  private escape: "" | "esc" | "csi" = "";
  private scheduled = false;

  constructor(
    private readonly el: HTMLTextAreaElement,
    private readonly send: (bytes: Uint8Array) => void,
  ) {
    el.addEventListener("keydown", (e) => this.key(e));
    el.addEventListener("paste", (e) => {
      const t = e.clipboardData?.getData("text") ?? "";
      if (t) this.sendText(t.replace(/\r?\n/g, "\r"));
      e.preventDefault();
    });
  }

  clear(): void {
    this.text = "";
    this.escape = "";
    this.el.value = "";
  }

  /** The guest's bytes. */
  output(bytes: Uint8Array): void {
    let t = this.text;
    for (const b of bytes) {
      if (this.escape === "esc") {
        this.escape = b === 0x5b ? "csi" : "";
        continue;
      }
      if (this.escape === "csi") {
        if (b >= 0x40 && b <= 0x7e) this.escape = "";
        continue;
      }
      if (b === 0x1b) this.escape = "esc";
      else if (b === 0x08) {
        if (t.length && !t.endsWith("\n")) t = t.slice(0, -1);
      } else if (b === 0x0a || b === 0x09 || (b >= 0x20 && b !== 0x7f)) t += String.fromCharCode(b);
    }
    this.text = t.length > KEEP * 1.5 ? t.slice(-KEEP) : t;
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => {
        this.scheduled = false;
        const el = this.el;
        const atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
        el.value = this.text;
        if (atBottom) el.scrollTop = el.scrollHeight;
      });
    }
  }

  private key(e: KeyboardEvent): void {
    if (e.metaKey || (e.ctrlKey && e.shiftKey)) return; // the browser's own shortcuts
    let s: string | undefined = SEQUENCES[e.key];
    if (s === undefined && e.ctrlKey && !e.altKey && e.key.length === 1) {
      const c = e.key.toUpperCase().charCodeAt(0);
      // Ctrl+C is the guest's interrupt; the browser's copy and paste are Ctrl+Shift+C / V.
      if (c >= 0x40 && c <= 0x5f) s = String.fromCharCode(c - 0x40);
    } else if (s === undefined && !e.ctrlKey && e.key.length === 1) {
      s = e.altKey ? `\x1b${e.key}` : e.key;
    }
    if (s === undefined) return;
    e.preventDefault();
    this.sendText(s);
  }

  private sendText(s: string): void {
    // Latin-1 per byte, as v86's serial port takes it; other characters as UTF-8.
    this.send(new TextEncoder().encode(s));
  }
}
