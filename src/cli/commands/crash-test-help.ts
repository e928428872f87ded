/** The text of `refcow crash-test --help` and its line in `refcow --help`, kept apart so that the CLI loads the command only when it runs. */
import { CRASH_GEOMETRIES } from "../../harness/crash-geometries.js";

export const CRASH_TEST_SUMMARY = "crash-consistency harness: every crash state of seeded workloads, recovered and verified";

export const CRASH_TEST_USAGE =
  "crash-test [--scheme S,...] [-t cache,...] [--seed N] [--seeds N] [--steps N] [--geometry G] [--alloc P] [--reflink] [--torn N|all] [--subsets N] [--qemu-sample N|all] [--check-sample N] [--at OP]";

export const CRASH_TEST_HELP =
  "Runs seeded workloads (writes, zero writes, discards, flushes, snapshot create/apply/delete, checkpoints,\n" +
  "close and reopen) on a fault-injecting file and verifies every crash state at every write: recovery,\n" +
  "refcow check, acknowledged data, snapshot contents; a sample of states (or all) also by qemu-img check\n" +
  "and compare; another sample repaired by check -r all under the scheme, against qemu-img check -r all.\n" +
  "Defaults: every scheme, -t writeback,writethrough, --seed 1 --seeds 3 --steps 60,\n" +
  `--qemu-sample 12, --check-sample 6, geometries rotating by seed (${CRASH_GEOMETRIES.map((g) => g.name).join(", ")}), --alloc append\n` +
  "for odd seeds and first-fit for even ones.\n" +
  "--reflink: the file shares extents (copy-free COW, at 512-byte blocks): each clone is a crash point too.\n" +
  "Exit code 1 when any state failed; each reported failure comes with the command line that reruns it.\n";
