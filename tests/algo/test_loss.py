"""policy_loss against a float64 reference written from the PPO formulas (loss and gradient)."""
import math

import pytest
import torch
from algo_ref import kl_ref, random_batch

from areal_mega.algo.config import AlgoConfig
from areal_mega.algo.loss import MinibatchRatioCap, loss_normalizers, policy_loss


def _reference(lp, old, adv, mask, cfg, ref=None, n_tokens=None, n_seqs=None):
    """Float64 PPO loss over padded rows, straight from the formulas."""
    lp, old, adv, m = lp.double(), old.double(), adv.double(), mask.double()
    ratio = torch.exp(lp - old)
    eps_high = cfg.eps_clip if cfg.eps_clip_high is None else cfg.eps_clip_high
    surr = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - cfg.eps_clip, 1 + eps_high))
    if cfg.dual_clip is not None:
        surr = torch.where(adv < 0, torch.minimum(surr, -adv * cfg.dual_clip), surr)
    if not cfg.kl_in_reward and cfg.kl_coef:
        log_r = ref.double() - lp
        kl = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": torch.exp(log_r) - 1 - log_r}[cfg.kl_estimator]
        surr = surr + cfg.kl_coef * kl
    per_seq = (surr * m).sum(1)
    counts = m.sum(1)
    if cfg.loss_agg == "token_mean":
        return per_seq.sum() / (counts.sum() if n_tokens is None else n_tokens)
    nseq = (counts > 0).sum() if n_seqs is None else n_seqs
    if cfg.loss_agg == "seq_mean_token_sum":
        return per_seq.sum() / nseq
    return (per_seq / counts.clamp(min=1)).sum() / nseq


def _inputs(seed, batch=6, length=11):
    _, old, ref, lp, mask, _ = random_batch(batch=batch, length=length, seed=seed)
    lp = (old + 0.35 * torch.randn(old.shape, generator=torch.Generator().manual_seed(seed + 100))).clamp(max=0)
    adv = torch.randn(old.shape, generator=torch.Generator().manual_seed(seed + 200)) * 2
    lp[~mask] = float("nan")  # padding garbage must not reach the loss or its gradient
    return lp, old, adv, mask, ref


