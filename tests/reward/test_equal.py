"""Answer equivalence through the worker pool: the project's own cases."""
import pytest
from equivalence_cases import ALL_CASES  # noqa: E402 (tests/reward is on sys.path under pytest)

from areal_mega.reward import RewardConfig, RewardPool, math_equal, math_reward


@pytest.fixture(scope="module")
def pool():
    with RewardPool(RewardConfig(num_workers=2, timeout_s=10.0)) as p:
        yield p


def test_case_count():
    assert len(ALL_CASES) >= 150
    assert sum(1 for *_, expected in ALL_CASES if not expected) >= 50


def test_all_cases_in_one_batch(pool):
    preds = [p for p, _, _ in ALL_CASES]
    golds = [g for _, g, _ in ALL_CASES]
    got = pool.check(preds, golds)
    wrong = [(p, g, e) for (p, g, e), r in zip(ALL_CASES, got) if r != e]
    assert wrong == []
    assert pool.stats["timeouts"] == 0


@pytest.mark.parametrize("pred, gold, expected", ALL_CASES[::7])
def test_math_equal_default_pool(pred, gold, expected):
    assert math_equal(pred, gold) is expected


def test_math_reward_values():
    assert math_reward("so \\boxed{\\frac{3}{4}}", "0.75") == 5.0
    assert math_reward("so \\boxed{\\frac{3}{5}}", "0.75") == -5.0
    assert math_reward("no box", "1", correct=1.0, wrong=0.0) == 0.0
    assert math_reward("\\boxed{2}", "2", correct=1.0, wrong=0.0) == 1.0


def test_score_and_lengths(pool):
    responses = ["\\boxed{68}", "The answer is 68.", "\\boxed{67}", "nothing"]
    assert pool.score(responses, ["68"] * 4) == [5.0, 5.0, -5.0, -5.0]
    with pytest.raises(ValueError, match="differ in length"):
        pool.score(responses, ["68"])
