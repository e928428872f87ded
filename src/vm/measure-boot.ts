/**
 * Measures the guest's cold boot (emulator constructed → REFCOW-READY) and warm start (emulator constructed
 * with a saved state → the prompt answers a ping), on a raw in-memory disk.
 *
 *   node dist/vm/measure-boot.js [--runs 3] [--memory 128] [--cmdline "..."] [--json]
 *
 * Builds the guest image first when it is missing. v86's guest time is host time and the emulator runs on
 * one host thread, so the numbers move with host load: the load average is printed with them.
 */
import { loadavg } from "node:os";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ensureGuestImage } from "./guest-image.js";
import { GuestRunner } from "./guest-runner.js";
import { MemoryAsyncDisk } from "./memory-async-disk.js";
import { spread } from "../stats/latency.js";

export interface BootMeasurement {
  coldMs: number;
  /** Host CPU time (user + system, all threads) the cold boot used: less sensitive to host load than coldMs. */
  coldCpuMs: number;
  saveMs: number;
  stateBytes: number;
  warmMs: number;
  /** 1-minute load average when the run ended. */
  load: number;
}

export async function measureBoot(options: { runs?: number; memoryMiB?: number; cmdline?: string; onProgress?: (m: string) => void } = {}): Promise<BootMeasurement[]> {
  await ensureGuestImage({ onProgress: options.onProgress });
  const out: BootMeasurement[] = [];
  for (let i = 0; i < (options.runs ?? 3); i++) {
    const disk = new MemoryAsyncDisk(64 << 20);
    const common = { disk, memoryMiB: options.memoryMiB, cmdline: options.cmdline };
    const cpu0 = process.cpuUsage();
    const cold = await GuestRunner.boot(common);
    const cpu = process.cpuUsage(cpu0);
    await cold.check("true");
    const t = performance.now();
    const state = await cold.saveState({ resume: false });
    const saveMs = performance.now() - t;
    await cold.destroy();
    const warm = await GuestRunner.boot({ ...common, initialState: state });
    await warm.check("true");
    await warm.destroy();
    const m = { coldMs: cold.readyMs, coldCpuMs: (cpu.user + cpu.system) / 1000, saveMs, stateBytes: state.byteLength, warmMs: warm.readyMs, load: loadavg()[0]! };
    options.onProgress?.(`run ${i + 1}: cold ${(m.coldMs / 1000).toFixed(2)} s (CPU ${(m.coldCpuMs / 1000).toFixed(2)} s), save ${m.saveMs.toFixed(0)} ms (${(m.stateBytes / 2 ** 20).toFixed(1)} MiB), warm ${m.warmMs.toFixed(0)} ms, load ${m.load.toFixed(2)}`);
    out.push(m);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "3" },
      memory: { type: "string", default: "128" },
      cmdline: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const ms = await measureBoot({
    runs: Number(values.runs),
    memoryMiB: Number(values.memory),
    cmdline: values.cmdline,
    onProgress: (m) => process.stderr.write(m + "\n"),
  });
  if (values.json) {
    process.stdout.write(JSON.stringify(ms, null, 2) + "\n");
    return;
  }
  // Over the runs: src/stats's median (nearest rank: the lower middle of an even count) with min and max.
  const fmt = (xs: number[], unit: (x: number) => string) => {
    const s = spread(xs);
    return `median ${unit(s.median)} (min ${unit(s.min)}, max ${unit(s.max)})`;
  };
  process.stdout.write(
    [
      `cold boot to REFCOW-READY: ${fmt(ms.map((m) => m.coldMs), (x) => `${(x / 1000).toFixed(2)} s`)}`,
      `  host CPU time of the cold boot: ${fmt(ms.map((m) => m.coldCpuMs), (x) => `${(x / 1000).toFixed(2)} s`)}`,
      `save_state (stopped, drained): ${fmt(ms.map((m) => m.saveMs), (x) => `${x.toFixed(0)} ms`)}, ${(spread(ms.map((m) => m.stateBytes)).median / 2 ** 20).toFixed(1)} MiB`,
      `warm start to the prompt: ${fmt(ms.map((m) => m.warmMs), (x) => `${x.toFixed(0)} ms`)}`,
      `host load average: ${ms.map((m) => m.load.toFixed(2)).join(", ")}`,
    ].join("\n") + "\n",
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  });
}
