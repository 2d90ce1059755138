"""Advantages against float64 loop references written from the formulas.

The functions take flat `[num_tokens]` tensors with per-sample `lengths`; the references are
written over padded `[B, L]` rows, which these tests pass as flat tensors of B samples of L tokens
each (padding = masked-out tokens) and reshape back."""
import math

import pytest
import torch
from algo_ref import kl_ref, random_batch

from areal_mega.algo import advantages as A
from areal_mega.algo.config import AlgoConfig


def _rows(x):
    """[B, L] -> ([B * L], lengths [B] all L); None stays None."""
    return None if x is None else x.reshape(-1)


def _lens(mask):
    return torch.full((mask.shape[0],), mask.shape[1], dtype=torch.int64)


def token_rewards(task, mask, old=None, ref=None, kl_coef=0.0, kl_estimator="k1"):
    return A.token_rewards(task, _rows(mask), _lens(mask), _rows(old), _rows(ref), kl_coef, kl_estimator).view(mask.shape)


def reward_to_go(r, mask):
    return A.reward_to_go(_rows(r), _rows(mask), _lens(mask)).view(mask.shape)


def gae(r, mask, values=None, gamma=1.0, lam=1.0):
    adv, ret = A.gae(_rows(r), _rows(mask), _lens(mask), _rows(values), gamma=gamma, lam=lam)
    return adv.view(mask.shape), ret.view(mask.shape)


def normalize_advantages(adv, mask, mode="batch", group_ids=None, eps=1e-5):
    return A.normalize_advantages(_rows(adv), _rows(mask), _lens(mask), mode, group_ids, eps).view(mask.shape)


def compute_advantages(cfg, task, mask, old=None, ref=None, group_ids=None):
    adv, stats = A.compute_advantages(cfg, task, _rows(mask), _lens(mask), _rows(old), _rows(ref), group_ids)
    return adv.view(mask.shape), stats


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_token_rewards_match_loop(estimator):
    task, old, ref, _, mask, lengths = random_batch(seed=1)
    beta = 0.05
    got = token_rewards(task, mask, old, ref, kl_coef=beta, kl_estimator=estimator)
    want = torch.zeros_like(got, dtype=torch.float64)
    for i in range(mask.shape[0]):
        for t in range(int(lengths[i])):
            want[i, t] = -beta * kl_ref(float(old[i, t]), float(ref[i, t]), estimator)
        if lengths[i] > 0:
            want[i, int(lengths[i]) - 1] += float(task[i])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_first_and_last_token_index_with_holes_and_empty_samples():
    mask = torch.tensor([1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1], dtype=torch.bool)
    lengths = torch.tensor([5, 2, 0, 1, 3])
    assert A.last_token_index(mask, lengths).tolist() == [3, -1, -1, 7, 10]
    assert A.first_token_index(mask, lengths).tolist() == [0, -1, -1, 7, 9]


def test_ragged_samples_equal_padded_rows():
    """The flat layout without padding gives the padded rows' values at the real tokens."""
    task, old, ref, _, mask, lengths = random_batch(seed=13)
    group_ids = torch.arange(len(task)) // 3
    for cfg in (AlgoConfig(kl_coef=0.1, adv_norm="group"), AlgoConfig(kl_coef=0.1, adv_norm="batch", gamma=0.9)):
        padded, stats = compute_advantages(cfg, task, mask, old, ref, group_ids)
        flat, flat_stats = A.compute_advantages(cfg, task, torch.ones(int(lengths.sum()), dtype=torch.bool), lengths,
                                                old[mask], ref[mask], group_ids)
        torch.testing.assert_close(flat, padded[mask])
        assert flat_stats == pytest.approx(stats)


def test_reward_to_go_is_suffix_sum():
    task, old, ref, _, mask, lengths = random_batch(seed=2, holes=True)
    r = token_rewards(task, mask, old, ref, kl_coef=0.1)
    got = reward_to_go(r, mask)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            want = sum(float(r[i, k]) for k in range(t, mask.shape[1]) if mask[i, k]) if mask[i, t] else 0.0
            assert math.isclose(float(got[i, t]), want, rel_tol=1e-5, abs_tol=1e-5)


