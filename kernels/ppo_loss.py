"""Clipped-surrogate PPO loss (critic-free), with clip-higher, dual clip and an
optional KL-to-reference term, over flat packed tokens.

Per token (r = exp(logprobs - old_logprobs), A = advantage):
  pg    = max(-A r, -A clip(r, 1 - eps_clip, 1 + eps_clip_high))
  pg    = min(pg, -A dual_clip)        where A < 0 (dual clip, when given)
  loss  = pg + kl_coef * KL_est(logprobs, ref_logprobs)
  k1 = d, k2 = d^2 / 2, k3 = exp(-d) + d - 1 with d = logprobs - ref_logprobs.
Aggregation over the tokens where loss_mask is set:
  token_mean           sum(loss) / num_global_tokens (default: the local mask count)
  seq_mean_token_sum   sum over sequences of sum(loss) / num_global_seqs
  seq_mean_token_mean  sum over sequences of mean(loss) / num_global_seqs
num_global_seqs defaults to the local number of sequences with at least one
unmasked token. Pass the global counts (over micro-batches and DP ranks) so
that summing every micro-batch's loss gives the loss of the whole batch.
Gradients flow to `logprobs` only; the other inputs are constants.
"""
from __future__ import annotations

import torch

from . import _common, ppo_triton

AGGREGATIONS = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")


def _check_inputs(named: dict, n: int, device):
    for name, x in named.items():
        if x is None:
            continue
        if x.dim() != 1 or x.shape[0] != n:
            raise ValueError(f"{name}: expected shape [{n}] (flat tokens), got {list(x.shape)}")
        if x.device != device:
            raise ValueError(f"{name}: on {x.device}, expected {device}")
        if name != "loss_mask" and not x.is_floating_point():
            raise ValueError(f"{name}: expected a float tensor, got {x.dtype}")


def _token_weights(mask: torch.Tensor, agg: str, seq_lens, num_global_tokens, num_global_seqs) -> torch.Tensor:
    """[T] float32 weight of each token's loss in the aggregated scalar."""
    if agg == "token_mean":
        denom = mask.sum().clamp_min(1.0) if num_global_tokens is None else float(num_global_tokens)
        return mask / denom
    seq_ids = torch.repeat_interleave(torch.arange(len(seq_lens), device=mask.device), seq_lens)
    counts = torch.zeros(len(seq_lens), device=mask.device).index_add_(0, seq_ids, mask)
    n_seqs = (counts > 0).sum().clamp_min(1) if num_global_seqs is None else float(num_global_seqs)
    if agg == "seq_mean_token_sum":
        return mask / n_seqs
    return mask / (counts.clamp_min(1.0)[seq_ids] * n_seqs)


def _token_terms_torch(logprobs, old_logprobs, advantages, ref_logprobs, weights, eps_low, eps_high, dual_clip,
                       kl_coef, kl_estimator):
    """Same outputs as `ppo_triton.ppo_token_terms`, with torch autograd."""
    live = weights != 0
    old = old_logprobs.float()
    lp = torch.where(live, logprobs.float(), old)
    adv = torch.where(live, advantages.float(), 0.0)
    ratio = torch.exp(lp - old)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    clipped = pg2 > pg1
    loss = torch.where(clipped, pg2, pg1)
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        pg3 = -adv * dual_clip
        dual = (adv < 0) & (loss > pg3)
        loss = torch.where(dual, pg3, loss)
    if ref_logprobs is not None and kl_coef != 0.0:
        d = lp - torch.where(live, ref_logprobs.float(), lp)
        kl = {"k1": lambda: d, "k2": lambda: 0.5 * d * d, "k3": lambda: torch.exp(-d) + d - 1.0}[kl_estimator]()
        loss = loss + kl_coef * kl
    return (weights * loss).sum(), ratio.detach(), clipped.float(), dual.float()


