"""Fused LM head: log-probs and entropy of targets from hidden states and the
(vocabulary-parallel) output weight, never materialising [T, V_local] logits.

The forward walks [token_chunk, vocab_chunk] tiles: each tile's logits are one
GEMM (float32 output), reduced at once to the per-token online-softmax
statistics and dropped. The backward recomputes each tile, turns it into
d loss / d logits with the same tile kernels as `vocab_parallel_logprobs`, and
feeds two GEMMs: grad_hidden += G @ W_tile, grad_weight_tile += G^T @ hidden.
GEMMs run on cuBLAS / MKL through torch; the softmax statistics and gradient
tiles run in the chosen backend (Triton or torch).

Under tensor parallelism `hidden` is the same on every rank and `weight` is
this rank's [V_local, H] slice: grad_weight is local, and grad_hidden is
all-reduced over `tp_group` inside the backward so that it is the gradient of
the full-vocabulary loss (so do not also wrap `hidden` in Megatron's
copy_to_tensor_model_parallel_region; a sequence-parallel gather should use
tensor_parallel_output_grad=False).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from . import _common
from .vocab_parallel import backend_ops

_DEFAULT_CHUNKS = {"torch": (1024, 8192), "triton": (4096, 16384)}


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as float32: fp32 accumulation and an fp32 result, never rounded to a's dtype
    (cuBLAS out_dtype on CUDA; CPU GEMMs have no such output, so inputs are upcast there)."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


class _FusedLinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, tp_group, temperature, ops, token_chunk, vocab_chunk, vocab_size):
        rank, tp_size = _common.tp_info(tp_group)
        num_tokens, vocab_local = hidden.shape[0], weight.shape[0]
        offset = rank * vocab_local
        valid = max(0, min(vocab_local, vocab_size - offset))  # rows past the real vocabulary are padding

        def tile_stats(t0, t1, v0, v1):
            return ops.row_stats(_mm_f32(hidden[t0:t1], weight[v0:v1].t()), targets[t0:t1], offset + v0,
                                 temperature)

        logprobs, entropy, lse, mean_z = _common.reduce_tiles(tile_stats, num_tokens, valid, token_chunk,
                                                              vocab_chunk, tp_group, tp_size, hidden.device)
        ctx.save_for_backward(hidden, weight, targets, lse, mean_z)
        ctx.config = (offset, valid, tp_group, tp_size, temperature, ops, token_chunk, vocab_chunk)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        hidden, weight, targets, lse, mean_z = ctx.saved_tensors
        offset, valid, tp_group, tp_size, temperature, ops, token_chunk, vocab_chunk = ctx.config
        grad_logprobs, grad_entropy = _common.dense_grads(grad_logprobs, grad_entropy, lse)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        num_tokens = hidden.shape[0]
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = _common.empty(weight.shape, weight.dtype, weight.device) if need_weight else None
        if need_weight:
            grad_weight[valid:] = 0  # padding rows: no logit, no gradient
        for v0, v1 in _common.tile_ranges(valid, vocab_chunk):
            w_tile = weight[v0:v1]
            grad_w_tile = torch.zeros(w_tile.shape, dtype=torch.float32, device=weight.device) if need_weight else None
            for t0, t1 in _common.tile_ranges(num_tokens, token_chunk):
                logits = _mm_f32(hidden[t0:t1], w_tile.t())
                g = logits if hidden.dtype == torch.float32 else _common.empty(logits.shape, hidden.dtype, logits.device)
                ops.row_grad(logits, targets[t0:t1], offset + v0, lse[t0:t1], mean_z[t0:t1],
                             grad_logprobs[t0:t1], grad_entropy[t0:t1], temperature, g)
                del logits
                if need_hidden:  # partial products stay float32 (a bf16 result would round each one)
                    grad_hidden[t0:t1] += _mm_f32(g, w_tile)
                if need_weight:
                    grad_w_tile += _mm_f32(g.t(), hidden[t0:t1])
                del g
            if need_weight:
                grad_weight[v0:v1] = grad_w_tile
        if need_hidden:
            if tp_size > 1:
                dist.all_reduce(grad_hidden, group=tp_group)
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def fused_linear_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, tp_group=None,
                          temperature: float = 1.0, backend: str = "auto", *, token_chunk: int | None = None,
                          vocab_chunk: int | None = None, vocab_size: int | None = None):
    """Log-probs of `targets` and entropy under softmax(hidden @ weight.T / temperature).

    hidden: [T, H] bf16/fp16/fp32 (the final-norm output; same on every TP rank).
    weight: [V_local, H], same dtype as hidden; rows rank * V_local ... of the
      vocabulary on rank `rank` of `tp_group`.
    targets: [T] int64 global vocabulary ids, in [0, vocab_size).
    temperature: > 0 (use the rollout temperature).
    vocab_size: the real vocabulary (default V_local * tp_size); weight rows of
      global id >= vocab_size are padding (Megatron pads the vocabulary to a
      multiple of TP): they get no logit and a zero gradient, never a copy.
    backend: "triton", "torch" (the CPU default) or "auto".
    token_chunk, vocab_chunk: tile size; peak extra memory is about
      token_chunk * vocab_chunk * (4 + 2 * 4) bytes plus [T] statistics and the
      [vocab_chunk, H] float32 grad accumulator.
    Returns (logprobs, entropy): [T] float32 each, differentiable w.r.t. hidden
    and weight (grad_hidden already summed over tp_group).
    """
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"hidden [T, H] and weight [V_local, H] expected, got {list(hidden.shape)} "
                         f"and {list(weight.shape)}")
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden size mismatch: hidden has H={hidden.shape[1]}, weight has H={weight.shape[1]}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"dtype mismatch: hidden is {hidden.dtype}, weight is {weight.dtype}")
    if hidden.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"hidden: dtype {hidden.dtype} not supported (float32, bfloat16, float16)")
    if hidden.device != weight.device:
        raise ValueError(f"device mismatch: hidden on {hidden.device}, weight on {weight.device}")
    if weight.shape[0] == 0:
        raise ValueError("weight: empty vocabulary dimension")
    _, tp_size = _common.tp_info(tp_group)
    full = weight.shape[0] * tp_size
    if vocab_size is None:
        vocab_size = full
    if not 0 < vocab_size <= full:
        raise ValueError(f"vocab_size={vocab_size}: must be in [1, {full}] (the weight holds {full} rows over TP)")
    backend, targets, temperature, token_chunk, vocab_chunk = _common.check_call(
        backend, hidden.device, tp_group, targets, hidden.shape[0], weight.shape[0], temperature,
        token_chunk, vocab_chunk, _DEFAULT_CHUNKS, vocab_global=vocab_size)
    return _FusedLinearLogprobs.apply(hidden.contiguous(), weight.contiguous(), targets, tp_group, temperature,
                                      backend_ops(backend), token_chunk, vocab_chunk, vocab_size)