def _gae_loop(rewards, values, mask, gamma, lam):
    """Textbook GAE per row over the masked-in tokens only (holes skipped)."""
    out = torch.zeros_like(rewards, dtype=torch.float64)
    for i in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[i, t]]
        a_next, v_next = 0.0, 0.0
        for t in reversed(idx):
            delta = float(rewards[i, t]) + gamma * v_next - float(values[i, t])
            a_next = delta + gamma * lam * a_next
            v_next = float(values[i, t])
            out[i, t] = a_next
    return out


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("holes", [False, True])
def test_gae_matches_loop(gamma, lam, holes):
    task, old, ref, _, mask, _ = random_batch(seed=3, holes=holes)
    r = token_rewards(task, mask, old, ref, kl_coef=0.1)
    values = torch.randn(r.shape, generator=torch.Generator().manual_seed(4))
    adv, ret = gae(r, mask, values, gamma=gamma, lam=lam)
    want = _gae_loop(r, values, mask, gamma, lam)
    torch.testing.assert_close(adv.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret, (adv + values) * mask, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("holes", [False, True])
def test_gae_gamma_lambda_one_zero_values_is_reward_to_go(holes):
    task, old, ref, _, mask, _ = random_batch(seed=5, holes=holes)
    r = token_rewards(task, mask, old, ref, kl_coef=0.01)
    adv, ret = gae(r, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, reward_to_go(r, mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret, adv)


def test_batch_normalisation_matches_reference():
    task, old, ref, _, mask, _ = random_batch(batch=9, seed=6)
    adv = reward_to_go(token_rewards(task, mask, old, ref, kl_coef=0.1), mask)
    got = normalize_advantages(adv, mask, "batch", eps=1e-5)
    vals = adv[mask].double()
    mean, std = vals.mean(), vals.std(unbiased=False)
    want = torch.where(mask, (adv.double() - mean) / (std + 1e-5), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert abs(float(got[mask].mean())) < 1e-5 and abs(float(got[mask].std(unbiased=False)) - 1) < 1e-4


def _group_ref(adv, mask, group_ids, eps):
    """GRPO per-sample group stats: score = advantage at the first masked-in token."""
    out = torch.zeros_like(adv, dtype=torch.float64)
    for g in set(group_ids.tolist()):
        members = [i for i in range(adv.shape[0]) if group_ids[i] == g and mask[i].any()]
        scores = torch.tensor([float(adv[i][mask[i]][0]) for i in members], dtype=torch.float64)
        mean, std = (scores.mean(), scores.std()) if len(members) > 1 else (0.0, 1.0)
        for i in members:
            out[i] = torch.where(mask[i], (adv[i].double() - mean) / (std + eps), torch.zeros((), dtype=torch.float64))
    return out


def test_group_normalisation_matches_reference():
    task, old, ref, _, mask, _ = random_batch(batch=10, seed=7)
    group_ids = torch.tensor([3, 3, 3, 0, 0, 0, 0, 5, 1, 1])  # group 5: one sample; row 9 is empty
    adv = reward_to_go(token_rewards(task, mask, old, ref, kl_coef=0.1), mask)
    got = normalize_advantages(adv, mask, "group", group_ids=group_ids, eps=1e-5)
    torch.testing.assert_close(got.double(), _group_ref(adv, mask, group_ids, 1e-5), rtol=1e-5, atol=1e-6)


def test_grpo_without_kl_gives_group_normalised_score_on_every_token():
    cfg = AlgoConfig(kl_coef=0.0, adv_norm="group")
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    task = torch.tensor([5.0, -5.0, -5.0, 5.0])
    adv, stats = compute_advantages(cfg, task, mask, group_ids=torch.tensor([0, 0, 0, 1]))
    std = torch.tensor([5.0, -5.0, -5.0]).std()
    expected0 = (5.0 - (-5.0 / 3)) / (float(std) + cfg.adv_eps)
    assert torch.allclose(adv[0], torch.full((6,), expected0))
    assert torch.allclose(adv[1, :3], torch.full((3,), (-5.0 + 5.0 / 3) / (float(std) + cfg.adv_eps)))
    assert (adv[1, 3:] == 0).all()
    assert torch.allclose(adv[3], torch.full((6,), 5.0 / (1 + cfg.adv_eps)))
    assert stats["kl_reward"] == 0.0 and math.isclose(stats["return_mean"], 0.0)


def test_compute_advantages_kl_in_reward_vs_loss():
    task, old, ref, _, mask, lengths = random_batch(seed=8)
    cfg = AlgoConfig(kl_coef=0.2, adv_norm="none")
    adv, stats = compute_advantages(cfg, task, mask, old, ref)
    torch.testing.assert_close(adv, reward_to_go(token_rewards(task, mask, old, ref, 0.2), mask))
    want_kl = float((old - ref)[mask].double().mean())
    assert math.isclose(stats["kl_reward"], want_kl, rel_tol=1e-6)
    first_returns = [float(adv[i, 0]) for i in range(len(task)) if lengths[i] > 0]
    assert math.isclose(stats["return_mean"], sum(first_returns) / len(first_returns), rel_tol=1e-5)
    adv_loss, stats_loss = compute_advantages(AlgoConfig(kl_coef=0.2, kl_in_reward=False, adv_norm="none"), task, mask, old, ref)
    assert stats_loss["kl_reward"] == 0.0
    for i in range(len(task)):
        assert torch.all(adv_loss[i, : int(lengths[i])] == task[i])


def test_compute_advantages_uses_gae_when_discounted():
    task, old, ref, _, mask, _ = random_batch(seed=9)
    cfg = AlgoConfig(kl_coef=0.1, adv_norm="none", gamma=0.9, gae_lambda=0.8)
    adv, _ = compute_advantages(cfg, task, mask, old, ref)
    want, _ = gae(token_rewards(task, mask, old, ref, 0.1), mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, want)


def test_bad_inputs_name_the_argument():
    task, old, ref, _, mask, _ = random_batch(seed=10)
    with pytest.raises(ValueError, match="old_logprobs"):
        A.token_rewards(task, _rows(mask), _lens(mask), _rows(old)[:-1], _rows(ref), kl_coef=0.1)
    with pytest.raises(ValueError, match="lengths"):
        A.token_rewards(task, _rows(mask), _lens(mask) + 1, _rows(old), _rows(ref), kl_coef=0.1)
    with pytest.raises(ValueError, match="task_rewards"):
        token_rewards(task[:-1], mask, old, ref, kl_coef=0.1)
    with pytest.raises(ValueError, match="ref_logprobs"):
        token_rewards(task, mask, old, None, kl_coef=0.1)
    with pytest.raises(ValueError, match="group_ids"):
        normalize_advantages(old, mask, "group")
    with pytest.raises(ValueError, match="group_ids"):
        normalize_advantages(old, mask, "group", group_ids=-torch.ones(len(task), dtype=torch.long))
    with pytest.raises(ValueError, match="adv_norm"):
        normalize_advantages(old, mask, "whiten")


@pytest.mark.parametrize("mode", ["batch", "group", "none"])
@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_padding_garbage_does_not_leak(mode, gamma):
    task, old, ref, _, mask, _ = random_batch(seed=12, holes=True)
    group_ids = torch.arange(len(task)) // 3
    cfg = AlgoConfig(kl_coef=0.1, adv_norm=mode, gamma=gamma)
    clean, clean_stats = compute_advantages(cfg, task, mask, old, ref, group_ids)
    dirty_old, dirty_ref = old.clone(), ref.clone()
    dirty_old[~mask], dirty_ref[~mask] = float("nan"), float("inf")
    dirty, dirty_stats = compute_advantages(cfg, task, mask, dirty_old, dirty_ref, group_ids)
    assert torch.isfinite(dirty).all() and (dirty[~mask] == 0).all()
    torch.testing.assert_close(dirty, clean)
    assert dirty_stats == clean_stats
