/**
 * qemu-io's sigraise and abort end `refcow io` as a crash would, worker and all, under every refcount
 * scheme: the output and status are qemu-io's, what was flushed survives, and the next open (recovery, or the
 * journal's replay) followed by a clean close leaves an image `qemu-img check` finds clean.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SCHEME_NAMES } from "../../src/schemes/index.js";
import { asRefcowStderr, assertBuilt, maskTimings, run, tempDir } from "./qemu-harness.js";

const T = 120_000;
let dir: string;
beforeAll(() => {
  assertBuilt();
  dir = tempDir("io-crash");
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const CMDS = ["write -P 0x5a 0 64k", "flush", "aio_write -P 0x5b 1M 64k", "write -P 0x5c 2M 4k", "sigraise 9", "write -P 0x5d 3M 4k"];
const args = (cmds: string[]) => cmds.flatMap((c) => ["-c", c]);

describe.each(SCHEME_NAMES)("sigraise 9 under %s", (scheme) => {
  it(
    "output and status as qemu-io's; the next open recovers; flushed data survives",
    async () => {
      const q = path.join(dir, `${scheme}-q.qcow2`);
      const r = path.join(dir, `${scheme}-r.qcow2`);
      for (const f of [q, r]) expect((await run("qemu-img", ["create", "-q", "-f", "qcow2", f, "64M"], dir)).status).toBe(0);
      const qo = await run("qemu-io", ["-t", "writeback", ...args(CMDS), q], dir);
      const ro = await run("refcow", ["io", "--scheme", scheme, "-t", "writeback", ...args(CMDS), r], dir);
      expect({ out: maskTimings(ro.stdout), err: ro.stderr, status: ro.status }).toEqual({
        out: maskTimings(qo.stdout),
        err: asRefcowStderr(qo.stderr),
        status: qo.status,
      });
      expect(ro.status).not.toBe(0);
      // The next open under the scheme recovers; its clean close leaves plain qcow2.
      const again = await run("refcow", ["io", "--scheme", scheme, "-c", "read -P 0x5a 0 64k", r], dir);
      expect(again).toMatchObject({ status: 0, stderr: "" });
      expect((await run("qemu-img", ["check", r], dir)).status).toBe(0);
      const read = await run("qemu-io", ["-r", "-c", "read -P 0x5a 0 64k", r], dir);
      expect(read.stdout).not.toContain("Pattern verification failed");
    },
    T,
  );
});

it("abort ends the session as qemu-io's does", async () => {
  const r = path.join(dir, "abort.qcow2");
  expect((await run("qemu-img", ["create", "-q", "-f", "qcow2", r, "1M"], dir)).status).toBe(0);
  // A core file, where the system writes one, lands in the temporary directory.
  const ro = await run("refcow", ["io", "-c", "write -P 1 0 4k", "-c", "abort", "-c", "write -P 2 0 4k", r], dir);
  expect(ro.stdout).toMatch(/^wrote 4096\/4096 bytes at offset 0\n[^\n]*ops;[^\n]*\n$/);
  expect(ro.status).not.toBe(0);
  expect((await run("refcow", ["io", "-c", "read -P 1 0 4k", r], dir)).status).toBe(0);
  expect((await run("qemu-img", ["check", r], dir)).status).toBe(0);
});
