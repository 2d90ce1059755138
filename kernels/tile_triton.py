"""Triton tile operations: the same algorithm as `tile_torch`, one program per row.

Compiled on CUDA; on CPU they run under TRITON_INTERPRET=1 (set before
triton is imported). A tile is a [Tc, Vc] block of logits with unit column
stride and any row stride; column 0 is global vocabulary id `vocab_start`.
No float32 copy of the tile is ever made: the forward streams the row in
BLOCK_V pieces with an online max, the backward writes each piece's gradient.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common


@triton.jit
def _row_stats_kernel(x_ptr, stride_x, tgt_ptr, m_ptr, s_ptr, w_ptr, zt_ptr,
                      width, vocab_start, inv_temp, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_x
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.full([], 0.0, tl.float32)
    w = tl.full([], 0.0, tl.float32)
    for start in range(0, width, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < width
        z = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(tl.float32) * inv_temp
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # -inf logits (and a block or row without a finite one) must not form 0 * -inf
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        shift = tl.where(s > 0.0, m - m_ref, 0.0)
        alpha = tl.where(s > 0.0, tl.exp(shift), 0.0)
        e = tl.where(mask, tl.exp(z - m_ref), 0.0)
        zm = tl.where(e > 0.0, z - m_ref, 0.0)
        w = alpha * (w + shift * s) + tl.sum(e * zm, axis=0)
        s = alpha * s + tl.sum(e, axis=0)
        m = m_new
    col = tl.load(tgt_ptr + row) - vocab_start
    owned = (col >= 0) & (col < width)
    zt = tl.load(x_row + col, mask=owned, other=0.0).to(tl.float32) * inv_temp
    tl.store(m_ptr + row, m)
    tl.store(s_ptr + row, s)
    tl.store(w_ptr + row, w)
    tl.store(zt_ptr + row, tl.where(owned, zt, 0.0))


@triton.jit
def _row_grad_kernel(x_ptr, stride_x, out_ptr, stride_out, tgt_ptr, lse_ptr, mean_ptr, glp_ptr, gent_ptr,
                     width, vocab_start, inv_temp, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    mask = cols < width
    z = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32) * inv_temp
    lse = tl.load(lse_ptr + row)
    mean_z = tl.load(mean_ptr + row)
    g_lp = tl.load(glp_ptr + row)
    g_ent = tl.load(gent_ptr + row)
    p = tl.exp(z - lse)
    dz = tl.where(p == 0.0, 0.0, z - mean_z)  # a -inf logit has p = 0: no 0 * inf
    g = -p * (g_lp + g_ent * dz)
    is_target = cols == (tl.load(tgt_ptr + row) - vocab_start)
    g = tl.where(is_target, g + g_lp, g) * inv_temp
    tl.store(out_ptr + row * stride_out + cols, g.to(out_ptr.dtype.element_ty), mask=mask)


MAX_BLOCK_V = 4096  # columns per Triton program step (tests lower it to exercise the online loop)


def _block_v(width: int) -> int:
    return min(MAX_BLOCK_V, triton.next_power_of_2(max(width, 16)))


def row_stats(tile: torch.Tensor, targets: torch.Tensor, vocab_start: int, temperature: float):
    """Statistics (m, s, w, zt) of z = tile / temperature, each [Tc] float32."""
    if tile.stride(1) != 1:
        tile = tile.contiguous()
    rows, width = tile.shape
    m, s, w, zt = (_common.empty((rows,), torch.float32, tile.device) for _ in range(4))
    if rows:
        _row_stats_kernel[(rows,)](tile, tile.stride(0), targets, m, s, w, zt,
                                   width, vocab_start, 1.0 / temperature, BLOCK_V=_block_v(width))
    return m, s, w, zt


def row_grad(tile, targets, vocab_start, lse, mean_z, grad_logprobs, grad_entropy, temperature, out):
    """Write d loss / d tile into `out` ([Tc, Vc], unit column stride, any dtype)."""
    if tile.stride(1) != 1:
        tile = tile.contiguous()
    if out.stride(1) != 1:
        raise ValueError("row_grad: `out` needs unit column stride")
    rows, width = tile.shape
    block = _block_v(width)
    if rows:
        _row_grad_kernel[(rows, triton.cdiv(width, block))](
            tile, tile.stride(0), out, out.stride(0), targets, lse, mean_z, grad_logprobs, grad_entropy,
            width, vocab_start, 1.0 / temperature, BLOCK_V=block)
