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


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{(1,2)} \\quad \\text{and} \\quad \\boxed{(3,4)}$", "(1,2), (3,4)"),
        ("the roots are \\boxed{1}, \\boxed{2}", "1, 2"),
        ("$\\boxed{a = 3}$ and $\\boxed{b = 4}$", "a = 3, b = 4"),
        ("first \\boxed{1}, then we find \\boxed{2}", "2"),
        ("so $\\boxed{5}$ $\\boxed{5}$", "5"),
        ("Final Answer: 5", "5"),
        ("**Final Answer:** $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("work...\n**Answer:** 12", "12"),
        ("work...\nAnswer: x = 3.", "x = 3"),
        ("The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("Final Answer: The final answer is 7. I hope it is correct.", "7"),
        ("The answer is $x = 1$ or $x = 2$.", "x = 1, x = 2"),
        ("The answer is $3$, since $x = 3$ works.", "3"),
        ("The answer is\n$$\n\\frac{1}{2}\n$$\nDone.", "\\frac{1}{2}"),
        ("## Final Answer\n\\[ 12 \\]", "12"),
        ("Final Answer: The volume of $ABCD$ is 120. I hope it is correct.", "120"),
        ("Final Answer: The largest $n$ is $34$.", "34"),
        ("Final Answer: Tom planted the tree 6 years ago.", "6"),
        ("So \\boxed{4} cats and \\boxed{7} dogs.", "4, 7"),
        ("$\\boxed{(2, 1)} \\text{ in case (i) and } \\boxed{(0, 5)}$", "(2, 1), (0, 5)"),
        ("\\boxed{4} is too small, so the answer is \\boxed{7}", "7"),
        ("We tried \\boxed{4}; then \\boxed{7}", "7"),
        ("so \\(u = \\boxed{x + 1}\\) and \\(v = \\boxed{2x}\\)", "u = x + 1, v = 2x"),  # labels kept
        ("so $m = \\boxed{4}$ and $\\boxed{9}$", "4, 9"),  # one label only: the values
        ("\\boxed{4} is too small, so m = \\boxed{7}", "7"),
        ("We are done. Final Answer: the crate holds 24 eggs. I hope it is correct.", "24"),
        ("Final Answer: x + 3", "x + 3"),  # an expression, not a sentence
        ("Final Answer: the crate holds 24 eggs and 3 jars", "the crate holds 24 eggs and 3 jars"),
        ("The answer is #### 42", "42"),  # GSM8K's marker
        ("48/2 = 24 apples.\n#### 24", "24"),
        ("my answer is 0.25 + 3", "0.25 + 3"),
        ("the result is $5$", None),
        ("so we get 5", None),
        ("the answers were 5 and 6", None),
        ("x#### 5", None),
        ("#### Final Answer\n$12$", "12"),  # a markdown heading, not the marker
    ],
)
def test_reward_mode_committed_answers(text, expected):
    assert extract_answer(text, "reward") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the result is $5$", "5"),
        ("so we get 5 apples", "5"),
        ("$$x = \\frac{1}{2}$$ is where it vanishes", "x = \\frac{1}{2}"),
        ("We have $a=1$ and then\n$$\nb = 2\n$$\ndone", "b = 2"),
        ("From \\(y = 3\\) we read \\[ y^2 = 9 \\] as well", "y^2 = 9"),
        ("It costs \\$5 and then $7$ more", "7"),
        ("\\boxed{3} and the last number 4", "3"),
        ("The answer is 6. Then 8.", "6"),
        ("we count 1,234 apples", "1234"),
        ("We set $d = 90/n$ for each divisor; so there are 12 such sequences.", "12"),
        ("Hence $y = 4$ at the end", "y = 4"),
        ("The roots are $2$, $5$ or $9$.", "2, 5, 9"),
        ("From $a = 2$ we get $7$", "7"),
        ("not 10 but in total 3,000.50 euros", "3000.50"),
        ("it weighs 4,25 kg", "4.25"),  # a decimal comma in prose
        ("we find 7, 8 and 9", "9"),
        ("so the chance is 3/8.", "3/8"),
        ("it grew by 40%.", "40%"),
        ("no numbers at all", None),
    ],
)
def test_eval_mode_adds_the_qwen_fallbacks(text, expected):
    assert extract_answer(text, "eval") == expected


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        extract_answer("\\boxed{1}", "lenient")


def test_hostile_delimiters_are_linear():
    t0 = time.monotonic()
    for mode in ("reward", "eval"):
        assert extract_answer("\\[" * 100_000, mode) is None
        assert extract_answer("$" * 200_001 + "x", mode) in (None, "x")
        assert extract_answer("\\boxed{1}, " * 20_000, mode) == "1"
        extract_answer("Answer: " * 20_000 + "\n", mode)
        extract_answer("the answer is $" * 20_000, mode)
        extract_answer("1" * 200_000, mode)
    assert time.monotonic() - t0 < 5.0


THINK_CASES = [
    # (response, expected answer in both modes)
    ("<think>maybe \\boxed{3}</think>\nSo the answer is \\boxed{4}.", "4"),
    ("<think>maybe \\boxed{3}</think>", None),  # the only box is inside the reasoning: nothing committed
    ("<think>maybe \\boxed{3}, then I keep going and run out of tok", None),  # never closed: truncated
    ("the prompt opened the block, \\boxed{3}</think>\n\\boxed{5}", "5"),  # R1-distill: only </think> here
    ("<think>a</think> draft \\boxed{1} </think> \\boxed{2}", "2"),  # after the last </think>
    ("\\boxed{7}", "7"),  # no think block: the whole response
    ("<think>\\boxed{3}</think>\n\nThe answer is 3.", "3"),
    ("<think>\\boxed{3}</think>\n\nThe answer is 4.", "4"),
]


@pytest.mark.parametrize("mode", ["reward", "eval"])
@pytest.mark.parametrize("text, expected", THINK_CASES)
def test_think_part_is_cut_away(text, expected, mode):
    assert extract_answer(text, mode) == expected


def test_eval_fallbacks_look_only_after_the_think_block():
    assert extract_answer("<think>it is 12</think> so we get 13 in the end", "eval") == "13"
    assert extract_answer("<think>it is 12</think>", "eval") is None
    assert extract_answer("<think>it is 12 and then", "eval") is None
    assert extract_answer("it is 12 and then", "eval") == "12"
