"""Train-vs-rollout log-prob mismatch (the importance-ratio cap is algo.loss.MinibatchRatioCap).

It compares two log-prob tensors of the same tokens, float32 of any one shape
(the trainer passes flat `[num_tokens]` response tokens), over `mask` (bool or
float, same shape), all-reduced over an optional DP process `group` so every
rank sees the global figure.
"""
from __future__ import annotations

import torch

from areal_mega.algo.reduce import masked_max, masked_moments


def logprob_mismatch(
    train_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor, group=None
) -> dict[str, float]:
    """Mismatch of the trainer's log-probs against the generation server's, over masked tokens.

    With d = train_logprobs - rollout_logprobs: "logprob_diff_abs_mean" = mean |d|,
    "logprob_diff_abs_max" = max |d|, "rollout_ratio_mean" = mean exp(d)
    (the importance ratio p_train / p_rollout). Zeros when no token is masked in.
    """
    if train_logprobs.shape != rollout_logprobs.shape or mask.shape != train_logprobs.shape:
        raise ValueError(
            f"rollout_logprobs: shapes differ: train {tuple(train_logprobs.shape)}, "
            f"rollout {tuple(rollout_logprobs.shape)}, mask {tuple(mask.shape)}"
        )
    d = train_logprobs.double() - rollout_logprobs.double()
    abs_mean, _, count = masked_moments(d.abs(), mask, group=group)
    ratio_mean, _, _ = masked_moments(torch.exp(d), mask, group=group)
    abs_max = masked_max(d.abs(), mask, group=group)
    if count == 0:
        return {"logprob_diff_abs_mean": 0.0, "logprob_diff_abs_max": 0.0, "rollout_ratio_mean": 0.0}
    return {
        "logprob_diff_abs_mean": float(abs_mean),
        "logprob_diff_abs_max": float(abs_max),
        "rollout_ratio_mean": float(ratio_mean),
    }

