/**
 * qemu-io's aio_write through the worker's request ring: several requests are outstanding at once (each
 * command returns once its request is submitted; they start together), aio_flush prints every completion,
 * and QEMU reads what they wrote. Runs the compiled worker in dist/ (built by `pretest`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, expect, it } from "vitest";
import type { CliIo } from "../../src/cli/command.js";
import { openForIo } from "../../src/cli/commands/io.js";
import { AioRequests } from "../../src/cli/io/aio-requests.js";
import type { IoContext } from "../../src/cli/io/context.js";
import { runIoCommand } from "../../src/cli/io/table.js";
import { qemuCheck, qemuImg, qemuIo, tempDir } from "../helpers/qemu.js";

const dir = tempDir("io-aio-ring");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

it("aio_write keeps several requests in flight through the ring; aio_flush reports them all", async () => {
  const file = path.join(dir, "disk.qcow2");
  qemuImg(["create", "-q", "-f", "qcow2", file, "64M"]);
  const opened = await openForIo(file, { readOnly: false, cache: "writeback", snapshot: false, inProcess: false });
  let out = "";
  const io: CliIo = { out: (s) => void (out += s), err: (s) => void (out += s) };
  const ctx: IoContext = { target: opened.target, io, quit: false, aio: new AioRequests() };
  try {
    for (let i = 0; i < 8; i++) expect(await runIoCommand(ctx, `aio_write -P ${i + 1} ${i}M 64k`)).toBe(0);
    // The requests start together (as the next command would start them): all eight are in the ring at
    // once, before the client has looked for a completion.
    ctx.aio.start();
    expect(opened.target.inFlight!()).toBe(8);
    // Nothing is printed before the session waits for I/O.
    expect(out).toBe("");
    expect(await runIoCommand(ctx, "aio_flush")).toBe(0);
    expect(opened.target.inFlight!()).toBe(0);
  } finally {
    await opened.close();
  }
  const reports = out.match(/^wrote 65536\/65536 bytes at offset \d+$/gm) ?? [];
  expect(reports.sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((m) => `wrote 65536/65536 bytes at offset ${m * 1048576}`).sort());
  expect(qemuCheck(file)).toMatchObject({ status: 0 });
  const check = qemuIo(file, [0, 1, 2, 3, 4, 5, 6, 7].map((m) => `read -P ${m + 1} ${m}M 64k`));
  expect(check).not.toContain("Pattern verification failed");
});
