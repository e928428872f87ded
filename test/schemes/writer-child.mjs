// A writer process for the kill test: random 4 KiB writes with flushes (and a snapshot), printing
// "ISSUE <off> <byte>" before each write and "ACK <off> <byte>" once it is covered by a completed flush.
// It never closes: the test kills it.
import { openImagePath } from "../../dist/open/open-path.js";

const [file, scheme, cache, seedArg] = process.argv.slice(2);
const img = openImagePath(file, { scheme, cache });
let s = Number(seedArg) >>> 0 || 1;
const rnd = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const clusters = img.size / 65536;
let pending = [];
for (let i = 1; ; i++) {
  const off = Math.floor(rnd() * clusters) * 65536 + Math.floor(rnd() * 15) * 4096;
  const byte = 1 + (i % 250);
  process.stdout.write(`ISSUE ${off} ${byte}\n`);
  img.write(off, new Uint8Array(4096).fill(byte));
  pending.push(`${off} ${byte}`);
  if (i === 40) img.snapshotCreate("mid");
  if (cache === "writethrough" || i % 8 === 0) {
    if (cache !== "writethrough") img.flush();
    process.stdout.write(pending.map((p) => `ACK ${p}\n`).join(""));
    pending = [];
  }
}
