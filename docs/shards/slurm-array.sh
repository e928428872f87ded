#!/usr/bin/env bash
# The benchmark matrix in shards as a Slurm array job: one array task per shard, each on its own node.
#   sbatch docs/shards/slurm-array.sh            # 4 shards (the --array range below), quick options
#   BENCH_OPTIONS="--reps 5" sbatch --array=1-8 --export=ALL,SHARDS=8 docs/shards/slurm-array.sh
# When every task has ended, merge the shards (missing ones are named in the report):
#   node dist/cli/bin.js report results/shard-* --out results/report
# Run it from a checkout where `npm ci` has been run (qemu-utils, fio and strace on the nodes), on a shared
# file system: every task writes its own results/shard-I folder.
#SBATCH --job-name=refcow-bench
#SBATCH --array=1-4
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
#SBATCH --output=results/slurm-%A_%a.out
set -euo pipefail
SHARDS=${SHARDS:-4}
mkdir -p results
# Each task benchmarks in its node's local temporary directory (--dir), not on the shared file system.
exec node dist/cli/bin.js bench ${BENCH_OPTIONS:---quick} \
  --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}" \
  --dir "${TMPDIR:-/tmp}/refcow-bench-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}" \
  --out "results/shard-${SLURM_ARRAY_TASK_ID}"
