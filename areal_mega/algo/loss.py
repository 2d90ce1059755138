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
(or multiply the loss by the DP size when its DDP averages). Count only the
tokens (and sequences) that are in the loss (`loss_normalizers`): a response
that `overlong=mask` removed must not dilute the mean.

The importance-ratio cap is a decision about the whole minibatch, known only
after every micro-batch's forward: `MinibatchRatioCap` is the engine's
`grad_gate` (called after the backward, before the optimizer step) and zeroes
the minibatch's gradients, which is the update of a zeroed loss.
"""
from __future__ import annotations

import torch

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.kl import kl_estimate
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
    backend: str = "auto",
    behav_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-surrogate loss (scalar float32, differentiable w.r.t. `logprobs`) and stats.

    cfg gives eps_clip / eps_clip_high / dual_clip, the aggregation
    (cfg.loss_agg), the KL-to-reference loss term (cfg.kl_coef with
    cfg.kl_estimator, only when not cfg.kl_in_reward; needs `ref_logprobs`).
    The ratio cap (cfg.max_ratio_cap) is not applied here but over the whole
    minibatch by `MinibatchRatioCap`, from this call's "_ratio_sum" (sum of
    exp(logprobs - old_logprobs) over masked tokens) and "_ratio_count".
    Stats (detached 0-dim tensors, over this call's masked tokens): the
    kernel's clip_fraction, dual_clip_fraction, approx_kl (KL(old || new)),
    ratio_mean, ratio_max; "kl_ref" (mean KL estimate to the reference, when
    ref_logprobs is given); "_ratio_sum", "_ratio_count" (for the cap).

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
    with torch.no_grad():
        ratio = torch.exp(logprobs.detach().double() - old_logprobs.double())
        stats["_ratio_sum"] = torch.where(mask > 0, ratio, 0.0).sum()  # padding may hold garbage (NaN)
        stats["_ratio_count"] = mask.double().sum()
    return loss, stats


def loss_normalizers(loss_mask: list[torch.Tensor]) -> tuple[float, float]:
    """(tokens, sequences) of a minibatch that are in the loss: the global denominators.

    loss_mask: per sequence, its `[response_len]` 0/1 mask. Tokens masked out
    (e.g. a response `overlong=mask` removed) and sequences with no token left
    count in neither, so "token_mean" is the mean over the tokens trained on.
    """
    tokens = sum(float(m.float().sum()) for m in loss_mask)
    seqs = sum(1.0 for m in loss_mask if bool((m != 0).any()))
    return max(tokens, 1.0), max(seqs, 1.0)  # an all-masked minibatch: loss 0, not 0 / 0


class MinibatchRatioCap:
    """The importance-ratio cap over one minibatch (AReaL v0.1: mean ratio above 5 zeroes its loss).

    An `Engine.train_step` grad_gate: called on every rank after the backward
    with that rank's micro-batch stats (from `policy_loss`; none off the last
    pipeline stage), it all-reduces the ratio sums over `group` (the job's
    object group: every DP rank's micro-batches; TP copies scale sum and count
    alike) and returns True, so the engine zeroes the gradients, when the mean
    ratio exceeds `cap`. `mean` and `triggered` hold the last decision.
    """

    def __init__(self, cap: float, group=None):
        self.cap, self.group = cap, group
        self.mean, self.triggered = 0.0, False

    def __call__(self, micro_stats: list[dict]) -> bool:
        import torch.distributed as dist

        totals = torch.tensor([[s.pop("_ratio_sum"), s.pop("_ratio_count")] for s in micro_stats],
                              dtype=torch.float64).reshape(-1, 2).sum(0)
        if dist.is_initialized():
            dist.all_reduce(totals, group=self.group)
        self.mean = float(totals[0] / totals[1]) if totals[1] > 0 else 0.0
        self.triggered = self.mean > self.cap
        return self.triggered


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
