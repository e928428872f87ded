/**
 * The guest's cold boot and warm start (src/guest/measure-boot.ts measureBoot), several runs, as medians with
 * their range, or every run as JSON:
 *
 *     npm run build && node dist/bench/boot.js [--runs 3] [--memory 128] [--cmdline "..."] [--json]
 */
import { measureBoot } from "../guest/measure-boot.js";
import { spread } from "../stats/latency.js";
import { integerOption, progress, runProgram } from "./entry.js";

const USAGE = `usage: node dist/bench/boot.js [options]

The guest's cold boot (emulator constructed → REFCOW-READY), the saving of its state, and its warm start
from that state (→ the prompt answers), on a raw in-memory disk; builds the guest image first when missing.

  --runs N          runs (default 3)
  --memory MiB      the guest's memory (default 128)
  --cmdline "..."   the guest kernel's command line instead of the default
  --json            every run as JSON instead of the summary
  -h, --help        this text
`;

runProgram(
  import.meta.url,
  {
    name: "boot bench",
    usage: USAGE,
    options: {
      runs: { type: "string", default: "3" },
      memory: { type: "string", default: "128" },
      cmdline: { type: "string" },
      json: { type: "boolean", default: false },
    },
  },
  async (values) => {
    const ms = await measureBoot({
      runs: integerOption("runs", values.runs),
      memoryMiB: integerOption("memory", values.memory),
      cmdline: values.cmdline,
      onProgress: progress,
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
  },
);
