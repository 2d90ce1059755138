"""extract_answer: boxed forms, fall-backs, and hostile inputs that must stay linear."""
import time

import pytest

from areal_mega.reward import extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the result is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{ 7 }", "7"),
        ("$\\boxed 5$", "5"),
        ("\\boxed 12 is it", "12"),
        ("\\fbox{3}", "3"),
        ("\\boxed{\\boxed{9}}", "9"),
        ("Thus the answer is 17.", "17"),
        ("The final answer is: $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("THE ANSWER IS 8\nmore text", "8"),
        ("no answer here 3 4 5", None),
        ("\\boxed{}", None),
        ("", None),
        (None, None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_boxed_wins_over_answer_is():
    assert extract_answer("the answer is 3. Actually \\boxed{4}") == "4"


def test_hostile_inputs_are_linear():
    nested = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    unbalanced = "\\boxed{" + "{" * 10_000
    big = "x" * 1_000_000 + "\\boxed{5}"
    t0 = time.monotonic()
    assert extract_answer(nested) == "{" * 10_000 + "1" + "}" * 10_000
    assert extract_answer(unbalanced) is None
    assert extract_answer(big) == "5"
    assert extract_answer("the answer is " * 50_000) is None
    assert time.monotonic() - t0 < 2.0
