#!/usr/bin/env bash
# The CPU quickstart (main job): install, build a tiny Qwen2 + character tokenizer, SFT warm start from a
# noisy teacher, then critic-free PPO with two reference generation servers and a 2-rank megatron-core trainer.
# Writes outputs/quickstart/summary.json (accuracy_before/after = held-out Pass@1 over 4 samples at T = 1,
# greedy_before/after, metric, steps, wall_seconds) and curves.png. SEED=N varies the model's initialisation
# and the trainer's seeds (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0
python -m pip install -q --disable-pip-version-check -e '.[test]'
export OMP_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1
out=outputs/quickstart
rm -rf "$out"
seed=${SEED:-0}
python launch/make_tiny_model.py "$out/init" --seed "$seed"
torchrun --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "${MASTER_PORT:-29510}" \
    -m areal_mega.train --config configs/quickstart/sft.yaml engine.seed="$seed" "$@"
torchrun --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "${MASTER_PORT:-29510}" \
    -m areal_mega.train --config configs/quickstart/rl.yaml engine.seed="$seed" "$@"
python -m areal_mega.plot "$out" --out "$out/curves.png"
cat "$out/summary.json"
