#!/usr/bin/env bash
# Several nodes with torchrun rendezvous. Run on every node:
#   NNODES=16 NODE_RANK=<i> MASTER_ADDR=<node 0 host> bash launch/multinode.sh CONFIG [key=value ...]
# Generation servers: start them with launch/sglang_servers.sh and pass rollout.urls=[...]; under Slurm,
# launch/slurm.sbatch does all of it from the config's cluster section.
set -euo pipefail
config=$1; shift
exec torchrun --nnodes "${NNODES:?}" --nproc-per-node "${NPROC:-8}" --node-rank "${NODE_RANK:?}" \
    --rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:?}:${MASTER_PORT:-29500}" --rdzv-id "${RUN_ID:-areal-mega}" \
    -m areal_mega.train --config "$config" "$@"
