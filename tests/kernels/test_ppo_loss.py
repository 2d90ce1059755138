"""ppo_loss against a float64 per-token reference, both backends, fwd + bwd."""
import math

import pytest
import torch
from areal_mega.kernels import ppo_loss

SEQ_LENS = [5, 11, 1, 9, 14]  # T = 40, one sequence fully masked below
T = sum(SEQ_LENS)


def _inputs(seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(T, generator=g, dtype=torch.float64) * 4
    lp = old + 0.4 * torch.randn(T, generator=g, dtype=torch.float64)  # ratios well outside 1 +- 0.2
    ref = old + 0.3 * torch.randn(T, generator=g, dtype=torch.float64)
    adv = torch.randn(T, generator=g, dtype=torch.float64)
    mask = torch.rand(T, generator=g) > 0.25
    mask[5:16] = False  # the second sequence has no loss tokens
    return tuple(x.to(device) for x in (lp, old, adv, ref, mask))


def _reference(lp, old, adv, ref, mask, eps, eps_high, dual, kl_coef, est, agg, n_tokens=None, n_seqs=None):
    """Plain float64 loops, written from the formulas (not from the kernel)."""
    per_token = []
    for i in range(T):
        r = math.exp(lp[i] - old[i])
        a = adv[i].item()
        pg = max(-a * r, -a * min(max(r, 1 - eps), 1 + eps_high))
        if dual is not None and a < 0:
            pg = min(pg, -a * dual)
        d = (lp[i] - ref[i]).item()
        kl = {"k1": d, "k2": 0.5 * d * d, "k3": math.exp(-d) + d - 1}[est]
        per_token.append(pg + kl_coef * kl)
    if agg == "token_mean":
        total = sum(per_token[i] for i in range(T) if mask[i])
        return total / (n_tokens or max(int(mask.sum()), 1))
    starts = [sum(SEQ_LENS[:k]) for k in range(len(SEQ_LENS))]
    seq_values = []
    for start, n in zip(starts, SEQ_LENS):
        idx = [i for i in range(start, start + n) if mask[i]]
        if idx:
            s = sum(per_token[i] for i in idx)
            seq_values.append(s if agg == "seq_mean_token_sum" else s / len(idx))
    return sum(seq_values) / (n_seqs or len(seq_values))


CASES = [
    dict(eps=0.2, eps_high=None, dual=None, kl_coef=0.0, est="k3", agg="token_mean"),
    dict(eps=0.2, eps_high=0.28, dual=3.0, kl_coef=0.05, est="k3", agg="token_mean"),
    dict(eps=0.1, eps_high=0.3, dual=None, kl_coef=0.1, est="k1", agg="seq_mean_token_sum"),
    dict(eps=0.2, eps_high=None, dual=1.5, kl_coef=0.2, est="k2", agg="seq_mean_token_mean"),
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_loss_and_grad_match_reference(backend, case, device, poison):
    c = CASES[case]
    lp64, old, adv, ref, mask = _inputs(case, device)
    lp = lp64.float().requires_grad_(True)
    kw = dict(eps_clip=c["eps"], eps_clip_high=c["eps_high"], dual_clip=c["dual"], kl_coef=c["kl_coef"],
              kl_estimator=c["est"], agg=c["agg"], backend=backend,
              ref_logprobs=ref.float() if c["kl_coef"] else None,
              seq_lens=None if c["agg"] == "token_mean" else torch.tensor(SEQ_LENS, device=device))
    loss, stats = ppo_loss(lp, old.float(), adv.float(), mask, **kw)
    eps_high = c["eps"] if c["eps_high"] is None else c["eps_high"]
    lp_q = lp.detach().double()  # the reference sees the same float32-rounded inputs
    args = (old.float().double(), adv.float().double(), ref.float().double(), mask, c["eps"], eps_high,
            c["dual"], c["kl_coef"], c["est"], c["agg"])
    expected = _reference(lp_q, *args)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)

    (grad,) = torch.autograd.grad(loss, lp)
    h = 1e-6
    for i in [0, 3, 4, 17, 20, 30, 39]:
        bumped = lp_q.clone()
        bumped[i] += h
        numeric = (_reference(bumped, *args) - _reference(lp_q, *args)) / h
        assert grad[i].item() == pytest.approx(numeric, rel=1e-3, abs=1e-5), i
    assert (grad[~mask] == 0).all()

    r = torch.exp(lp_q - old.float().double())[mask]
    assert stats["ratio_mean"].item() == pytest.approx(r.mean().item(), rel=1e-5)
    assert stats["ratio_max"].item() == pytest.approx(r.max().item(), rel=1e-5)
    assert stats["approx_kl"].item() == pytest.approx((r - 1 - r.log()).mean().item(), rel=1e-4)
    a = adv.float().double()[mask]
    clipped = (-a * r.clamp(1 - c["eps"], 1 + eps_high)) > (-a * r)
    assert stats["clip_fraction"].item() == pytest.approx(clipped.double().mean().item(), abs=1e-6)
    assert 0 < stats["clip_fraction"].item() < 1
    assert all(not v.requires_grad for v in stats.values())


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_global_denominators(backend, device):
    lp, old, adv, ref, mask = _inputs(7, device)
    lp, old, adv = lp.float(), old.float(), adv.float()
    local, _ = ppo_loss(lp, old, adv, mask, backend=backend)
    scaled, _ = ppo_loss(lp, old, adv, mask, num_global_tokens=4 * int(mask.sum()), backend=backend)
    assert scaled.item() == pytest.approx(local.item() / 4, rel=1e-6)
    seq_lens = torch.tensor(SEQ_LENS, device=device)
    local, _ = ppo_loss(lp, old, adv, mask, agg="seq_mean_token_sum", seq_lens=seq_lens, backend=backend)
    scaled, _ = ppo_loss(lp, old, adv, mask, agg="seq_mean_token_sum", seq_lens=seq_lens, num_global_seqs=8,
                         backend=backend)
    assert scaled.item() == pytest.approx(local.item() * 4 / 8, rel=1e-6)  # 4 sequences have loss tokens


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_on_policy_step_zero(backend, device):
    """Step 0: logprobs == old logprobs -> ratio 1, nothing clipped, KL 0, loss = -mean(A)."""
    _, old, adv, _, mask = _inputs(3, device)
    lp = old.float().clone().requires_grad_(True)
    loss, stats = ppo_loss(lp, old.float(), adv.float(), mask, ref_logprobs=old.float(), kl_coef=0.1,
                           backend=backend)
    assert loss.item() == pytest.approx(-adv[mask].mean().item(), rel=1e-5)
    assert stats["clip_fraction"].item() == 0 and stats["approx_kl"].item() == 0
    assert stats["ratio_mean"].item() == stats["ratio_max"].item() == 1.0


def test_bad_input_names_the_problem():
    lp, old, adv, _, mask = (x.float() if x.is_floating_point() else x for x in _inputs(1))
    with pytest.raises(ValueError, match=r"old_logprobs: expected shape \[40\]"):
        ppo_loss(lp, old[:-1], adv, mask)
    with pytest.raises(ValueError, match="needs seq_lens"):
        ppo_loss(lp, old, adv, mask, agg="seq_mean_token_mean")
    with pytest.raises(ValueError, match="seq_lens"):
        ppo_loss(lp, old, adv, mask, agg="seq_mean_token_mean", seq_lens=torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        ppo_loss(lp, old, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_loss(lp, old, adv, mask, dual_clip=0.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo_loss(lp, old, adv, mask, kl_estimator="k4")
    with pytest.raises(ValueError, match="agg="):
        ppo_loss(lp, old, adv, mask, agg="sum")
    with pytest.raises(ValueError, match="advantages: expected a float"):
        ppo_loss(lp, old, adv.long(), mask)
    with pytest.raises(ValueError, match="num_global_seqs applies"):
        ppo_loss(lp, old, adv, mask, num_global_seqs=3)
