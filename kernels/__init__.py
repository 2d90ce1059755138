"""Fused log-prob, entropy and PPO-loss kernels (installed as `areal_mega.kernels`).

Public API:
  vocab_parallel_logprobs(logits, targets, tp_group=None, temperature=1.0, backend="auto")
  fused_linear_logprobs(hidden, weight, targets, tp_group=None, temperature=1.0, backend="auto")
  ppo_loss(logprobs, old_logprobs, advantages, loss_mask, *, ...)
Backends: "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "torch" (chunked
pure torch, the CPU default), "auto" (triton on CUDA, torch otherwise).
"""
import torch as _torch

# torch.mm(a, b, out_dtype=torch.float32) on bf16/fp16 inputs (fused_linear._mm_f32, CUDA) first shipped in 2.8
MIN_TORCH = (2, 8)
if tuple(int(x) for x in _torch.__version__.split("+")[0].split(".")[:2]) < MIN_TORCH:
    raise ImportError(f"areal_mega.kernels needs torch >= {'.'.join(map(str, MIN_TORCH))} (torch.mm with out_dtype); "
                      f"this environment has torch {_torch.__version__}")

from .fused_linear import fused_linear_logprobs  # noqa: E402
from .ppo_loss import ppo_loss  # noqa: E402
from .vocab_parallel import vocab_parallel_logprobs  # noqa: E402

__all__ = ["vocab_parallel_logprobs", "fused_linear_logprobs", "ppo_loss"]
