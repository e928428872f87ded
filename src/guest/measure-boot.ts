/**
 * Measures the guest's cold boot (emulator constructed → REFCOW-READY) and warm start (emulator constructed
 * with a saved state → the prompt answers a ping), on a raw in-memory disk.
 *
 *   node dist/bench/boot.js [--runs 3] [--memory 128] [--cmdline "..."] [--json]   (src/bench/boot.ts)
 *
 * Builds the guest image first when it is missing. v86's guest time is host time and the emulator runs on
 * one host thread, so the numbers move with host load: the load average is printed with them.
 */
import { loadavg } from "node:os";
import { ensureGuestImage } from "./guest-image.js";
import { GuestRunner } from "./guest-runner.js";
import { MemoryAsyncDisk } from "../v86/memory-async-disk.js";

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
