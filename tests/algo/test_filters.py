"""Dynamic sampling and the over-long policy."""
import pytest
import torch

from areal_mega.algo.filters import apply_overlong, dynamic_sampling_mask


def test_dynamic_sampling_drops_uniform_groups():
    rewards = torch.tensor([5.0, 5.0, 5.0, -5.0, 5.0, -5.0, -5.0, -5.0, 1.0])
    groups = torch.tensor([7, 7, 7, 2, 2, 9, 9, 9, 4])  # ids need not be contiguous; group 4 has one sample
    keep = dynamic_sampling_mask(rewards, groups)
    assert keep.tolist() == [False, False, False, True, True, False, False, False, False]


def test_dynamic_sampling_matches_loop_on_random_groups():
    g = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 20, (200,), generator=g)
    rewards = torch.where(torch.rand(200, generator=g) > 0.8, 5.0, -5.0)
    keep = dynamic_sampling_mask(rewards, groups)
    for i in range(200):
        same = rewards[groups == groups[i]]
        assert bool(keep[i]) == bool(same.max() > same.min())


def test_dynamic_sampling_bad_shape_and_empty():
    with pytest.raises(ValueError, match="group_ids"):
        dynamic_sampling_mask(torch.zeros(4), torch.zeros(3, dtype=torch.long))
    assert dynamic_sampling_mask(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float32])
def test_overlong_policies(mask_dtype):
    rewards = torch.tensor([5.0, 5.0, -5.0])
    mask = torch.ones(3, 4, dtype=mask_dtype)
    cut = torch.tensor([True, False, True])
    r, m = apply_overlong(rewards, mask, cut, "penalize", wrong_reward=-5.0)
    assert r.tolist() == [-5.0, 5.0, -5.0] and torch.equal(m, mask)
    r, m = apply_overlong(rewards, mask, cut, "mask", wrong_reward=-5.0)
    assert r.tolist() == [5.0, 5.0, -5.0]
    assert m.dtype == mask_dtype and m.sum(1).tolist() == [0, 4, 0]
    r, m = apply_overlong(rewards, mask, cut, "none", wrong_reward=-5.0)
    assert torch.equal(r, rewards) and torch.equal(m, mask)
    assert rewards.tolist() == [5.0, 5.0, -5.0] and bool(mask.all()), "inputs must not be modified"


def test_overlong_errors_name_the_field():
    with pytest.raises(ValueError, match="overlong"):
        apply_overlong(torch.zeros(2), torch.ones(2, 3), torch.zeros(2, dtype=torch.bool), "drop", -5.0)
    with pytest.raises(ValueError, match="truncated"):
        apply_overlong(torch.zeros(2), torch.ones(2, 3), torch.zeros(3, dtype=torch.bool), "mask", -5.0)
