"""Masked reductions over padded `[batch, max_response_len]` tensors, optionally all-reduced over DP.

Every function takes a `mask` (bool or float, same shape as the values) and an
optional torch.distributed process `group`; with a group, the sums, counts and
maxima are all-reduced so every rank gets the statistic of the concatenated
batch. Sums are accumulated in float64.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> torch.Tensor:
    """All-reduce `t` in place over `group` when one is given (no-op otherwise); returns `t`."""
    if group is not None:
        dist.all_reduce(t, op=op, group=group)
    return t


def masked_moments(x: torch.Tensor, mask: torch.Tensor, group=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, biased variance and count of `x` over `mask`; 0-dim float64 tensors.

    One all-reduce of (sum, sum of squares, count). An empty selection gives
    mean 0 and variance 0.
    """
    m = mask.to(torch.float64)
    xd = torch.where(mask.bool(), x.to(torch.float64), 0.0)  # padding may hold NaN/inf garbage
    sums = torch.stack([xd.sum(), (xd * xd).sum(), m.sum()])
    all_reduce(sums, group=group)
    count = sums[2]
    denom = count.clamp(min=1.0)
    mean = sums[0] / denom
    var = (sums[1] / denom - mean * mean).clamp(min=0.0)
    return mean, var, count


def masked_max(x: torch.Tensor, mask: torch.Tensor, group=None) -> torch.Tensor:
    """Maximum of `x` over `mask` (0-dim float64); -inf when nothing is selected."""
    sel = torch.where(mask.bool(), x.to(torch.float64), torch.tensor(float("-inf"), dtype=torch.float64, device=x.device))
    out = sel.max() if sel.numel() else torch.tensor(float("-inf"), dtype=torch.float64, device=x.device)
    return all_reduce(out.clone(), op=dist.ReduceOp.MAX, group=group)
