"""Shared helpers for algo tests: random padded batches and float64 loop references."""
import math

import torch


def random_batch(batch=7, length=13, seed=0, empty_row=True, holes=False):
    """Random padded batch: (task_rewards [B], old, ref, logprobs [B, L], response_mask [B, L] bool, lengths)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    if empty_row:
        lengths[-1] = 0
    pos = torch.arange(length)
    mask = pos.unsqueeze(0) < lengths.unsqueeze(1)
    if holes:
        mask &= torch.rand(batch, length, generator=g) > 0.25
    old = -torch.rand(batch, length, generator=g) * 3
    ref = old + 0.3 * torch.randn(batch, length, generator=g)
    logprobs = old + 0.2 * torch.randn(batch, length, generator=g)
    task = torch.where(torch.rand(batch, generator=g) > 0.5, 5.0, -5.0)
    return task, old, ref, logprobs, mask, lengths


def kl_ref(p, q, estimator):
    """KL estimate for one token from log p (policy) and log q (reference), python floats."""
    log_r = q - p
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return math.exp(log_r) - 1 - log_r