CASES = [
    dict(),
    dict(eps_clip_high=0.28),
    dict(dual_clip=3.0),
    dict(kl_in_reward=False, kl_coef=0.1, kl_estimator="k3"),
    dict(kl_in_reward=False, kl_coef=0.1, kl_estimator="k1", eps_clip_high=0.3, dual_clip=2.0),
    dict(kl_in_reward=False, kl_coef=0.05, kl_estimator="k2"),
]


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_loss_and_grad_match_reference(agg, case):
    cfg = AlgoConfig(loss_agg=agg, max_ratio_cap=None, **CASES[case])
    lp, old, adv, mask, ref = _inputs(seed=case * 3 + len(agg))
    x = lp.clone().requires_grad_(True)
    loss, stats = policy_loss(x, old, adv, mask, cfg, ref_logprobs=ref, backend="torch")
    loss.backward()
    x64 = torch.where(mask, lp, old).double().requires_grad_(True)
    want = _reference(x64, old, adv, mask, cfg, ref)
    want.backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert math.isclose(float(loss), float(want), rel_tol=1e-5, abs_tol=1e-6)
    torch.testing.assert_close(x.grad.double(), torch.where(mask, x64.grad, 0.0), rtol=1e-5, atol=1e-7)
    ratio = torch.exp(lp.double() - old.double())[mask]
    eps_high = cfg.eps_clip if cfg.eps_clip_high is None else cfg.eps_clip_high
    a = adv.double()[mask]
    clipped = ((a > 0) & (ratio > 1 + eps_high)) | ((a < 0) & (ratio < 1 - cfg.eps_clip))
    assert math.isclose(float(stats["clip_fraction"]), float(clipped.double().mean()), abs_tol=1e-6)
    assert math.isclose(float(stats["ratio_mean"]), float(ratio.mean()), rel_tol=1e-5)
    kl = [kl_ref(float(lp[i, t]), float(ref[i, t]), cfg.kl_estimator) for i, t in zip(*torch.nonzero(mask, as_tuple=True))]
    assert math.isclose(float(stats["kl_ref"]), sum(kl) / len(kl), rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(float(stats["_ratio_sum"] / stats["_ratio_count"]), float(ratio.mean()), rel_tol=1e-9)


def test_triton_backend_matches_reference():
    cfg = AlgoConfig(max_ratio_cap=None, kl_in_reward=False, kl_coef=0.1, kl_estimator="k3", dual_clip=3.0)
    lp, old, adv, mask, ref = _inputs(seed=40)
    x = lp.clone().requires_grad_(True)
    loss, _ = policy_loss(x, old, adv, mask, cfg, ref_logprobs=ref, backend="triton")
    loss.backward()
    x64 = torch.where(mask, lp, old).double().requires_grad_(True)
    want = _reference(x64, old, adv, mask, cfg, ref)
    want.backward()
    assert math.isclose(float(loss), float(want), rel_tol=1e-5, abs_tol=1e-6)
    torch.testing.assert_close(x.grad.double(), torch.where(mask, x64.grad, 0.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean"])
def test_micro_batches_with_global_counts_sum_to_whole_batch(agg):
    cfg = AlgoConfig(loss_agg=agg, max_ratio_cap=None)
    lp, old, adv, mask, _ = _inputs(seed=50, batch=8)
    whole, _ = policy_loss(lp, old, adv, mask, cfg, backend="torch")
    counts = {"num_global_tokens": float(mask.sum())} if agg == "token_mean" else {"num_global_seqs": float((mask.sum(1) > 0).sum())}
    parts = [policy_loss(lp[s], old[s], adv[s], mask[s], cfg, backend="torch", **counts)[0] for s in (slice(0, 3), slice(3, None))]
    assert math.isclose(float(sum(parts)), float(whole), rel_tol=1e-5)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum"])
def test_packed_equals_padded(agg):
    cfg = AlgoConfig(loss_agg=agg, max_ratio_cap=None)
    lp, old, adv, mask, _ = _inputs(seed=60)
    padded, _ = policy_loss(lp, old, adv, mask, cfg, backend="torch")
    lens = mask.sum(1)
    packed = [t[mask] for t in (lp, old, adv)]
    loss, _ = policy_loss(*packed, torch.ones(int(lens.sum()), dtype=torch.bool), cfg, seq_lens=lens, backend="torch")
    assert math.isclose(float(loss), float(padded), rel_tol=1e-5)


def test_ratio_cap_is_decided_over_the_whole_minibatch():
    """AReaL v0.1's cap: the mean ratio over every masked token of the minibatch, not per micro-batch."""
    lp, old, adv, mask, _ = _inputs(seed=70, batch=8)
    far = torch.where(mask, old + 2.0, lp)  # ratio e^2 = 7.4 on every token
    cfg = AlgoConfig()
    # micro-batch A (1 row) far off, micro-batch B (7 rows) on-policy: A alone is above 5, the minibatch is not
    near = torch.where(mask, old, lp)
    a = policy_loss(far[:1], old[:1], adv[:1], mask[:1], cfg, backend="torch")[1]
    b = policy_loss(near[1:], old[1:], adv[1:], mask[1:], cfg, backend="torch")[1]
    gate = MinibatchRatioCap(5.0)
    assert float(a["ratio_mean"]) > 5.0 and gate([a, b]) is False and not gate.triggered
    n_a, n_b = float(mask[:1].sum()), float(mask[1:].sum())
    assert math.isclose(gate.mean, (n_a * math.exp(2.0) + n_b) / (n_a + n_b), rel_tol=1e-6)
    assert "_ratio_sum" not in a and "_ratio_count" not in b  # consumed: not reported as stats
    # every micro-batch far off: the minibatch is capped (the engine then zeroes its gradients)
    parts = [policy_loss(far[s], old[s], adv[s], mask[s], cfg, backend="torch")[1] for s in (slice(0, 3), slice(3, None))]
    assert gate(parts) is True and math.isclose(gate.mean, math.exp(2.0), rel_tol=1e-6)
    assert MinibatchRatioCap(10.0)([policy_loss(far, old, adv, mask, cfg, backend="torch")[1]]) is False


def test_token_mean_counts_only_tokens_in_the_loss():
    """overlong=mask removes a response from the loss: its tokens must leave the denominator too, so the
    loss of the batch equals the loss of the batch without it (the engine's count of every response token
    would shrink it by the removed share)."""
    lp, old, adv, mask, _ = _inputs(seed=80, batch=5)
    removed = mask.clone()
    removed[2] = False  # response 2 was cut at max_new_tokens and masked out
    cfg = AlgoConfig(max_ratio_cap=None)
    assert bool(mask[2].any())
    tokens, seqs = loss_normalizers(list(removed))
    assert tokens == float(removed.sum()) < float(mask.sum())
    assert seqs == float((removed.sum(1) > 0).sum()) == float((mask.sum(1) > 0).sum()) - 1
    keep = [0, 1, 3, 4]
    want, _ = policy_loss(lp[keep], old[keep], adv[keep], mask[keep], cfg, backend="torch")
    got, _ = policy_loss(lp, old, adv, removed, cfg, num_global_tokens=tokens, backend="torch")
    assert math.isclose(float(got), float(want), rel_tol=1e-6)
    seq_cfg = AlgoConfig(max_ratio_cap=None, loss_agg="seq_mean_token_mean")
    want, _ = policy_loss(lp[keep], old[keep], adv[keep], mask[keep], seq_cfg, backend="torch")
    got, _ = policy_loss(lp, old, adv, removed, seq_cfg, num_global_seqs=seqs, backend="torch")
    assert math.isclose(float(got), float(want), rel_tol=1e-6)


def test_kl_in_reward_keeps_kl_out_of_the_loss():
    lp, old, adv, mask, ref = _inputs(seed=80)
    base, _ = policy_loss(lp, old, adv, mask, AlgoConfig(kl_coef=0.0), backend="torch")
    in_reward, _ = policy_loss(lp, old, adv, mask, AlgoConfig(kl_coef=0.5), ref_logprobs=ref, backend="torch")
    in_loss, _ = policy_loss(lp, old, adv, mask, AlgoConfig(kl_coef=0.5, kl_in_reward=False), ref_logprobs=ref, backend="torch")
    assert float(in_reward) == pytest.approx(float(base), rel=1e-6)
    assert abs(float(in_loss) - float(base)) > 1e-3


def test_bad_inputs_name_the_argument():
    lp, old, adv, mask, _ = _inputs(seed=90)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, old, adv[:, :-1], mask, AlgoConfig())
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(lp, old, adv, mask, AlgoConfig(kl_in_reward=False, kl_coef=0.1))
    with pytest.raises(ValueError, match="seq_lens"):
        policy_loss(lp, old, adv, mask, AlgoConfig(), seq_lens=mask.sum(1))
    with pytest.raises(ValueError, match="logprobs"):
        policy_loss(lp[None], old[None], adv[None], mask[None], AlgoConfig())
