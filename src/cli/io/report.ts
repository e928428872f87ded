/**
 * qemu-io's output formatting (qemu-io-cmds.c print_report, dump_buffer; util/cutils.c timestr; QEMU 7.2):
 *
 *   wrote 4096/4096 bytes at offset 0
 *   4 KiB, 1 ops; 00.00 sec (21.704 MiB/sec and 5556.1729 ops/sec)
 *
 * or with -C "bytes,ops,h:mm:ss.ss,bytes/sec,ops/sec".
 */
import { cvtstr } from "../human-size.js";
import { fixed, fixedZeroPad } from "../printf.js";
import { zeroPad } from "../text.js";

/** An elapsed time split like a struct timespec. */
export interface Elapsed {
  sec: number;
  nsec: number;
}

export function elapsedSince(startNs: bigint, endNs: bigint = process.hrtime.bigint()): Elapsed {
  const d = endNs - startNs;
  return { sec: Number(d / 1_000_000_000n), nsec: Number(d % 1_000_000_000n) };
}

/** timestr(): "%05.2f sec" under a second, else "h:mm:ss.ss"; always the latter with -C. */
export function timestr(t: Elapsed, fixedTime: boolean): string {
  const frac = t.nsec / 1e9;
  if (fixedTime || t.sec > 0) {
    const hours = Math.trunc(t.sec / 3600);
    const minutes = Math.trunc((t.sec % 3600) / 60);
    const seconds = (t.sec % 60) + frac;
    return `${hours}:${zeroPad(minutes, 2)}:${fixedZeroPad(seconds, 5, 2)}`;
  }
  return `${fixedZeroPad(frac, 5, 2)} sec`;
}

/** tdiv(): value per second of elapsed time. */
function tdiv(value: number, t: Elapsed): number {
  return value / (t.sec + t.nsec / 1e9);
}

export function printReport(op: string, t: Elapsed, offset: number, count: number, total: number, ops: number, machine: boolean): string {
  const ts = timestr(t, machine);
  if (!machine) {
    return (
      `${op} ${total}/${count} bytes at offset ${offset}\n` +
      `${cvtstr(total)}, ${ops} ops; ${ts} (${cvtstr(tdiv(total, t))}/sec and ${fixed(tdiv(ops, t), 4)} ops/sec)\n`
    );
  }
  return `${total},${ops},${ts},${fixed(tdiv(total, t), 3)},${fixed(tdiv(ops, t), 3)}\n`;
}

function isAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** read -v: "%08x:  " + "%02x " per byte + " " + isalnum ? char : '.'. */
export function dumpBuffer(buf: Uint8Array, offset: number): string {
  let out = "";
  for (let i = 0; i < buf.length; i += 16) {
    const line = buf.subarray(i, Math.min(i + 16, buf.length));
    out += `${(offset + i).toString(16).padStart(8, "0")}:  `;
    for (const b of line) out += `${b.toString(16).padStart(2, "0")} `;
    out += " ";
    for (const b of line) out += isAlnum(b) ? String.fromCharCode(b) : ".";
    out += "\n";
  }
  return out;
}
