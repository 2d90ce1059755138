"""Every answer form of issue 12 through the worker pool: the equal cases score equal, the others do not."""
import pytest
from answer_forms import ALL_FORMS  # noqa: E402 (tests/reward is on sys.path under pytest)

from areal_mega.reward import RewardConfig, RewardPool


@pytest.fixture(scope="module")
def pool():
    with RewardPool(RewardConfig(num_workers=2, timeout_s=20.0)) as p:
        yield p


@pytest.mark.parametrize("form", sorted(ALL_FORMS))
def test_form(pool, form):
    cases = ALL_FORMS[form]
    assert any(e for *_, e in cases) and not all(e for *_, e in cases), f"{form}: needs equal and not-equal cases"
    got = pool.check([p for p, _, _ in cases], [g for _, g, _ in cases])
    wrong = [(p, g, e) for (p, g, e), r in zip(cases, got) if r != e]
    assert wrong == []
    assert pool.stats["timeouts"] == 0


def test_whole_responses_in_reward_mode(pool):
    responses = [
        "So $\\boxed{(1,2)} \\quad \\text{and} \\quad \\boxed{(3,4)}$.",
        "The solutions are \\boxed{-1}, \\boxed{1}.",
        "Thus $\\boxed{a = 3}$ and $\\boxed{b = 4}$.",
        "Thus $\\boxed{a = 4}$ and $\\boxed{b = 3}$.",
        "The final answer is $[0, 3]$. I hope it is correct.",
        "**Final Answer:** $0 \\le t \\le 3$",
        "We get $t$ between 0 and 3, i.e. $[0,3]$",  # no committed answer: nothing in reward mode
        "\\boxed{12, 345}",
    ]
    golds = ["(3,4), (1,2)", "\\{1, -1\\}", "a=3, b=4", "a=3, b=4", "0 \\le t \\le 3", "[0,3]", "[0,3]", "12345"]
    assert pool.correct(responses, golds) == [True, True, True, False, True, True, False, False]


def test_eval_mode_uses_the_fallbacks():
    with RewardPool(RewardConfig(num_workers=1, mode="eval")) as pool:
        assert pool.correct(["We get $t$ between 0 and 3, i.e. $[0,3]$", "so it is 17", "nothing"],
                            ["[0,3]", "17", "17"]) == [True, True, False]


def test_think_policy_through_the_pool(pool):
    """A box inside <think> is not the answer; a think block never closed (truncated) scores wrong."""
    responses = ["<think>is it \\boxed{3}?</think> No: \\boxed{4}.", "<think>is it \\boxed{3}?</think> No: \\boxed{4}.",
                 "<think>so \\boxed{3}</think>", "<think>so \\boxed{3} and", "so \\boxed{3}"]
    assert pool.score(responses, ["4", "3", "3", "3", "3"]) == [5.0, -5.0, -5.0, -5.0, 5.0]
