#!/usr/bin/env bash
# Start N SGLang servers on this node (GPU), server i on GPUs [i*TP, (i+1)*TP) and port BASE_PORT+i.
# Usage: bash launch/sglang_servers.sh MODEL_DIR [NUM_SERVERS] [TP_SIZE] [BASE_PORT] [extra sglang args]
# Env: HOST (default 127.0.0.1; set 0.0.0.0 only on a trusted network), API_KEY, MEM_FRACTION (0.8).
# Prints one URL a line once every server answers /health; Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: sglang_servers.sh MODEL_DIR [NUM_SERVERS] [TP_SIZE] [BASE_PORT]}
NUM=${2:-1}
TP=${3:-1}
PORT=${4:-30000}
shift $(( $# < 4 ? $# : 4 ))
ARGS=(--backend sglang --model "$MODEL" --num-servers "$NUM" --tp-size "$TP" --base-port "$PORT"
      --host "${HOST:-127.0.0.1}" --mem-fraction "${MEM_FRACTION:-0.8}")
if [[ -n "${API_KEY:-}" ]]; then ARGS+=(--api-key "$API_KEY"); fi
exec python -m areal_mega.rollout.launcher "${ARGS[@]}" "$@"
