#!/usr/bin/env bash
# One node: bash launch/train.sh CONFIG [key=value ...]   (NPROC defaults to the visible GPUs)
# Servers launched by the trainer need GPUs of their own: cluster.generation_gpus=G puts them on the
# node's last G GPUs and NPROC must then be GPUs - G (the trainer refuses a layout that shares a GPU).
set -euo pipefail
config=$1; shift
nproc=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
exec torchrun --nproc-per-node "$nproc" -m areal_mega.train --config "$config" "$@"
