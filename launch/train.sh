#!/usr/bin/env bash
# One node: bash launch/train.sh CONFIG [key=value ...]   (NPROC defaults to the visible GPUs)
set -euo pipefail
config=$1; shift
nproc=${NPROC:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
exec torchrun --nproc-per-node "$nproc" -m areal_mega.train --config "$config" "$@"
