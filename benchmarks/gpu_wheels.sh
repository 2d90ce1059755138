#!/usr/bin/env bash
# Fetch, on the development machine, the Python packages the lent GPU image lacks, as
# Python 3.12 x86-64 wheels in .whl/ (git-ignored), for benchmarks/gpu_check.sh to carry.
# The image has torch, triton, transformers, safetensors, pytest, sympy and aiohttp already.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    megatron-core==0.16.1 omegaconf==2.4.0 liger-kernel==0.8.5
ls -l .whl
