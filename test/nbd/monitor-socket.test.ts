/**
 * `refcow nbd --monitor SOCK`: a live internal snapshot of the served image while a client writes, in both
 * serve modes. QEMU's tools are the oracle: qemu-img snapshot -l sees the snapshot, qemu-img check finds the
 * image clean, and qemu-img convert -l reads the snapshot's content: a prefix of the client's sequential
 * writes, every write acknowledged before the request in it, none written after the answer.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { NbdClient } from "../../src/nbd/client.js";
import { monitorCommand, parseMonitorCommand } from "../../src/nbd/monitor-socket.js";
import { qemuCheck, qemuImg, qemuRaw, tempDir } from "../helpers/qemu.js";

const dir = tempDir("monitor");
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const BLOCK = 65536;
const BLOCKS = 256; // the image's 16 MiB
const quiet = { out: () => undefined, err: (t: string) => process.stderr.write(t) };

async function waitForFile(p: string, server: Promise<number>): Promise<void> {
  let ended = false;
  void server.finally(() => (ended = true));
  while (!fs.existsSync(p)) {
    if (ended) throw new Error(`refcow nbd ended before ${p} appeared (status ${await server})`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const patternOf = (i: number) => (i % 250) + 1;

describe("refcow nbd --monitor", () => {
  for (const [mode, scheme] of [
    ["inline", "eager"],
    ["ring", "owner"],
  ] as const) {
    it(`takes a live internal snapshot while a client writes (--serve=${mode}, ${scheme})`, async () => {
      const image = path.join(dir, `${mode}.qcow2`);
      qemuImg(["create", "-q", "-f", "qcow2", image, String(BLOCK * BLOCKS)]);
      const sock = path.join(dir, `${mode}.sock`);
      const mon = path.join(dir, `${mode}.mon`);
      const server = main(["nbd", "-k", sock, "--monitor", mon, `--serve=${mode}`, "--no-warm-up", "--scheme", scheme, "-f", "qcow2", image], quiet);
      await waitForFile(mon, server);
      const client = await NbdClient.connect(sock);

      // Sequential writes; the snapshot is asked for after the 41st is acknowledged, and the client goes on
      // writing until the answer has come and 16 writes more.
      let answer: Promise<Awaited<ReturnType<typeof monitorCommand>>> | undefined;
      let answered = false;
      let issuedBeforeAnswer = -1;
      let written = 0;
      let after = 0;
      for (let i = 0; i < BLOCKS && after < 16; i++) {
        await client.write(i * BLOCK, new Uint8Array(BLOCK).fill(patternOf(i)));
        written = i + 1;
        if (i === 40) answer = monitorCommand(mon, "snapshot -c mid").finally(() => (answered = true));
        if (answered) {
          if (issuedBeforeAnswer < 0) issuedBeforeAnswer = i; // write i was issued before the answer was seen
          after++;
        }
      }
      const a = await answer!;
      expect(a.error).toBeUndefined();
      expect(a.lines).toEqual(["1 mid"]);
      if (issuedBeforeAnswer < 0) issuedBeforeAnswer = written;
      expect(written).toBeGreaterThan(issuedBeforeAnswer);

      // The answers of a bad request and a duplicate name; the connection's list shows the snapshot.
      expect((await monitorCommand(mon, "snapshot -c mid")).error).toMatch(/already exists/);
      expect((await monitorCommand(mon, "snapshot -x")).error).toMatch(/^usage: snapshot -c NAME/);
      expect((await monitorCommand(mon, "format c:")).error).toBe("unknown command 'format' (try 'help')");
      const list = await monitorCommand(mon, "snapshot -l");
      expect(list.error).toBeUndefined();
      expect(list.lines[0]).toBe("Snapshot list:");
      expect(list.lines[2]).toMatch(/^1 +mid +0 B /);

      await client.close();
      expect(await server).toBe(0); // the last client has gone: the image is closed
      expect(fs.existsSync(mon)).toBe(false);

      expect(qemuImg(["snapshot", "-l", image])).toMatch(/\n1 +mid +0 B /);
      const check = qemuCheck(image);
      expect(check.status, check.out).toBe(0);
      expect(check.out).toContain("No errors were found on the image.");

      // The snapshot holds a prefix of the writes: all acknowledged before the request, none after the answer.
      const snap = qemuRaw(image, "mid");
      let prefix = 0;
      while (prefix < BLOCKS && snap[prefix * BLOCK] === patternOf(prefix)) prefix++;
      expect(prefix).toBeGreaterThanOrEqual(41);
      expect(prefix).toBeLessThanOrEqual(issuedBeforeAnswer);
      for (let i = 0; i < BLOCKS; i++) {
        const want = i < prefix ? patternOf(i) : 0;
        const block = snap.subarray(i * BLOCK, (i + 1) * BLOCK);
        expect(block.every((b) => b === want), `snapshot block ${i}`).toBe(true);
      }
      const active = qemuRaw(image);
      for (let i = 0; i < BLOCKS; i++) expect(active[i * BLOCK + BLOCK - 1], `active block ${i}`).toBe(i < written ? patternOf(i) : 0);
    });
  }

  it("refuses a monitor path where a file that is not a socket is", async () => {
    const image = path.join(dir, "in-the-way.qcow2");
    qemuImg(["create", "-q", "-f", "qcow2", image, "1M"]);
    const notSocket = path.join(dir, "plain-file");
    fs.writeFileSync(notSocket, "keep me");
    const err: string[] = [];
    const code = await main(["nbd", "-k", path.join(dir, "x.sock"), "--monitor", notSocket, "--no-warm-up", image], { out: () => undefined, err: (t) => err.push(t) });
    expect(code).toBe(1);
    expect(err.join("")).toMatch(/Failed to open the monitor socket '.*plain-file': --monitor .*plain-file: a file that is not a socket is in the way/);
    expect(fs.readFileSync(notSocket, "utf8")).toBe("keep me");
    expect(qemuCheck(image).status).toBe(0);
  });

  it("parses the commands it documents and names what is wrong with the others", () => {
    expect(parseMonitorCommand("snapshot -c a")).toEqual({ kind: "create", name: "a" });
    expect(parseMonitorCommand("  snapshot   -d  a ")).toEqual({ kind: "delete", name: "a" });
    expect(parseMonitorCommand("snapshot -l")).toEqual({ kind: "list" });
    expect(parseMonitorCommand("help")).toEqual({ kind: "help" });
    expect(() => parseMonitorCommand("snapshot -c")).toThrow("snapshot -c needs a snapshot name");
    expect(() => parseMonitorCommand("")).toThrow("empty command");
    expect(() => parseMonitorCommand("snapshot -c a b")).toThrow(/^usage:/);
  });
});
