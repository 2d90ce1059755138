"""Algorithm options for critic-free PPO (the AReaL v0.1 recipe and what verl/slime users expect).

Defaults follow AReaL v0.1's DeepSeek-R1-Distill-Qwen-1.5B recipe: KL 0.001 in
the reward (k1), gamma = lambda = 1 with no critic, advantages whitened over
the whole batch, PPO clip 0.2, token-mean loss over the global batch, one
minibatch and one epoch per step, old log-probs taken from the rollout, a mean
importance ratio above 5 zeroes that minibatch's loss, reward +5 / -5. The
trainer divides its logits by `rollout.temperature` (the sampling temperature),
so its log-probs are those of the distribution the servers sampled from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

KL_ESTIMATORS = ("k1", "k2", "k3")
ADV_NORMS = ("batch", "group", "none")
LOSS_AGGS = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")
OVERLONG_POLICIES = ("penalize", "mask", "none")
OLD_LOGPROBS_SOURCES = ("rollout", "recompute")
OBJECTIVES = ("ppo", "decoupled")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"algo.{name}: '{value}' is not one of {', '.join(allowed)}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        raise ValueError(f"algo.{name}: must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")


@dataclass
class AlgoConfig:
    """Critic-free PPO options (see module docstring for the defaults' origin).

    kl_coef: beta of the KL to the reference policy (0 disables it).
    kl_in_reward: True puts -kl_coef * KL on every response token's reward
        (AReaL v0.1); False adds kl_coef * KL to the policy loss instead.
    kl_estimator: k1 (log-ratio), k2 (half squared log-ratio) or k3
        (exp(-d) - 1 + d, non-negative); used in the reward or the loss.
    adv_norm: "batch" whitens advantages over every response token of the
        global batch (all-reduced over DP), "group" normalises within each
        prompt's group of samples (GRPO), "none" leaves them alone.
    adv_eps: added to the standard deviation when normalising.
    gamma, gae_lambda: discount and GAE lambda (values are zero: no critic).
    eps_clip: PPO clip range below 1 (and above, unless eps_clip_high is set).
    eps_clip_high: clip-higher: the upper range 1 + eps_clip_high (DAPO).
    dual_clip: for negative advantages cap the loss at -A * dual_clip (> 1).
    loss_agg: "token_mean" (sum over tokens / tokens of the global batch),
        "seq_mean_token_sum" or "seq_mean_token_mean" (mean over sequences).
    dynamic_sampling: drop groups whose task rewards are all equal (DAPO).
    overlong: a response cut at max_new_tokens is scored with reward_wrong
        ("penalize"), excluded from the loss ("mask": its tokens count in no
        denominator either), or kept ("none").
    max_ratio_cap: zero a minibatch's loss when its mean importance ratio
        (over the masked tokens of every micro-batch on every DP rank)
        exceeds this (AReaL v0.1 used 5): the update then runs on zero
        gradients; None disables the check.
    old_logprobs: "rollout" takes the generation server's log-probs
        (AReaL v0.1), "recompute" runs a trainer forward before the updates.
    ppo_minibatches, ppo_epochs: optimizer steps per RL step =
        ppo_minibatches * ppo_epochs.
    reward_correct, reward_wrong: task reward of a right / wrong answer
        (+5 / -5 in AReaL v0.1; +1 / 0 in the Qwen2.5 zero recipe).
    objective: "ppo" clips the ratio pi / pi_old; "decoupled" (asynchronous
        RL, arXiv 2505.24298) clips against the proximal policy (the
        trainer's recomputed log-probs, so it needs old_logprobs=recompute)
        and weights each token by pi_prox / pi_behav from the rollout's
        behaviour log-probs. Equal to "ppo" when pi_behav = pi_prox.
    behav_weight_cap: the decoupled objective's cap on pi_prox / pi_behav:
        tokens above it get weight 0 (they are too off-policy to correct);
        None keeps every weight as it is.
    """

    kl_coef: float = 0.001
    kl_in_reward: bool = True
    kl_estimator: str = "k1"
    adv_norm: str = "batch"
    adv_eps: float = 1e-5
    gamma: float = 1.0
    gae_lambda: float = 1.0
    eps_clip: float = 0.2
    eps_clip_high: Optional[float] = None
    dual_clip: Optional[float] = None
    loss_agg: str = "token_mean"
    dynamic_sampling: bool = False
    overlong: str = "none"
    max_ratio_cap: Optional[float] = 5.0
    old_logprobs: str = "rollout"
    ppo_minibatches: int = 1
    ppo_epochs: int = 1
    reward_correct: float = 5.0
    reward_wrong: float = -5.0
    objective: str = "ppo"
    behav_weight_cap: Optional[float] = 5.0

    def __post_init__(self) -> None:
        _positive("kl_coef", self.kl_coef, allow_zero=True)
        _choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        _choice("adv_norm", self.adv_norm, ADV_NORMS)
        _positive("adv_eps", self.adv_eps)
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"algo.{name}: must be in [0, 1], got {value}")
        _positive("eps_clip", self.eps_clip)
        if self.eps_clip >= 1.0:
            raise ValueError(f"algo.eps_clip: must be < 1 (the ratio's lower bound is 1 - eps_clip), got {self.eps_clip}")
        if self.eps_clip_high is not None:
            _positive("eps_clip_high", self.eps_clip_high)
        if self.dual_clip is not None and not (math.isfinite(self.dual_clip) and self.dual_clip > 1.0):
            raise ValueError(f"algo.dual_clip: must be > 1 (or null to disable), got {self.dual_clip}")
        _choice("loss_agg", self.loss_agg, LOSS_AGGS)
        _choice("overlong", self.overlong, OVERLONG_POLICIES)
        if self.max_ratio_cap is not None and not (math.isfinite(self.max_ratio_cap) and self.max_ratio_cap > 1.0):
            raise ValueError(f"algo.max_ratio_cap: must be > 1 (or null to disable), got {self.max_ratio_cap}")
        _choice("old_logprobs", self.old_logprobs, OLD_LOGPROBS_SOURCES)
        _choice("objective", self.objective, OBJECTIVES)
        if self.objective == "decoupled" and self.old_logprobs != "recompute":
            raise ValueError("algo.objective: 'decoupled' clips against the proximal policy, which the trainer "
                             "recomputes: set algo.old_logprobs=recompute")
        if self.behav_weight_cap is not None and not (math.isfinite(self.behav_weight_cap)
                                                      and self.behav_weight_cap > 1.0):
            raise ValueError(f"algo.behav_weight_cap: must be > 1 (or null to disable), got {self.behav_weight_cap}")
        for name in ("ppo_minibatches", "ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"algo.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("reward_correct", "reward_wrong"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"algo.{name}: must be finite, got {getattr(self, name)}")
        if self.reward_correct <= self.reward_wrong:
            raise ValueError(
                f"algo.reward_correct: must be > reward_wrong ({self.reward_wrong}), got {self.reward_correct}"
            )
