"""Train-rollout log-prob mismatch against direct computations."""
import math

import pytest
import torch
from algo_ref import random_batch

from areal_mega.algo.mismatch import logprob_mismatch


def test_mismatch_over_masked_tokens():
    _, old, _, logprobs, mask, _ = random_batch(seed=11, holes=True)
    logprobs = logprobs.clone()
    logprobs[~mask] = 100.0  # padding garbage must not leak into the figures
    got = logprob_mismatch(logprobs, old, mask)
    d = [float(logprobs[i, t]) - float(old[i, t]) for i, t in zip(*torch.nonzero(mask, as_tuple=True))]
    assert math.isclose(got["logprob_diff_abs_mean"], sum(abs(x) for x in d) / len(d), rel_tol=1e-6)
    assert math.isclose(got["logprob_diff_abs_max"], max(abs(x) for x in d), rel_tol=1e-6)
    assert math.isclose(got["rollout_ratio_mean"], sum(math.exp(x) for x in d) / len(d), rel_tol=1e-6)


def test_mismatch_identical_and_empty():
    _, old, _, _, mask, _ = random_batch(seed=12)
    same = logprob_mismatch(old, old.clone(), mask)
    assert same == {"logprob_diff_abs_mean": 0.0, "logprob_diff_abs_max": 0.0, "rollout_ratio_mean": 1.0}
    empty = logprob_mismatch(old, old + 1, torch.zeros_like(mask))
    assert empty["logprob_diff_abs_max"] == 0.0
    with pytest.raises(ValueError, match="rollout_logprobs"):
        logprob_mismatch(old, old[:, 1:], mask)

