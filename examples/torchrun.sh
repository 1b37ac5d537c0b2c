#!/usr/bin/env bash
# Run: bash examples/torchrun.sh [RANKS]
# The quickstart audit on RANKS torchrun ranks (default 2): gloo on CPU, NCCL with one GPU per rank (cuda:LOCAL_RANK).
# Every rank evaluates its share of the parts; rank 0 merges, writes the reports and judges the gates, so the exit
# code is the audit's. The records and summary.json equal a one-process run of the same config.
set -euo pipefail
RANKS="${1:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"   # one CPU thread per rank: the ranks share the cores
torchrun --standalone --nproc-per-node "$RANKS" -m robaudit evaluate \
    --config examples/configs/quickstart.yaml --out "runs/quickstart-${RANKS}ranks"
# Several machines: the same command on each node, with
#   torchrun --nnodes M --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HOST:29500 ...
# and --out on a filesystem every node can write.
