"""The Megatron engine on one GPU (skipped without CUDA): logprobs vs transformers, one optimizer step.

Without Transformer Engine in the image this runs the local layer spec on
CUDA (NCCL, one rank); with it, the TE spec. benchmarks/gpu_check.sh runs it.
"""
import math

import pytest

from tests.distributed import torchrun

pytestmark = pytest.mark.gpu

WORKER = "tests.engine.worker_engine"


@pytest.mark.parametrize("dtype, bound", [("fp32", 1e-3), ("bf16", 0.1)])
def test_engine_on_cuda_matches_transformers(dtype, bound, tiny_qwen2_dir, tmp_path):
    """fp32 within 1e-3 (TF32 may be on); bf16 within 0.1 nats on a random tiny model."""
    (result,) = torchrun(WORKER, 1, ["--model", str(tiny_qwen2_dir), "--temperature", "0.7", "--dtype", dtype],
                         tmp_path)
    assert result["max_dlogprob"] <= bound, result["max_dlogprob"]
    assert result["max_dlogprob_unpacked"] <= bound, result["max_dlogprob_unpacked"]
    assert result["min_entropy"] >= 0.0
    assert math.isfinite(result["step_loss"])