def ppo_loss(logprobs, old_logprobs, advantages, loss_mask, *, eps_clip: float = 0.2,
             eps_clip_high: float | None = None, dual_clip: float | None = None, ref_logprobs=None,
             kl_coef: float = 0.0, kl_estimator: str = "k3", agg: str = "token_mean",
             seq_lens: torch.Tensor | None = None, num_global_tokens: float | None = None,
             num_global_seqs: float | None = None, backend: str = "auto"):
    """PPO policy loss over packed tokens.

    logprobs: [T] float (differentiable), old_logprobs / advantages / ref_logprobs: [T] float.
    loss_mask: [T] bool or 0/1 (1 = a response token that counts).
    eps_clip, eps_clip_high: lower / upper clip range (eps_clip_high defaults to eps_clip).
    dual_clip: None or c > 1, the dual-clip cap -A c for negative advantages.
    kl_coef, kl_estimator ("k1" | "k2" | "k3"): KL-to-reference loss, needs ref_logprobs.
    agg: "token_mean" | "seq_mean_token_sum" | "seq_mean_token_mean" (see module docstring).
    seq_lens: [num_seqs] int64 lengths of the packed sequences (sum = T), for seq_mean_*.
    num_global_tokens / num_global_seqs: global denominators for token_mean / seq_mean_*.
    Returns (loss: scalar float32, stats: dict of detached float32 scalars over masked
    tokens: clip_fraction, dual_clip_fraction, approx_kl (k3 estimate of
    KL(old || new)), ratio_mean, ratio_max).
    """
    n = logprobs.shape[0] if logprobs.dim() == 1 else -1
    _check_inputs(dict(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,
                       loss_mask=loss_mask, ref_logprobs=ref_logprobs), n, logprobs.device)
    if not eps_clip > 0:
        raise ValueError(f"eps_clip={eps_clip}: must be > 0")
    eps_high = eps_clip if eps_clip_high is None else eps_clip_high
    if not eps_high > 0:
        raise ValueError(f"eps_clip_high={eps_clip_high}: must be > 0")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip={dual_clip}: must be > 1 (or None)")
    if kl_estimator not in ppo_triton.KL_ESTIMATORS:
        raise ValueError(f"kl_estimator={kl_estimator!r}: expected one of {list(ppo_triton.KL_ESTIMATORS)}")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logprobs")
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg={agg!r}: expected one of {AGGREGATIONS}")
    if agg == "token_mean":
        if num_global_seqs is not None:
            raise ValueError("num_global_seqs applies to seq_mean_* aggregations; use num_global_tokens")
        if num_global_tokens is not None and not num_global_tokens > 0:
            raise ValueError(f"num_global_tokens={num_global_tokens}: must be > 0")
    else:
        if seq_lens is None:
            raise ValueError(f"agg={agg!r} needs seq_lens ([num_seqs] lengths of the packed sequences)")
        if seq_lens.dim() != 1 or seq_lens.is_floating_point() or int(seq_lens.sum()) != n or bool((seq_lens < 0).any()):
            raise ValueError(f"seq_lens: expected [num_seqs] non-negative ints summing to T={n}")
        if num_global_tokens is not None:
            raise ValueError("num_global_tokens applies to token_mean; use num_global_seqs")
        if num_global_seqs is not None and not num_global_seqs > 0:
            raise ValueError(f"num_global_seqs={num_global_seqs}: must be > 0")
        seq_lens = seq_lens.to(device=logprobs.device, dtype=torch.int64)
    backend = _common.resolve_backend(backend, logprobs.device)
    mask = loss_mask.float()
    weights = _token_weights(mask, agg, seq_lens, num_global_tokens, num_global_seqs)
    terms = ppo_triton.ppo_token_terms if backend == "triton" else _token_terms_torch
    loss, ratio, clipped, dual = terms(logprobs, old_logprobs, advantages, ref_logprobs, weights,
                                       float(eps_clip), float(eps_high), dual_clip, float(kl_coef), kl_estimator)
    return loss, _stats(mask, ratio, clipped, dual)


def _stats(mask, ratio, clipped, dual) -> dict:
    count = mask.sum().clamp_min(1.0)
    live = mask > 0
    log_ratio = torch.log(ratio.clamp_min(1e-30))
    with torch.no_grad():
        return {
            "clip_fraction": (clipped * mask).sum() / count,
            "dual_clip_fraction": (dual * mask).sum() / count,
            "approx_kl": ((ratio - 1.0 - log_ratio) * mask).sum() / count,
            "ratio_mean": (ratio * mask).sum() / count,
            "ratio_max": torch.where(live, ratio, 0.0).amax() if ratio.numel() else ratio.new_zeros(()),
        }
