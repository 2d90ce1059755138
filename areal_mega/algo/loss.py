"""The PPO policy loss of one micro-batch, configured by AlgoConfig, on the fused kernel.

Inputs are either padded `[batch, max_response_len]` (one sequence per row;
padding is excluded by `loss_mask`) or packed flat `[num_tokens]` with
`seq_lens` `[num_seqs]` (what the engine's packed forward yields). float32
log-probs; `loss_mask` bool or 0/1.

Global normalisation: pass the counts of the whole minibatch (every
micro-batch on every DP rank) as `num_global_tokens` ("token_mean") or
`num_global_seqs` ("seq_mean_*"); each call then returns its share, and the
micro-batch losses summed over micro-batches *and DP ranks* give the loss of
the minibatch. The engine must therefore sum, not average, gradients over DP
(or multiply the loss by the DP size when its DDP averages).
"""
from __future__ import annotations

import torch

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.kl import kl_estimate
from areal_mega.algo.mismatch import mean_importance_ratio
from areal_mega.algo.reduce import masked_moments
from areal_mega.kernels import ppo_loss


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    cfg: AlgoConfig,
    ref_logprobs: torch.Tensor | None = None,
    num_global_tokens: float | None = None,
    num_global_seqs: float | None = None,
    seq_lens: torch.Tensor | None = None,
    dp_group=None,
    backend: str = "auto",
    behav_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-surrogate loss (scalar float32, differentiable w.r.t. `logprobs`) and stats.

    cfg gives eps_clip / eps_clip_high / dual_clip, the aggregation
    (cfg.loss_agg), the KL-to-reference loss term (cfg.kl_coef with
    cfg.kl_estimator, only when not cfg.kl_in_reward; needs `ref_logprobs`),
    and the ratio cap: when the mean importance ratio exp(logprobs -
    old_logprobs) over this call's masked tokens (all-reduced over
    `dp_group`, so all ranks agree) exceeds cfg.max_ratio_cap, the loss is
    multiplied by 0 (the graph is kept, so every rank's backward still runs),
    as AReaL v0.1 did.
    Stats (detached 0-dim tensors, over this call's masked tokens): the
    kernel's clip_fraction, dual_clip_fraction, approx_kl (KL(old || new)),
    ratio_mean, ratio_max; "kl_ref" (mean KL estimate to the reference, when
    ref_logprobs is given); "ratio_cap_triggered" (1.0 when the loss was zeroed).

    cfg.objective == "decoupled": `old_logprobs` are the proximal policy's
    (recomputed by the trainer) and `behav_logprobs` the behaviour policy's
    (the rollout's). Each token's clipped term is multiplied by
    w = pi_prox / pi_behav (a constant), w = 0 where it exceeds
    cfg.behav_weight_cap. Because w >= 0, w * max(-A r, -A clip(r)) =
    max(-(wA) r, -(wA) clip(r)) (and likewise for the dual clip), so the
    kernel runs on advantages w * A; the KL term is not weighted. Extra stats:
    behav_weight_mean / behav_weight_max over masked tokens and
    behav_capped_fraction.
    """
    if logprobs.dim() == 2:
        batch, length = logprobs.shape
        if seq_lens is not None:
            raise ValueError("seq_lens: only for packed [num_tokens] inputs; padded rows are the sequences")
        for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("loss_mask", loss_mask),
                        ("ref_logprobs", ref_logprobs)):
            if t is not None and t.shape != logprobs.shape:
                raise ValueError(f"{name}: expected shape {tuple(logprobs.shape)} like logprobs, got {tuple(t.shape)}")
        seq_lens = torch.full((batch,), length, dtype=torch.int64, device=logprobs.device)
        if behav_logprobs is not None and behav_logprobs.shape != logprobs.shape:
            raise ValueError(f"behav_logprobs: expected shape {tuple(logprobs.shape)} like logprobs, "
                             f"got {tuple(behav_logprobs.shape)}")
        flat = [None if t is None else t.reshape(-1)
                for t in (logprobs, old_logprobs, advantages, loss_mask, ref_logprobs, behav_logprobs)]
        logprobs, old_logprobs, advantages, loss_mask, ref_logprobs, behav_logprobs = flat
    elif logprobs.dim() != 1:
        raise ValueError(f"logprobs: expected [batch, max_response_len] or [num_tokens], got {tuple(logprobs.shape)}")
    kl_in_loss = not cfg.kl_in_reward and cfg.kl_coef != 0.0
    if kl_in_loss and ref_logprobs is None:
        raise ValueError("ref_logprobs: needed for the KL loss term (algo.kl_in_reward=false, algo.kl_coef != 0)")
    decoupled_stats = {}
    if cfg.objective == "decoupled":
        if behav_logprobs is None:
            raise ValueError("behav_logprobs: needed for algo.objective=decoupled (the rollout's log-probs)")
        advantages, decoupled_stats = _behaviour_weighted(advantages, old_logprobs, behav_logprobs, loss_mask,
                                                          cfg.behav_weight_cap)
    token_mean = cfg.loss_agg == "token_mean"
    loss, stats = ppo_loss(
        logprobs,
        old_logprobs,
        advantages,
        loss_mask,
        eps_clip=cfg.eps_clip,
        eps_clip_high=cfg.eps_clip_high,
        dual_clip=cfg.dual_clip,
        ref_logprobs=ref_logprobs if kl_in_loss else None,
        kl_coef=cfg.kl_coef if kl_in_loss else 0.0,
        kl_estimator=cfg.kl_estimator,
        agg=cfg.loss_agg,
        seq_lens=None if token_mean else seq_lens,
        num_global_tokens=num_global_tokens if token_mean else None,
        num_global_seqs=None if token_mean else num_global_seqs,
        backend=backend,
    )
    stats.update(decoupled_stats)
    mask = loss_mask.float()
    if ref_logprobs is not None:
        with torch.no_grad():
            kl = kl_estimate(logprobs.detach().float(), ref_logprobs.float(), cfg.kl_estimator)
            stats["kl_ref"] = masked_moments(kl, mask)[0].float()
    triggered = False
    if cfg.max_ratio_cap is not None:
        triggered = float(mean_importance_ratio(logprobs, old_logprobs, mask, group=dp_group)) > cfg.max_ratio_cap
        if triggered:
            loss = loss * 0.0
    stats["ratio_cap_triggered"] = torch.tensor(float(triggered))
    return loss, stats


@torch.no_grad()
def _behaviour_weighted(advantages, prox_logprobs, behav_logprobs, loss_mask, cap):
    """Advantages [N] times w = exp(prox - behav) (0 above `cap`), and the weight's stats."""
    mask = loss_mask.bool()
    weight = torch.exp(prox_logprobs.float() - behav_logprobs.float())
    capped = weight > cap if cap is not None else torch.zeros_like(mask)
    weight = torch.where(capped | ~mask, 0.0, weight)
    live = weight[mask & ~capped]
    n = mask.sum().clamp_min(1)
    stats = {
        "behav_weight_mean": live.mean() if live.numel() else torch.tensor(0.0),
        "behav_weight_max": live.max() if live.numel() else torch.tensor(0.0),
        "behav_capped_fraction": (capped & mask).sum().float() / n,
    }
    return advantages.float() * weight, stats
