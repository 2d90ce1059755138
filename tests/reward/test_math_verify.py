"""math-verify as the second checker, inside our worker pool (skipped when math-verify is not installed)."""
import time

import pytest

from areal_mega.reward import RewardConfig, RewardPool
from areal_mega.reward.mathverify import available

pytestmark = pytest.mark.skipif(not available(), reason="math-verify not installed (pip install -e .[math-verify])")

# math-verify with its own alarm-based time-outs off (the pool's apply) does not finish this.
SLOW_PRED = "\\sin(x)^{9}\\cos(y)^{9}+(x+y+z)^{30}"
SLOW_GOLD = "(x+y+z+1)^{30}"


def test_math_verify_checker_answers():
    with RewardPool(RewardConfig(num_workers=1, checker="math_verify", timeout_s=30.0)) as pool:
        assert pool.check(["\\frac{1}{2}", "3", "{1,3}"], ["0.5", "4", "(1,3)"]) == [True, False, True]
        assert pool.correct(["so \\boxed{\\frac{3}{4}}", "so \\boxed{5}"], ["0.75", "0.75"]) == [True, False]


def test_both_is_correct_when_either_is_and_counts_disagreements():
    # "x > 2" vs "(2, oo)": ours yes, math-verify no; "{1,3}" vs the tuple "(1,3)": math-verify yes, ours no.
    with RewardPool(RewardConfig(num_workers=1, checker="both", timeout_s=30.0)) as pool:
        got = pool.check(["x > 2", "{1,3}", "7", "8"], ["(2,\\infty)", "(1,3)", "7", "9"])
        assert got == [True, True, True, False]
        assert pool.stats["disagreements"] == 2 and pool.disagreement_rate() == 0.5


def test_math_verify_hang_is_killed_by_the_pool():
    with RewardPool(RewardConfig(num_workers=1, checker="math_verify", timeout_s=30.0)) as pool:
        t0 = time.monotonic()
        assert pool.check([SLOW_PRED, "2"], [SLOW_GOLD, "2"], timeout=2.0) == [False, True]
        assert time.monotonic() - t0 < 60.0
        assert pool.stats["timeouts"] == 1


def test_math_verify_follows_the_think_policy():
    with RewardPool(RewardConfig(num_workers=1, checker="math_verify", timeout_s=30.0)) as pool:
        got = pool.correct(["<think>\\boxed{3}</think> so \\boxed{4}", "<think>\\boxed{3}</think>", "<think>\\boxed{3}"],
                           ["4", "3", "3"])
        assert got == [True, False, False]
