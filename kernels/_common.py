"""Shared pieces of the log-prob kernels: backend choice, input checks, output
allocation and the online-softmax statistics algebra.

Per token the kernels keep four float32 statistics of z = logits / temperature
over (a slice of) the vocabulary:
  m   the maximum of z,
  s   sum exp(z - m),
  w   sum exp(z - m) * (z - m)   (shifted, so entropy has no cancellation),
  zt  z at the target id where this slice owns it, else 0.
Slices (vocabulary chunks, or tensor-parallel ranks) combine with `merge`;
then logprob = zt - (m + log s) and entropy = log s - w / s.
A slice with no finite logit (all -inf, or no columns) has m = -inf, s = w = 0
and drops out of every merge; no 0 * -inf is ever formed.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

BACKENDS = ("auto", "torch", "triton")


def empty(shape, dtype, device) -> torch.Tensor:
    """Every kernel output is allocated here (tests patch it to fill NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'triton' on CUDA, 'torch' elsewhere; unknown names raise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("backend='triton' on CPU needs TRITON_INTERPRET=1 in the environment before triton "
                         "is imported (or use backend='torch')")
    return backend


def tp_info(tp_group) -> tuple[int, int]:
    """(rank, world size) of the tensor-parallel group; (0, 1) without one."""
    if tp_group is None or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(tp_group), dist.get_world_size(tp_group)


CHECK_ENV = "AREAL_MEGA_CHECK_TARGETS"


def check_targets(targets: torch.Tensor, num_tokens: int, vocab_global: int, device) -> torch.Tensor:
    """Validate `targets` ([num_tokens] integer global vocabulary ids); returns them int64 contiguous.

    The id-range check reads the data, a device-to-host sync on an accelerator:
    it runs for CPU targets, and on other devices only with AREAL_MEGA_CHECK_TARGETS=1
    (callers check ids while they are still on the CPU; engine/forward.py does).
    """
    if targets.dim() != 1 or targets.shape[0] != num_tokens:
        raise ValueError(f"targets: expected shape [{num_tokens}], got {list(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets: expected int64 vocabulary ids, got {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"targets: on {targets.device}, expected {device}")
    targets = targets.to(torch.int64).contiguous()
    check = targets.device.type == "cpu" or os.environ.get(CHECK_ENV) == "1"
    if check and num_tokens and bool(((targets < 0) | (targets >= vocab_global)).any()):
        bad = targets[(targets < 0) | (targets >= vocab_global)][0].item()
        raise ValueError(f"targets: id {bad} outside the vocabulary [0, {vocab_global})")
    return targets


def check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    return float(temperature)


def check_chunk(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if int(value) != value or value < 1:
        raise ValueError(f"{name}={value}: must be a positive integer")
    return int(value)


def tile_ranges(total: int, chunk: int) -> list[tuple[int, int]]:
    """[(start, end)) ranges covering 0..total in steps of `chunk`."""
    return [(a, min(a + chunk, total)) for a in range(0, total, chunk)]


def dense_grads(grad_logprobs, grad_entropy, like):
    """Incoming grads as contiguous float32 [T] (zeros where autograd passed None)."""
    g_lp = torch.zeros_like(like) if grad_logprobs is None else grad_logprobs.float().contiguous()
    g_ent = torch.zeros_like(like) if grad_entropy is None else grad_entropy.float().contiguous()
    return g_lp, g_ent


NEG_INF = float("-inf")


def empty_stats(num_tokens: int, device):
    """Statistics of a slice with no columns: m = -inf, s = w = zt = 0 (the identity of `merge`)."""
    zeros = torch.zeros(num_tokens, dtype=torch.float32, device=device)
    return torch.full_like(zeros, NEG_INF), zeros, zeros.clone(), zeros.clone()


def _rescale(m_part, s_part, w_part, m):
    """(exp(m_part - m) * s_part, exp(m_part - m) * (w_part + (m_part - m) * s_part)) with m >= m_part;
    0 for an empty part (m_part = -inf), where the plain formula gives exp(nan) or -inf * 0."""
    live = m_part != NEG_INF  # NaN statistics stay NaN
    shift = torch.where(live, m_part - m, 0.0)
    scale = torch.where(live, torch.exp(shift), 0.0)
    return scale * s_part, scale * (w_part + shift * s_part)


def merge(a, b):
    """Combine the statistics (m, s, w, zt) of two disjoint vocabulary slices."""
    m1, s1, w1, t1 = a
    m2, s2, w2, t2 = b
    m = torch.maximum(m1, m2)
    s_a, w_a = _rescale(m1, s1, w1, m)
    s_b, w_b = _rescale(m2, s2, w2, m)
    return m, s_a + s_b, w_a + w_b, t1 + t2


def all_reduce_stats(stats, tp_group):
    """Merge per-rank statistics across `tp_group` (max, then one summed [3, T] buffer)."""
    m, s, w, zt = stats
    m_global = m.clone()
    dist.all_reduce(m_global, op=dist.ReduceOp.MAX, group=tp_group)
    packed = torch.stack([*_rescale(m, s, w, m_global), zt])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=tp_group)
    return m_global, packed[0], packed[1], packed[2]


def reduce_tiles(tile_stats, num_tokens: int, vocab_local: int, token_chunk: int, vocab_chunk: int, tp_group,
                 tp_size: int, device):
    """(logprobs, entropy, lse, mean_z), each [num_tokens] float32, from per-tile statistics.

    `tile_stats(t0, t1, v0, v1)` returns the statistics (m, s, w, zt) of the
    [t0:t1, v0:v1] tile of this rank's logits; tiles merge along the
    vocabulary, then across `tp_group` when tp_size > 1. `vocab_local` may be
    0 (a rank holding only vocabulary padding): its statistics are empty.
    """
    parts = []
    for t0, t1 in tile_ranges(num_tokens, token_chunk):
        stats = None
        for v0, v1 in tile_ranges(vocab_local, vocab_chunk):
            tile = tile_stats(t0, t1, v0, v1)
            stats = tile if stats is None else merge(stats, tile)
        parts.append(stats if stats is not None else empty_stats(t1 - t0, device))
    stats = tuple(torch.cat(xs) for xs in zip(*parts))
    if tp_size > 1:
        stats = all_reduce_stats(stats, tp_group)
    return finalize(stats)


def finalize(stats):
    """(logprobs, entropy, lse, mean_z), each [T] float32, from merged statistics.

    logprob <= 0 and entropy >= 0 hold exactly in real arithmetic; the clamps
    only remove float rounding at the boundary (a positive log-prob once
    collapsed a training run elsewhere, verl #2656).
    """
    m, s, w, zt = stats
    log_s = torch.log(s)
    lse = m + log_s
    mean_z = m + w / s
    return (zt - lse).clamp_max(0.0), (log_s - w / s).clamp_min(0.0), lse, mean_z


def check_call(backend: str, device, tp_group, targets, num_tokens: int, vocab_local: int, temperature: float,
               token_chunk: int | None, vocab_chunk: int | None, default_chunks: dict,
               vocab_global: int | None = None):
    """The argument checks both log-prob entry points share.

    Returns (backend, targets, temperature, token_chunk, vocab_chunk), resolved and validated;
    `default_chunks[backend]` gives the (token, vocab) tile sizes used when none is passed;
    targets must lie in [0, vocab_global) (default: vocab_local * TP size).
    """
    backend = resolve_backend(backend, device)
    _, tp_size = tp_info(tp_group)
    vocab_global = vocab_local * tp_size if vocab_global is None else vocab_global
    targets = check_targets(targets, num_tokens, vocab_global, device)
    default_t, default_v = default_chunks[backend]
    return (backend, targets, check_temperature(temperature), check_chunk("token_chunk", token_chunk, default_t),
            check_chunk("vocab_chunk", vocab_chunk, default_v))
