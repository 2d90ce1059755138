#!/usr/bin/env bash
# The whole GPU check in one call of the device tool, on a lent H100/H200:
#   here:     bash benchmarks/gpu_wheels.sh
#   device:   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"])
# It installs the carried wheels and this checkout (no index), then
#   1. runs the kernel tests with Triton compiled for the GPU (tests/kernels, the
#      GPU-only tests in test_kernels_cuda.py included) and the engine on CUDA
#      (tests/engine/test_engine_cuda.py: fp32 and bf16 logprobs vs transformers);
#   2. runs the kernel benchmark's GPU branch (`python -m benchmarks.run kernels`:
#      bf16 fused LM head at T = 4K/16K/32K vs naive torch and Liger, logits path,
#      PPO loss).
# Everything it reports lands in $OUT (default /tmp/gpu_check): env.txt,
# pytest.log, bench.log, kernels.json. Copy the figures into benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 WANDB_MODE=disabled
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "carry .whl (bash benchmarks/gpu_wheels.sh)"; exit 1; }
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, triton, transformers, megatron.core as m; print('torch', torch.__version__, \
'triton', triton.__version__, 'transformers', transformers.__version__, 'megatron-core', m.__version__)"
} 2>&1 | tee "$out/env.txt"
status=0
timeout 300 python3 -m pytest -p no:cacheprovider -q -rs tests/kernels tests/engine/test_engine_cuda.py 2>&1 \
    | tee "$out/pytest.log" || status=1
timeout 240 python3 -m benchmarks.run kernels 2>&1 | tee "$out/bench.log" || status=1
cp benchmarks/results/kernels.json "$out/kernels.json" 2>/dev/null
exit $status
