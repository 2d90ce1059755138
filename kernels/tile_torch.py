"""Pure-torch tile operations (the CPU default backend).

A tile is a [Tc, Vc] block of logits (any float dtype, any row stride) whose
column 0 is global vocabulary id `vocab_start`. Each call holds at most three
float32 tile-sized temporaries (and a bool mask), so callers bound memory
with the tile size.
"""
from __future__ import annotations

import torch


def _target_columns(targets: torch.Tensor, vocab_start: int, width: int):
    """(column index clamped into the tile, bool: this tile owns the target)."""
    col = targets - vocab_start
    owned = (col >= 0) & (col < width)
    return col.clamp(0, width - 1), owned


def row_stats(tile: torch.Tensor, targets: torch.Tensor, vocab_start: int, temperature: float):
    """Statistics (m, s, w, zt) of z = tile / temperature, each [Tc] float32.

    -inf logits (masked ids) count as probability 0: they add nothing to s or w
    (never 0 * -inf); a row with no finite logit gives m = -inf, s = w = 0.
    """
    z = tile.float()
    if temperature != 1.0:
        z = z / temperature
    col, owned = _target_columns(targets, vocab_start, z.shape[1])
    zt = torch.where(owned, z.gather(1, col[:, None])[:, 0], 0.0)
    m = z.amax(dim=1)
    m_shift = torch.where(m == float("-inf"), 0.0, m)
    zm = z.sub_(m_shift[:, None]) if z is not tile else z - m_shift[:, None]
    e = zm.exp()
    s = e.sum(dim=1)
    dead = e == 0
    w = e.mul_(zm).masked_fill_(dead, 0.0).sum(dim=1)
    return m, s, w, zt


def row_grad(tile, targets, vocab_start, lse, mean_z, grad_logprobs, grad_entropy, temperature, out):
    """Write d loss / d tile into `out` ([Tc, Vc], any dtype).

    d/dz_j = g_lp * [j == target] - p_j * (g_lp + g_ent * (z_j - E[z])),
    then divided by the temperature (z = tile / temperature).
    """
    z = tile.float()
    if temperature != 1.0:
        z = z / temperature
    p = (z - lse[:, None]).exp_()
    if z is tile:
        z = z.clone()
    g = z.sub_(mean_z[:, None]).mul_(grad_entropy[:, None]).add_(grad_logprobs[:, None]).mul_(p).neg_()
    g.masked_fill_(p == 0, 0.0)  # a -inf logit: p = 0 times an infinite (z - E[z]) term
    col, owned = _target_columns(targets, vocab_start, g.shape[1])
    g.scatter_add_(1, col[:, None], torch.where(owned, grad_logprobs, 0.0)[:, None])
    if temperature != 1.0:
        g.div_(temperature)
    out.copy_(g)
