"""Rotary position embedding over a packed 'thd' row, positions restarting at each sequence start.

The local layer spec applies RoPE here, inside `PackedAttention`, instead of
in megatron's `SelfAttention` (its GPTModel is built without a position
embedding, models/hf_config.build_gpt_model). megatron-core 0.16.1's unfused
THD RoPE splits the row per sequence and concatenates the frequencies, then
recomputes cos/sin, rotates with a chunk + neg + cat and joins an empty
pass-through part with one more cat, for the query and the key of every
layer; here cos/sin come once per row and layer from the per-token positions,
and one autograd function writes both rotated halves into one output (its
backward is the inverse rotation; it saves only cos and sin).

The maths is megatron's (and HF's) non-interleaved RoPE over the whole head:
inv_freq_j = 1 / base^(2j / d), angle = position * inv_freq (float32, as in
megatron's RotaryEmbedding), and for x = [x1, x2] (halves of the head dim)
y = [x1 cos - x2 sin, x2 cos + x1 sin].
"""
from __future__ import annotations

import torch


def row_cos_sin(bounds: list[int], head_dim: int, base: float, dtype: torch.dtype,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, 1, head_dim / 2] in `dtype` for a row whose sequences start at `bounds[:-1]`
    (bounds: the row's cu_seqlens as a list, bounds[-1] = T); positions restart at 0 in each sequence."""
    lens = torch.tensor([b - a for a, b in zip(bounds[:-1], bounds[1:])], device=device)
    starts = torch.tensor(bounds[:-1], device=device)
    positions = torch.arange(bounds[-1], device=device) - torch.repeat_interleave(starts, lens)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(positions.to(torch.float32), inv_freq)[:, None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


class _RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """[x1 cos - sign x2 sin, x2 cos + sign x1 sin]: the rotation (sign 1) or its inverse (sign -1)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    y1, y2 = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=y1)
    y1.addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=y2)
    y2.addcmul_(x1, sin, value=sign)
    return out


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, head_dim] -> [T, heads, head_dim] rotated by `row_cos_sin`'s cos, sin [T, 1, head_dim / 2]."""
    return _RoPEFunction.apply(x, cos, sin)
