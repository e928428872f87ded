/**
 * A writer process is killed (SIGKILL) in the middle of its workload, several times per scheme. Reopening
 * the image recovers it; qemu-img check then finds it clean, and every write acknowledged by a completed
 * flush reads back (unless a later write to the same place was under way).
 */
import { afterAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { createImagePath, openImagePath } from "../../src/open/open-path.js";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { qemuCheck, tempDir } from "../helpers/qemu.js";

const dir = tempDir("kill");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const child = path.join(import.meta.dirname, "writer-child.mjs");

function runAndKill(file: string, scheme: string, cache: string, seed: number, afterAcks: number): Promise<string[]> {
  // Returns the writer's ISSUE and ACK lines, in order.
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, file, scheme, cache, String(seed)], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => {
      out += d;
      if (out.split("\n").filter((l) => l.startsWith("ACK")).length >= afterAcks) p.kill("SIGKILL");
    });
    p.stderr.on("data", (d: Buffer) => (err += d));
    p.on("exit", (code, signal) => {
      if (signal !== "SIGKILL") return reject(new Error(`writer exited with ${code}: ${err}`));
      resolve(out.split("\n").filter((l) => l.startsWith("ACK") || l.startsWith("ISSUE")));
    });
  });
}

describe("killing a writer process", () => {
  for (const scheme of SCHEME_NAMES) {
    for (const cache of ["writeback", "writethrough"]) {
      it(`${scheme}/${cache}: recovered, clean, acknowledged writes intact`, async () => {
        for (const [round, acks] of [[1, 30], [2, 70], [3, 120]] as const) {
          const file = path.join(dir, `${scheme}-${cache}-${round}.qcow2`);
          createImagePath(file, { size: 32 * 65536 });
          const lines = await runAndKill(file, scheme, cache, round * 7919, acks);
          // Per offset: the last acknowledged value, and the values of writes issued after it (which may or
          // may not have reached the disk before the kill).
          const allowed = new Map<number, Set<number>>();
          let lastAck = -1;
          lines.forEach((line, i) => {
            const [kind, off, byte] = line.split(" ");
            if (kind === "ACK") {
              allowed.set(Number(off), new Set([Number(byte)]));
              lastAck = i;
            }
          });
          lines.slice(lastAck + 1).forEach((line) => {
            const [kind, off, byte] = line.split(" ");
            if (kind === "ISSUE") allowed.get(Number(off))?.add(Number(byte));
          });
          // An image with only bits QEMU knows (a dirty-bit scheme's): QEMU recovers the killed writer's image
          // too. One with a refcow log bit (journal, data log) QEMU refuses, by design; eager leaves no dirty bit.
          const incompat = fs.readFileSync(file).readBigUInt64BE(72);
          if (scheme !== "eager" && (incompat & ~0x1fn) === 0n) {
            const copy = `${file}.qemu`;
            fs.copyFileSync(file, copy);
            expect(qemuCheck(copy, ["-r", "all"]).status, `qemu-img check -r all after killing ${scheme}`).toBe(0);
          }
          const img = openImagePath(file, { scheme }); // recovery
          img.close();
          const check = qemuCheck(file);
          expect([0, 3], `qemu-img check after killing ${scheme}/${cache}:\n${check.out}`).toContain(check.status);
          const ro = openImagePath(file, { readOnly: true });
          for (const [off, values] of allowed) {
            const got = ro.read(off, 4096);
            const uniform = got.every((b) => b === got[0]);
            expect(uniform && values.has(got[0]), `offset ${off} after killing ${scheme}/${cache}: read ${got[0]}, expected one of ${[...values]}`).toBe(true);
          }
          ro.close();
        }
      }, 60_000);
    }
  }
});
