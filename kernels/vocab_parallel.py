"""Log-probs and entropy of target tokens from (vocabulary-parallel) logits.

`vocab_parallel_logprobs(logits [T, V_local], targets [T]) -> (logprobs [T], entropy [T])`
runs one online-softmax pass over the local vocabulary slice; with a
tensor-parallel group the per-token max, sum-exp and sum p*(z - max) are
all-reduced (one MAX, one SUM of a [3, T] buffer) and only the rank that owns
a target id contributes its logit. The backward is local to each rank:
softmax terms use the global log-sum-exp saved by the forward, and the target
term lands only on the owning rank.
"""
from __future__ import annotations

import torch

from . import _common, tile_torch, tile_triton

# (token_chunk, vocab_chunk) per backend: the torch backend holds two float32
# copies of one chunk; the Triton kernels stream rows, so one chunk is the whole input.
_DEFAULT_CHUNKS = {"torch": (1024, 8192), "triton": (1 << 62, 1 << 62)}


def backend_ops(backend: str):
    """The tile-operation module (row_stats, row_grad) of a resolved backend."""
    return tile_triton if backend == "triton" else tile_torch


class _VocabParallelLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, tp_group, temperature, ops, token_chunk, vocab_chunk):
        rank, tp_size = _common.tp_info(tp_group)
        num_tokens, vocab_local = logits.shape
        offset = rank * vocab_local
        logprobs, entropy, lse, mean_z = _common.reduce_tiles(
            lambda t0, t1, v0, v1: ops.row_stats(logits[t0:t1, v0:v1], targets[t0:t1], offset + v0, temperature),
            num_tokens, vocab_local, token_chunk, vocab_chunk, tp_group, tp_size, logits.device)
        ctx.save_for_backward(logits, targets, lse, mean_z)
        ctx.config = (offset, temperature, ops, token_chunk, vocab_chunk)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        logits, targets, lse, mean_z = ctx.saved_tensors
        offset, temperature, ops, token_chunk, vocab_chunk = ctx.config
        grad_logprobs, grad_entropy = _common.dense_grads(grad_logprobs, grad_entropy, lse)
        grad_logits = _common.empty(logits.shape, logits.dtype, logits.device)
        num_tokens, vocab_local = logits.shape
        for t0, t1 in _common.tile_ranges(num_tokens, token_chunk):
            for v0, v1 in _common.tile_ranges(vocab_local, vocab_chunk):
                ops.row_grad(logits[t0:t1, v0:v1], targets[t0:t1], offset + v0, lse[t0:t1], mean_z[t0:t1],
                             grad_logprobs[t0:t1], grad_entropy[t0:t1], temperature, grad_logits[t0:t1, v0:v1])
        return grad_logits, None, None, None, None, None, None


def vocab_parallel_logprobs(logits: torch.Tensor, targets: torch.Tensor, tp_group=None, temperature: float = 1.0,
                            backend: str = "auto", *, token_chunk: int | None = None,
                            vocab_chunk: int | None = None):
    """Log-probs of `targets` and entropy under softmax(logits / temperature).

    logits: [T, V_local] bf16/fp16/fp32, this rank's vocabulary slice
      (global ids rank * V_local ... (rank + 1) * V_local - 1 of `tp_group`);
      any row stride (a non-unit column stride is copied once).
    targets: [T] int64 global vocabulary ids, in [0, V_local * tp_size).
    tp_group: the tensor-parallel process group splitting the vocabulary, or None.
    temperature: > 0, logits are divided by it (use the rollout temperature).
    backend: "triton", "torch" (chunked, the CPU default) or "auto".
    token_chunk, vocab_chunk: tile sizes of the chunked loops (defaults per backend).
    Returns (logprobs, entropy): [T] float32 each, differentiable w.r.t. logits;
    identical on every rank of `tp_group`.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits: expected [T, V_local], got shape {list(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"logits: dtype {logits.dtype} not supported (float32, bfloat16, float16)")
    if logits.shape[1] == 0:
        raise ValueError("logits: empty vocabulary dimension")
    backend, targets, temperature, token_chunk, vocab_chunk = _common.check_call(
        backend, logits.device, tp_group, targets, logits.shape[0], logits.shape[1], temperature,
        token_chunk, vocab_chunk, _DEFAULT_CHUNKS)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _VocabParallelLogprobs.apply(logits, targets, tp_group, temperature, backend_ops(backend),
                                        token_chunk, vocab_chunk)
