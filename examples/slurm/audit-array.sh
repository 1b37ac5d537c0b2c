#!/usr/bin/env bash
# Run: sbatch examples/slurm/audit-array.sh            (4 tasks; then, when all are done:)
#      robaudit report runs/audit-array --gate "worst_case>=0.1"
# A Slurm job array: task K of N evaluates shard K/N of the run's parts and writes only its own parts and its own
# manifest (runs/audit-array/shards/). `robaudit report` merges what exists, lists missing parts and fails the gates
# of an incomplete run. A failed or preempted task is resumed by re-submitting just it (sbatch --array=K ...): it
# redoes only its missing parts. Train purifiers once before the array (robaudit train ddpm ...), not in every task.
#SBATCH --job-name=robaudit
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/robaudit-%A-%a.out
set -euo pipefail
CONFIG="${CONFIG:-examples/configs/quickstart.yaml}"
OUT="${OUT:-runs/audit-array}"
robaudit evaluate --config "$CONFIG" --out "$OUT" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --device auto
