"""Fused log-prob, entropy and PPO-loss kernels (installed as `areal_mega.kernels`).

Public API:
  vocab_parallel_logprobs(logits, targets, tp_group=None, temperature=1.0, backend="auto")
  fused_linear_logprobs(hidden, weight, targets, tp_group=None, temperature=1.0, backend="auto")
  ppo_loss(logprobs, old_logprobs, advantages, loss_mask, *, ...)
Backends: "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "torch" (chunked
pure torch, the CPU default), "auto" (triton on CUDA, torch otherwise).
"""
from .fused_linear import fused_linear_logprobs
from .ppo_loss import ppo_loss
from .vocab_parallel import vocab_parallel_logprobs

__all__ = ["vocab_parallel_logprobs", "fused_linear_logprobs", "ppo_loss"]
