"""Critic-free advantages on flat (packed) response tensors.

Shapes: every per-token tensor is `[num_tokens]` float32: the response tokens
of all samples, concatenated in sample order (no padding), with `lengths`
`[batch]` int64 giving each sample's response length (sum = num_tokens).
`response_mask` `[num_tokens]` (bool or float; 1 marks a token that is trained
on) may have holes; a sample whose tokens are all masked out gets nothing.
Per-sample tensors are `[batch]`.

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


def _check_shapes(response_mask: torch.Tensor, lengths: torch.Tensor, **tensors) -> None:
    if response_mask.dim() != 1:
        raise ValueError(f"response_mask: expected flat [num_tokens], got shape {tuple(response_mask.shape)}")
    if lengths.dim() != 1 or int(lengths.sum()) != response_mask.numel() or (lengths.numel() and int(lengths.min()) < 0):
        raise ValueError(f"lengths: expected [batch] non-negative counts summing to num_tokens="
                         f"{response_mask.numel()}, got {lengths.tolist()[:8]}... (sum {int(lengths.sum())})")
    for name, t in tensors.items():
        if t is None:
            continue
        want = tuple(lengths.shape) if name in ("task_rewards", "group_ids") else tuple(response_mask.shape)
        if tuple(t.shape) != want:
            raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 `x` with masked-out positions set to 0 (padding may hold NaN/inf garbage)."""
    return torch.where(mask.bool(), x.float(), 0.0)


def sample_index(lengths: torch.Tensor) -> torch.Tensor:
    """`[num_tokens]` int64: the sample each token belongs to."""
    return torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths.long())


