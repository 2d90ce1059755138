"""Per-token estimators of KL(policy || reference) from log-probs of tokens sampled from the policy.

With d = logprobs - ref_logprobs (log p/q of the sampled token):
  k1 = d                     unbiased, can be negative
  k2 = d^2 / 2               biased, non-negative
  k3 = exp(-d) - 1 + d       unbiased, non-negative (Schulman's estimator)
"""
from __future__ import annotations

import torch

from areal_mega.algo.config import KL_ESTIMATORS


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate, same shape and dtype as `logprobs`."""
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator: '{estimator}' is not one of {', '.join(KL_ESTIMATORS)}")
