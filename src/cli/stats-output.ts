/** `io --stats`: the engine's per-purpose I/O cost breakdown as a table (refcow's own output, not QEMU's). */
import type { CostBreakdown } from "./engine.js";
import { fixed } from "./printf.js";
import { padLeft, padRight } from "./text.js";

const COLUMNS: [string, number][] = [
  ["purpose", 16],
  ["reads", 9],
  ["read bytes", 14],
  ["writes", 9],
  ["write bytes", 14],
  ["flushes", 9],
  ["time ms", 12],
];

function row(cells: string[]): string {
  return cells.map((c, i) => (i === 0 ? padRight(c, COLUMNS[0]![1]) : padLeft(c, COLUMNS[i]![1]))).join("").trimEnd() + "\n";
}

export function statsTable(stats: CostBreakdown): string {
  let out = "I/O cost by purpose:\n" + row(COLUMNS.map(([h]) => h));
  const total = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, flushes: 0, timeNs: 0 };
  for (const [purpose, c] of Object.entries(stats)) {
    if (!c) continue;
    out += row([purpose, String(c.reads), String(c.readBytes), String(c.writes), String(c.writeBytes), String(c.flushes), fixed(c.timeNs / 1e6, 3)]);
    total.reads += c.reads;
    total.readBytes += c.readBytes;
    total.writes += c.writes;
    total.writeBytes += c.writeBytes;
    total.flushes += c.flushes;
    total.timeNs += c.timeNs;
  }
  out += row(["total", String(total.reads), String(total.readBytes), String(total.writes), String(total.writeBytes), String(total.flushes), fixed(total.timeNs / 1e6, 3)]);
  return out;
}
