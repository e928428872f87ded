/**
 * The client side of the export worker's warm-up (warm-up.ts), in a thread of its own: it connects to the
 * scratch export's socket and sends the warm-up's requests, then posts `{ done: true }` or `{ error }`.
 * Being in another thread keeps the serving thread's type feedback that of a server alone, as it is when
 * real clients (other processes) connect: V8 then optimises the server's code for exactly the objects it
 * will serve with, and nothing compiled in the warm-up is thrown away at the first real request.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type ClientTls, NbdClient } from "./client.js";

export interface WarmUpClientData {
  socket: string;
  /** Connections made one after the other, each with `rounds` passes. */
  connections: number;
  /** Passes over the scratch image's clusters, alternately at queue depth 1 and 16. */
  rounds: number;
  clusters: number;
  clusterSize: number;
  /** Connect over TLS. */
  tls?: WarmUpClientTls;
}

/** The warm-up client's TLS: with this pre-shared key (hexadecimal), or without one (X.509, the scratch server's certificate not checked). */
export interface WarmUpClientTls {
  psk?: { identity: string; keyHex: string };
}

/** The warm-up's load: 4 KiB writes to random clusters, a read and a flush every 64 writes, `connections` times. */
export async function warmUpLoad(d: WarmUpClientData): Promise<void> {
  const data = new Uint8Array(4096).fill(0xa5);
  let x = 12345;
  const next = (): number => {
    x = (x * 1103515245 + 12345) >>> 0;
    return (x >>> 8) % d.clusters;
  };
  for (let c = 0; c < d.connections; c++) await connection(d, data, next);
}

async function connection(d: WarmUpClientData, data: Uint8Array, next: () => number): Promise<void> {
  const psk = d.tls?.psk;
  const tls: ClientTls | undefined = d.tls && (psk ? { psk: { identity: psk.identity, key: Buffer.from(psk.keyHex, "hex") } } : { anyServerCertificate: true });
  const client = await NbdClient.connect(d.socket, tls);
  for (let r = 0; r < d.rounds; r++) {
    const depth = r % 2 === 0 ? 1 : 16;
    for (let i = 0; i < d.clusters; i += depth) {
      const batch: Promise<unknown>[] = [];
      // A batch leaves in one write, as fio's do: the server's reads then cut requests in two.
      client.corked(() => {
        for (let k = 0; k < depth; k++) batch.push(client.write(next() * d.clusterSize, data));
        if (i % 64 === 0) batch.push(client.read(next() * d.clusterSize, 4096));
      });
      await Promise.all(batch);
      if (i % 64 === 64 - depth) await client.flush();
    }
  }
  await client.close();
}

if (parentPort && (workerData as { warmUpClient?: WarmUpClientData })?.warmUpClient) {
  warmUpLoad((workerData as { warmUpClient: WarmUpClientData }).warmUpClient).then(
    () => parentPort!.postMessage({ done: true }),
    (e: unknown) => parentPort!.postMessage({ error: (e as Error)?.message ?? String(e) }),
  );
}
