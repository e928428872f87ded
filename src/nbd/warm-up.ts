/**
 * Warm-up of the inline export's request path before the first client is accepted. V8 compiles JavaScript
 * as it runs: the first thousand or so requests of a fresh server run in the interpreter and baseline code,
 * and the optimising compiler's background threads compete with the server and its client for the CPU. A
 * benchmark (or a guest) that starts right after the server would measure that. So the export worker first
 * serves a few thousand requests of its own, over a Unix socket, to a scratch image in the temporary
 * directory opened with the same format, scheme, allocation policy and cache mode: the same code (socket,
 * handshake, transmission, engine, file) is then compiled when the real image is served. The served image is
 * never touched; the scratch image and its directory are removed.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { AllocPolicyName, CacheMode, SchemeOptionValues } from "../engine/types.js";
import { createImagePath } from "../engine/open-path.js";
import { openTaskImage } from "../worker/node-worker.js";
import { NbdClient } from "./client.js";
import { inlineDisk } from "./inline-disk.js";
import { NbdServer } from "./server.js";

const CLUSTER = 65536;
const CLUSTERS = 256;

export interface WarmUpOptions {
  format: "qcow2" | "raw";
  scheme?: string;
  schemeOptions?: SchemeOptionValues;
  alloc?: AllocPolicyName;
  cache: CacheMode;
}

/** Serves `rounds` passes of 4 KiB writes (and reads, flushes) over NBD to a scratch image. */
export async function warmUp(opts: WarmUpOptions, rounds = 8): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "refcow-nbd-warm-"));
  try {
    const file = path.join(dir, "scratch.img");
    if (opts.format === "qcow2") createImagePath(file, { size: CLUSTERS * CLUSTER });
    else fs.writeFileSync(file, Buffer.alloc(CLUSTERS * CLUSTER));
    // Writethrough would fsync every write of the warm-up: writeback runs the same write path.
    const cache: CacheMode = opts.cache === "writethrough" ? "writeback" : opts.cache;
    const img = openTaskImage({ path: file, format: opts.format, scheme: opts.scheme, schemeOptions: opts.schemeOptions, alloc: opts.alloc, cache });
    try {
      const server = new NbdServer(
        { name: "", description: "", disk: inlineDisk(img), readOnly: false, cache, discard: "ignore", detectZeroes: "off", multiConn: false },
        { shared: 1 },
      );
      const socket = path.join(dir, "warm.sock");
      await server.listen({ socket });
      try {
        const client = await NbdClient.connect(socket);
        const data = new Uint8Array(4096).fill(0xa5);
        let x = 12345;
        const next = (): number => {
          x = (x * 1103515245 + 12345) >>> 0;
          return (x >>> 8) % CLUSTERS;
        };
        for (let r = 0; r < rounds; r++) {
          const depth = r % 2 === 0 ? 1 : 16;
          for (let i = 0; i < CLUSTERS; i += depth) {
            const batch: Promise<unknown>[] = [];
            for (let k = 0; k < depth; k++) batch.push(client.write(next() * CLUSTER, data));
            if (i % 64 === 0) batch.push(client.read(next() * CLUSTER, 4096));
            await Promise.all(batch);
            if (i % 64 === 64 - depth) await client.flush();
          }
        }
        await client.close();
      } finally {
        await server.stop();
      }
    } finally {
      img.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
