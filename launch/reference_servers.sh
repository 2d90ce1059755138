#!/usr/bin/env bash
# Start N reference generation servers (CPU, transformers) speaking SGLang's protocol.
# Usage: bash launch/reference_servers.sh MODEL_DIR [NUM_SERVERS] [BASE_PORT] [extra launcher args]
# Prints one URL a line once every server answers /health; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: reference_servers.sh MODEL_DIR [NUM_SERVERS] [BASE_PORT]}
NUM=${2:-2}
PORT=${3:-30000}
shift $(( $# < 3 ? $# : 3 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m areal_mega.rollout.launcher --backend reference --model "$MODEL" \
    --num-servers "$NUM" --base-port "$PORT" "$@"
