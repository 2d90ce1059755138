"""Batch filters applied before advantages: dynamic sampling and the over-long response policy.

Shapes: per-sample tensors are `[batch]`; `response_mask` is
`[batch, max_response_len]` (bool or float). Nothing is modified in place.
"""
from __future__ import annotations

import torch

from areal_mega.algo.config import OVERLONG_POLICIES


def dynamic_sampling_mask(task_rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """`[batch]` bool keep-mask: False for every sample of a group whose task rewards are all equal.

    Such a group (all right or all wrong) has zero group-normalised advantage
    and only adds noise (DAPO's dynamic sampling). Groups must be whole in the
    batch given (call it on the controller, before the DP split).
    """
    if task_rewards.shape != group_ids.shape or task_rewards.dim() != 1:
        raise ValueError(
            f"group_ids: expected the shape of task_rewards {tuple(task_rewards.shape)} (1-D), got {tuple(group_ids.shape)}"
        )
    if task_rewards.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=task_rewards.device)
    ids = torch.unique(group_ids.long(), return_inverse=True)[1]
    num = int(ids.max()) + 1
    r = task_rewards.to(torch.float64)
    hi = torch.full((num,), float("-inf"), dtype=torch.float64, device=r.device).scatter_reduce(0, ids, r, "amax")
    lo = torch.full((num,), float("inf"), dtype=torch.float64, device=r.device).scatter_reduce(0, ids, r, "amin")
    return (hi > lo)[ids]


def apply_overlong(
    task_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    truncated: torch.Tensor,
    policy: str,
    wrong_reward: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the over-long policy to responses cut at max_new_tokens (`truncated` `[batch]` bool).

    "penalize": their task reward becomes `wrong_reward`; "mask": their
    response tokens leave the loss (mask row zeroed, reward unchanged);
    "none": unchanged. Returns new (task_rewards, response_mask).
    """
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong: '{policy}' is not one of {', '.join(OVERLONG_POLICIES)}")
    if truncated.shape != task_rewards.shape or response_mask.shape[0] != task_rewards.shape[0]:
        raise ValueError(
            f"truncated: expected shape {tuple(task_rewards.shape)} matching task_rewards and response_mask rows, "
            f"got {tuple(truncated.shape)} (response_mask {tuple(response_mask.shape)})"
        )
    cut = truncated.bool()
    if policy == "penalize":
        return torch.where(cut, torch.full_like(task_rewards, wrong_reward), task_rewards), response_mask.clone()
    if policy == "mask":
        return task_rewards.clone(), response_mask * (~cut).unsqueeze(1).to(response_mask.dtype)
    return task_rewards.clone(), response_mask.clone()
