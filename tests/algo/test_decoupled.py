"""The decoupled PPO objective (arXiv 2505.24298): equal to PPO when pi_behav = pi_prox,
and against a float64 reference written from its formula otherwise (loss and gradient)."""
import math

import pytest
import torch
from algo_ref import random_batch

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.loss import policy_loss


def _inputs(seed, batch=6, length=11):
    _, prox, ref, _, mask, _ = random_batch(batch=batch, length=length, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    lp = (prox + 0.35 * torch.randn(prox.shape, generator=g)).clamp(max=0)
    behav = (prox + 0.8 * torch.randn(prox.shape, generator=g)).clamp(max=0)  # some weights exceed the cap
    adv = torch.randn(prox.shape, generator=g) * 2
    return lp, prox, behav, adv, mask, ref


def _reference(lp, prox, behav, adv, mask, cfg, ref):
    """Float64: sum over masked tokens of w * clipped surrogate (+ unweighted KL) / token count."""
    lp, prox, behav, adv, m = lp.double(), prox.double(), behav.double(), adv.double(), mask.double()
    ratio = torch.exp(lp - prox)
    eps_high = cfg.eps_clip if cfg.eps_clip_high is None else cfg.eps_clip_high
    surr = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - cfg.eps_clip, 1 + eps_high))
    if cfg.dual_clip is not None:
        surr = torch.where(adv < 0, torch.minimum(surr, -adv * cfg.dual_clip), surr)
    w = torch.exp(prox - behav)
    if cfg.behav_weight_cap is not None:
        w = torch.where(w > cfg.behav_weight_cap, 0.0, w)
    term = w * surr
    if not cfg.kl_in_reward and cfg.kl_coef:
        term = term + cfg.kl_coef * (lp - ref.double())  # k1
    return (term * m).sum() / m.sum()


@pytest.mark.parametrize("extra", [dict(), dict(dual_clip=3.0, eps_clip_high=0.28),
                                   dict(kl_in_reward=False, kl_coef=0.1, kl_estimator="k1")])
def test_equals_ppo_when_behaviour_is_proximal(extra):
    lp, prox, _, adv, mask, ref = _inputs(seed=3)
    ppo_cfg = AlgoConfig(max_ratio_cap=None, old_logprobs="recompute", **extra)
    dec_cfg = AlgoConfig(max_ratio_cap=None, old_logprobs="recompute", objective="decoupled", **extra)
    grads = []
    for cfg, behav in ((ppo_cfg, None), (dec_cfg, prox.clone())):
        x = lp.clone().requires_grad_(True)
        loss, stats = policy_loss(x, prox, adv, mask, cfg, ref_logprobs=ref, backend="torch", behav_logprobs=behav)
        loss.backward()
        grads.append((float(loss), x.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6, abs=1e-7)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-8)
    assert float(stats["behav_weight_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(stats["behav_capped_fraction"]) == 0.0


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("cap", [2.0, None])
def test_matches_float64_reference(backend, cap):
    cfg = AlgoConfig(max_ratio_cap=None, old_logprobs="recompute", objective="decoupled", behav_weight_cap=cap,
                     dual_clip=3.0, kl_in_reward=False, kl_coef=0.05, kl_estimator="k1")
    lp, prox, behav, adv, mask, ref = _inputs(seed=11)
    x = lp.clone().requires_grad_(True)
    loss, stats = policy_loss(x, prox, adv, mask, cfg, ref_logprobs=ref, backend=backend, behav_logprobs=behav)
    loss.backward()
    x64 = lp.double().requires_grad_(True)
    want = _reference(x64, prox, behav, adv, mask, cfg, ref)
    want.backward()
    assert math.isclose(float(loss), float(want), rel_tol=1e-5, abs_tol=1e-6)
    torch.testing.assert_close(x.grad.double(), torch.where(mask, x64.grad, 0.0), rtol=1e-5, atol=1e-7)
    w = torch.exp(prox.double() - behav.double())[mask]
    capped = (w > cap) if cap is not None else torch.zeros_like(w, dtype=torch.bool)
    assert float(stats["behav_capped_fraction"]) == pytest.approx(float(capped.double().mean()), abs=1e-6)
    if cap is not None:
        assert 0 < float(stats["behav_capped_fraction"]) < 0.5  # the inputs exercise the cap
    assert float(stats["behav_weight_max"]) == pytest.approx(float(w[~capped].max()), rel=1e-5)


def test_config_and_inputs_are_checked():
    with pytest.raises(ValueError, match="algo.old_logprobs=recompute"):
        AlgoConfig(objective="decoupled")
    with pytest.raises(ValueError, match="algo.objective"):
        AlgoConfig(objective="grpo")
    with pytest.raises(ValueError, match="behav_weight_cap"):
        AlgoConfig(old_logprobs="recompute", objective="decoupled", behav_weight_cap=0.5)
    cfg = AlgoConfig(old_logprobs="recompute", objective="decoupled")
    lp, prox, behav, adv, mask, _ = _inputs(seed=1)
    with pytest.raises(ValueError, match="behav_logprobs: needed"):
        policy_loss(lp, prox, adv, mask, cfg, backend="torch")
    with pytest.raises(ValueError, match="behav_logprobs: expected shape"):
        policy_loss(lp, prox, adv, mask, cfg, backend="torch", behav_logprobs=behav[:, :3])
