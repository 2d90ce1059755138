"""Critic-free advantages on padded response tensors.

Shapes: every per-token tensor is `[batch, max_response_len]` float32 (response
tokens only, one row per sample), with `response_mask` of the same shape (bool
or float; 1 marks a token that is trained on). Per-sample tensors are `[batch]`.

AReaL v0.1: the per-token reward is -kl_coef * KL(old || ref) on every
response token plus the task reward (+5 / -5) on the last one; with
gamma = lambda = 1 and zero values (no critic) the advantage is the
reward-to-go; advantages are then whitened over the whole (DP-global) batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.kl import kl_estimate
from areal_mega.algo.reduce import all_reduce, masked_moments


def _check_shapes(response_mask: torch.Tensor, **tensors) -> None:
    if response_mask.dim() != 2:
        raise ValueError(f"response_mask: expected [batch, max_response_len], got shape {tuple(response_mask.shape)}")
    batch = response_mask.shape[0]
    for name, t in tensors.items():
        if t is None:
            continue
        want = (batch,) if name in ("task_rewards", "group_ids") else tuple(response_mask.shape)
        if tuple(t.shape) != want:
            raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 `x` with masked-out positions set to 0 (padding may hold NaN/inf garbage)."""
    return torch.where(mask.bool(), x.float(), 0.0)


def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """`[batch]` int64: index of each row's last masked-in token; -1 for an empty row."""
    m = response_mask.bool()
    pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values


def token_rewards(
    task_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k1",
) -> torch.Tensor:
    """Per-token rewards `[batch, max_response_len]` float32, zero outside the mask.

    -kl_coef * kl_estimate(old_logprobs, ref_logprobs) on every response token
    (skipped when kl_coef is 0), plus `task_rewards[i]` (`[batch]`) on row i's
    last response token. A row with no response token gets no reward.
    """
    _check_shapes(response_mask, task_rewards=task_rewards, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs)
    rewards = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    if kl_coef != 0.0:
        if old_logprobs is None or ref_logprobs is None:
            raise ValueError("ref_logprobs: needed (with old_logprobs) when kl_coef != 0 and the KL is in the reward")
        rewards = _masked(-kl_coef * kl_estimate(old_logprobs.float(), ref_logprobs.float(), kl_estimator), response_mask)
    last = last_token_index(response_mask)
    rows = torch.nonzero(last >= 0).squeeze(1)
    rewards[rows, last[rows]] += task_rewards.to(rewards.dtype)[rows]
    return rewards


