"""Triton PPO loss: one elementwise pass writes each token's weighted loss and
its gradient d loss / d logprob (forward and backward fused), plus the ratio
and clip flags used for the statistics. Same formulas as `ppo_loss._token_terms`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _common

KL_ESTIMATORS = {"k1": 1, "k2": 2, "k3": 3}


@triton.jit
def _ppo_kernel(lp_ptr, old_ptr, adv_ptr, ref_ptr, wt_ptr, loss_ptr, grad_ptr, ratio_ptr, clip_ptr, dual_ptr,
                n, eps_low, eps_high, dual_clip, kl_coef,
                HAS_DUAL: tl.constexpr, KL_EST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    wt = tl.load(wt_ptr + offs, mask=inb, other=0.0)
    live = wt != 0.0
    old = tl.load(old_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    lp = tl.where(live, tl.load(lp_ptr + offs, mask=inb, other=0.0).to(tl.float32), old)
    adv = tl.where(live, tl.load(adv_ptr + offs, mask=inb, other=0.0).to(tl.float32), 0.0)
    ratio = tl.exp(lp - old)
    pg1 = -adv * ratio
    pg2 = -adv * tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high)
    clipped = pg2 > pg1
    loss = tl.where(clipped, pg2, pg1)
    grad = tl.where(clipped, 0.0, pg1)
    dual = tl.zeros(ratio.shape, tl.int1)
    if HAS_DUAL:
        pg3 = -adv * dual_clip
        dual = (adv < 0.0) & (loss > pg3)
        loss = tl.where(dual, pg3, loss)
        grad = tl.where(dual, 0.0, grad)
    if KL_EST != 0:
        d = lp - tl.where(live, tl.load(ref_ptr + offs, mask=inb, other=0.0).to(tl.float32), lp)
        if KL_EST == 1:
            kl = d
            dkl = tl.full(d.shape, 1.0, tl.float32)
        elif KL_EST == 2:
            kl = 0.5 * d * d
            dkl = d
        else:
            kl = tl.exp(-d) + d - 1.0
            dkl = 1.0 - tl.exp(-d)
        loss = loss + kl_coef * kl
        grad = grad + kl_coef * dkl
    tl.store(loss_ptr + offs, wt * loss, mask=inb)
    tl.store(grad_ptr + offs, wt * grad, mask=inb)
    tl.store(ratio_ptr + offs, ratio, mask=inb)
    tl.store(clip_ptr + offs, clipped.to(tl.float32), mask=inb)
    tl.store(dual_ptr + offs, dual.to(tl.float32), mask=inb)


class _PPOLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logprobs, old_logprobs, advantages, ref_logprobs, weights, eps_low, eps_high, dual_clip,
                kl_coef, kl_estimator):
        n = logprobs.shape[0]
        dev = logprobs.device
        loss_t, grad_t, ratio, clipped, dual = (_common.empty((n,), torch.float32, dev) for _ in range(5))
        use_kl = ref_logprobs is not None and kl_coef != 0.0
        if n:
            block = 1024
            _ppo_kernel[(triton.cdiv(n, block),)](
                logprobs, old_logprobs, advantages, ref_logprobs if use_kl else logprobs, weights,
                loss_t, grad_t, ratio, clipped, dual, n, eps_low, eps_high,
                dual_clip if dual_clip is not None else 0.0, kl_coef,
                HAS_DUAL=dual_clip is not None, KL_EST=KL_ESTIMATORS[kl_estimator] if use_kl else 0, BLOCK=block)
        ctx.save_for_backward(grad_t)
        ctx.lp_dtype = logprobs.dtype
        ctx.mark_non_differentiable(ratio, clipped, dual)
        return loss_t.sum(), ratio, clipped, dual

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        (grad_t,) = ctx.saved_tensors
        return (grad_loss * grad_t).to(ctx.lp_dtype), None, None, None, None, None, None, None, None, None


def ppo_token_terms(logprobs, old_logprobs, advantages, ref_logprobs, weights, eps_low, eps_high, dual_clip,
                    kl_coef, kl_estimator):
    """(loss scalar, ratio [T], clipped [T] float, dual-clipped [T] float) via the fused kernel."""
    return _PPOLoss.apply(logprobs.contiguous(), old_logprobs.contiguous(), advantages.contiguous(),
                          None if ref_logprobs is None else ref_logprobs.contiguous(), weights.contiguous(),
                          eps_low, eps_high, dual_clip, kl_coef, kl_estimator)