def last_token_index(response_mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`[batch]` int64: flat index of each sample's last masked-in token; -1 when it has none."""
    pos = torch.arange(response_mask.numel(), device=response_mask.device)
    pos = torch.where(response_mask.bool(), pos, torch.full_like(pos, -1))
    out = torch.full((len(lengths),), -1, dtype=torch.int64, device=response_mask.device)
    return out.scatter_reduce(0, sample_index(lengths), pos, "amax")


def first_token_index(response_mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`[batch]` int64: flat index of each sample's first masked-in token; -1 when it has none."""
    n = response_mask.numel()
    pos = torch.arange(n, device=response_mask.device)
    pos = torch.where(response_mask.bool(), pos, torch.full_like(pos, n))
    out = torch.full((len(lengths),), n, dtype=torch.int64, device=response_mask.device)
    out = out.scatter_reduce(0, sample_index(lengths), pos, "amin")
    return torch.where(out == n, torch.full_like(out, -1), out)


def token_rewards(
    task_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    lengths: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k1",
) -> torch.Tensor:
    """Per-token rewards `[num_tokens]` float32, zero outside the mask.

    -kl_coef * kl_estimate(old_logprobs, ref_logprobs) on every response token
    (skipped when kl_coef is 0), plus `task_rewards[i]` (`[batch]`) on sample i's
    last masked-in token. A sample with no such token gets no reward.
    """
    _check_shapes(response_mask, lengths, task_rewards=task_rewards, old_logprobs=old_logprobs,
                  ref_logprobs=ref_logprobs)
    rewards = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    if kl_coef != 0.0:
        if old_logprobs is None or ref_logprobs is None:
            raise ValueError("ref_logprobs: needed (with old_logprobs) when kl_coef != 0 and the KL is in the reward")
        rewards = _masked(-kl_coef * kl_estimate(old_logprobs.float(), ref_logprobs.float(), kl_estimator), response_mask)
    last = last_token_index(response_mask, lengths)
    rows = torch.nonzero(last >= 0).squeeze(1)
    rewards[last[rows]] += task_rewards.to(rewards.dtype)[rows]
    return rewards


def reward_to_go(rewards: torch.Tensor, response_mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Undiscounted return from each token on: the sum of the sample's masked rewards at positions >= t
    (float64 running sums); zero outside the mask."""
    _check_shapes(response_mask, lengths, rewards=rewards)
    r = _masked(rewards, response_mask).double()
    seg = sample_index(lengths)
    totals = torch.zeros(len(lengths), dtype=torch.float64, device=r.device).index_add_(0, seg, r)
    # sum of r over [t, end of its sample] = (running sum at the sample's end) - (running sum before t)
    return _masked((totals.cumsum(0)[seg] - r.cumsum(0) + r).float(), response_mask)


def gae(
    rewards: torch.Tensor,
    response_mask: torch.Tensor,
    lengths: torch.Tensor,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked tokens of each sample.

    rewards, values: `[num_tokens]` (values None = zero, no critic; the value
    after the last token is 0). Masked-out positions are skipped: the
    recursion runs from one masked-in token to the next. Returns
    (advantages, returns = advantages + values), float32, zero outside the
    mask. With gamma = lam = 1 and zero values this is `reward_to_go`.
    One vectorised step per position: O(max_len) steps over `[batch]` vectors.
    """
    _check_shapes(response_mask, lengths, rewards=rewards, values=values)
    mask = response_mask.to(torch.float32)
    r = _masked(rewards, response_mask)
    v = torch.zeros_like(r) if values is None else _masked(values, response_mask)
    lengths = lengths.long()
    starts = lengths.cumsum(0) - lengths
    next_value = torch.zeros(len(lengths), device=r.device)
    next_adv = torch.zeros(len(lengths), device=r.device)
    adv = torch.zeros_like(r)
    for t in range(int(lengths.max()) - 1 if len(lengths) else -1, -1, -1):
        rows = torch.nonzero(lengths > t).squeeze(1)
        idx = starts[rows] + t
        m = mask[idx]
        delta = r[idx] + gamma * next_value[rows] - v[idx]
        a = delta + gamma * lam * next_adv[rows]
        adv[idx] = a * m
        next_adv[rows] = torch.where(m > 0, a, next_adv[rows])
        next_value[rows] = torch.where(m > 0, v[idx], next_value[rows])
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
    lengths: torch.Tensor,
    mode: str = "batch",
    group_ids: torch.Tensor | None = None,
    eps: float = 1e-5,
    group=None,
) -> torch.Tensor:
    """Normalised advantages `[num_tokens]` float32, zero outside the mask.

    mode "batch": (A - mean) / (std + eps) with the masked mean and biased std
        over every response token of the batch, all-reduced over the DP
        process `group` (AReaL v0.1).
    mode "group" (GRPO): each sample's score is its advantage at its first
        masked-in token (its whole return when gamma = lambda = 1);
        A_t -> (A_t - mean_g) / (std_g + eps) with the mean and unbiased std
        of the scores of the sample's group (`group_ids` `[batch]`, global
        integers; groups may span DP ranks).
    mode "none": masked copy.
    """
    _check_shapes(response_mask, lengths, advantages=advantages, group_ids=group_ids)
    if mode == "none":
        return _masked(advantages, response_mask)
    if mode == "batch":
        mean, var, _ = masked_moments(advantages, response_mask, group=group)
        out = (advantages.double() - mean) / (var.sqrt() + eps)
        return _masked(out, response_mask)
    if mode == "group":
        if group_ids is None:
            raise ValueError("group_ids: needed for adv_norm='group'")
        first = first_token_index(response_mask, lengths)
        valid = first >= 0
        scores = torch.where(valid, _masked(advantages, response_mask)[first.clamp(min=0)] if len(advantages)
                             else torch.zeros_like(first, dtype=torch.float32), 0.0)
        mean, std = _group_stats(scores, valid, group_ids, group=group)
        seg = sample_index(lengths)
        out = (advantages.double() - mean[seg]) / (std[seg] + eps)
        return _masked(out, response_mask)
    raise ValueError(f"adv_norm: '{mode}' is not one of batch, group, none")


def compute_advantages(
    cfg: AlgoConfig,
    task_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    lengths: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    dp_group=None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages `[num_tokens]` float32 for one RL batch, and stats.

    Per-token rewards (KL in the reward when cfg.kl_in_reward), GAE with zero
    values (the reward-to-go at gamma = lambda = 1), then cfg.adv_norm.
    Stats (floats, DP-global): "kl_reward" (mean per-token KL estimate in the
    reward, 0 when off), "return_mean" (mean over samples of the return at the
    first masked-in token, before normalisation).
    """
    kl_coef = cfg.kl_coef if cfg.kl_in_reward else 0.0
    rewards = token_rewards(task_rewards, response_mask, lengths, old_logprobs, ref_logprobs, kl_coef,
                            cfg.kl_estimator)
    if cfg.gamma == 1.0 and cfg.gae_lambda == 1.0:
        adv = reward_to_go(rewards, response_mask, lengths)
    else:
        adv, _ = gae(rewards, response_mask, lengths, gamma=cfg.gamma, lam=cfg.gae_lambda)
    stats = {"kl_reward": 0.0}
    if kl_coef != 0.0:
        kl = kl_estimate(old_logprobs.float(), ref_logprobs.float(), cfg.kl_estimator)
        stats["kl_reward"] = float(masked_moments(kl, response_mask, group=dp_group)[0])
    first = first_token_index(response_mask, lengths)
    valid = first >= 0
    returns = adv[first.clamp(min=0)] if len(adv) else torch.zeros(len(first))
    stats["return_mean"] = float(masked_moments(returns, valid, group=dp_group)[0])
    adv = normalize_advantages(adv, response_mask, lengths, cfg.adv_norm, group_ids, cfg.adv_eps, group=dp_group)
    return adv, stats