def reward_to_go(rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted return from each token on: sum of masked rewards at positions >= t; zero outside the mask."""
    r = _masked(rewards, response_mask)
    return _masked(r.flip(1).cumsum(1).flip(1), response_mask)


def gae(
    rewards: torch.Tensor,
    response_mask: torch.Tensor,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked tokens of each row.

    rewards, values: `[batch, max_response_len]` (values None = zero, no
    critic; the value after the last token is 0). Masked-out positions are
    skipped: the recursion runs from one masked-in token to the next.
    Returns (advantages, returns = advantages + values), float32, zero outside
    the mask. With gamma = lam = 1 and zero values this is `reward_to_go`.
    """
    _check_shapes(response_mask, rewards=rewards, values=values)
    mask = response_mask.to(torch.float32)
    r = _masked(rewards, response_mask)
    v = torch.zeros_like(r) if values is None else _masked(values, response_mask)
    batch, length = r.shape
    next_value = torch.zeros(batch, device=r.device)
    next_adv = torch.zeros(batch, device=r.device)
    adv = torch.zeros_like(r)
    for t in range(length - 1, -1, -1):
        m = mask[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = a * m
        next_adv = torch.where(m > 0, a, next_adv)
        next_value = torch.where(m > 0, v[:, t], next_value)
    return adv, (adv + v) * mask


def _group_stats(
    values: torch.Tensor, valid: torch.Tensor, group_ids: torch.Tensor, group=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean and unbiased std of per-sample `values` `[batch]`, gathered back to `[batch]` (float64).

    Group ids are global integers (>= 0), so a group split across DP ranks is
    still one group: sums and counts are all-reduced over `group`. A group
    with one sample gets mean 0 and std 1 (no baseline, as verl does).
    """
    if group_ids.numel() and int(group_ids.min()) < 0:
        raise ValueError(f"group_ids: must be >= 0, got {int(group_ids.min())}")
    num = torch.tensor([int(group_ids.max()) + 1 if group_ids.numel() else 0], device=values.device)
    num_groups = int(all_reduce(num, op=dist.ReduceOp.MAX, group=group).item())
    w = valid.to(torch.float64)
    x = torch.where(valid.bool(), values.to(torch.float64), 0.0)
    sums = torch.zeros(3, num_groups, dtype=torch.float64, device=values.device)
    ids = group_ids.long()
    sums[0].index_add_(0, ids, x)
    sums[1].index_add_(0, ids, x * x)
    sums[2].index_add_(0, ids, w)
    all_reduce(sums, group=group)
    n = sums[2]
    mean = sums[0] / n.clamp(min=1.0)
    var = (sums[1] - n * mean * mean) / (n - 1.0).clamp(min=1.0)
    single = n <= 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(var), var.clamp(min=0.0).sqrt())
    return mean[ids], std[ids]


def normalize_advantages(
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str = "batch",
    group_ids: torch.Tensor | None = None,
    eps: float = 1e-5,
    group=None,
) -> torch.Tensor:
    """Normalised advantages `[batch, max_response_len]` float32, zero outside the mask.

    mode "batch": (A - mean) / (std + eps) with the masked mean and biased std
        over every response token of the batch, all-reduced over the DP
        process `group` (AReaL v0.1).
    mode "group" (GRPO): each sample's score is its advantage at its first
        response token (its whole return when gamma = lambda = 1);
        A_t -> (A_t - mean_g) / (std_g + eps) with the mean and unbiased std
        of the scores of the sample's group (`group_ids` `[batch]`, global
        integers; groups may span DP ranks).
    mode "none": masked copy.
    """
    _check_shapes(response_mask, advantages=advantages, group_ids=group_ids)
    mask = response_mask.to(torch.float32)
    if mode == "none":
        return _masked(advantages, response_mask)
    if mode == "batch":
        mean, var, _ = masked_moments(advantages, mask, group=group)
        out = (advantages.double() - mean) / (var.sqrt() + eps)
        return _masked(out, response_mask)
    if mode == "group":
        if group_ids is None:
            raise ValueError("group_ids: needed for adv_norm='group'")
        valid = mask.sum(1) > 0
        first = torch.argmax(mask, dim=1)
        scores = advantages.gather(1, first.unsqueeze(1)).squeeze(1)
        mean, std = _group_stats(scores, valid, group_ids, group=group)
        out = (advantages.double() - mean.unsqueeze(1)) / (std.unsqueeze(1) + eps)
        return _masked(out, response_mask)
    raise ValueError(f"adv_norm: '{mode}' is not one of batch, group, none")


def compute_advantages(
    cfg: AlgoConfig,
    task_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    dp_group=None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages `[batch, max_response_len]` float32 for one RL batch, and stats.

    Per-token rewards (KL in the reward when cfg.kl_in_reward), GAE with zero
    values (the reward-to-go at gamma = lambda = 1), then cfg.adv_norm.
    Stats (floats, DP-global): "kl_reward" (mean per-token KL estimate in the
    reward, 0 when off), "return_mean" (mean over samples of the return at the
    first token, before normalisation).
    """
    kl_coef = cfg.kl_coef if cfg.kl_in_reward else 0.0
    rewards = token_rewards(task_rewards, response_mask, old_logprobs, ref_logprobs, kl_coef, cfg.kl_estimator)
    if cfg.gamma == 1.0 and cfg.gae_lambda == 1.0:
        adv = reward_to_go(rewards, response_mask)
    else:
        adv, _ = gae(rewards, response_mask, gamma=cfg.gamma, lam=cfg.gae_lambda)
    stats = {"kl_reward": 0.0}
    if kl_coef != 0.0:
        kl = kl_estimate(old_logprobs.float(), ref_logprobs.float(), cfg.kl_estimator)
        stats["kl_reward"] = float(masked_moments(kl, response_mask, group=dp_group)[0])
    valid = (response_mask.to(torch.float32).sum(1) > 0).unsqueeze(1)
    first = torch.argmax(response_mask.to(torch.float32), dim=1, keepdim=True)
    stats["return_mean"] = float(masked_moments(adv.gather(1, first), valid, group=dp_group)[0])
    adv = normalize_advantages(adv, response_mask, cfg.adv_norm, group_ids, cfg.adv_eps, group=dp_group)
    return adv, stats
