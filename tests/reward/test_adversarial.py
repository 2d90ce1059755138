"""Hostile model output: finishes in time, scores wrong, executes nothing."""
import time

import pytest

from areal_mega.reward import RewardConfig, RewardPool
from areal_mega.reward.parse import ParseError, parse_expr_safe

# sympy takes minutes expanding this to solve the inequality (> 20 s measured on the dev machine).
SLOW_PRED = "(x+1)^{100000} > 0"
SLOW_GOLD = "x > 0"


@pytest.fixture(scope="module")
def pool():
    with RewardPool(RewardConfig(num_workers=2, timeout_s=2.0, max_response_chars=200_000)) as p:
        yield p


def test_hung_check_is_killed_and_worker_replaced(pool):
    t0 = time.monotonic()
    got = pool.check([SLOW_PRED, "1", "2"], [SLOW_GOLD, "1", "3"], timeout=1.0)
    elapsed = time.monotonic() - t0
    assert got == [False, True, False]
    assert elapsed < 30.0  # 1 s time-out + a replacement worker starting on a loaded machine
    assert pool.stats["timeouts"] >= 1
    assert pool.check(["\\frac{1}{2}"], ["0.5"]) == [True]  # the replacement worker answers


def test_hung_check_inside_a_chunk_only_fails_itself():
    """Checks go to a worker in chunks; one that hangs is killed and the rest of its chunk is re-run."""
    preds = [str(i) for i in range(12)] + [SLOW_PRED] + [str(i) for i in range(12)]
    golds = [str(i) for i in range(12)] + [SLOW_GOLD] + ["0"] * 12
    with RewardPool(RewardConfig(num_workers=1, timeout_s=2.0)) as one:
        got = one.check(preds, golds)
        assert one.stats["timeouts"] == 1 and one.stats["checks"] == len(preds)
    assert got == [True] * 12 + [False] + [True] + [False] * 11


def test_hung_check_in_a_large_batch_loses_no_other_verdict():
    """A chunk's answers come back in one message: when a worker hangs mid-chunk it is killed, the hung
    check alone is wrong and the chunk's other checks (finished or not) are re-run on another worker."""
    n = 400
    preds = [str(i) for i in range(n)]
    golds = [str(i) if i % 3 else str(i + 1) for i in range(n)]
    preds[n // 2], golds[n // 2] = SLOW_PRED, SLOW_GOLD
    with RewardPool(RewardConfig(num_workers=2, timeout_s=2.0)) as two:
        got = two.check(preds, golds)
        assert two.stats["timeouts"] == 1 and two.stats["crashes"] == 0 and two.stats["checks"] == n
    assert got == [i % 3 != 0 and i != n // 2 for i in range(n)]


def test_identical_checks_run_once_and_answer_in_order():
    """A batch's identical (answer, gold) pairs run once (two copies of a hanging check cost one
    time-out) and every copy gets its verdict in the original order."""
    preds = ["1", SLOW_PRED, "2", "1", SLOW_PRED, "\\frac{1}{2}", "2", "0.5", "1"]
    golds = ["1", SLOW_GOLD, "3", "1", SLOW_GOLD, "0.5", "2", "0.5", "2"]
    with RewardPool(RewardConfig(num_workers=1, timeout_s=2.0)) as one:
        got = one.check(preds, golds)
        assert one.stats["timeouts"] == 1 and one.stats["checks"] == len(preds)
        assert one.correct(["so the answer is $\\boxed{4}$"] * 3 + ["\\boxed{5}"], ["4", "5", "4", "5"]) \
            == [True, False, True, True]
    assert got == [True, False, False, True, False, True, True, True, False]


def test_crashed_worker_is_replaced(pool):
    pool.check(["1"], ["1"])
    victim = pool._workers[0].proc
    victim.kill()
    victim.wait()
    assert pool.check(["1", "2", "3"], ["1", "2", "4"]) == [True, True, False]


def test_hostile_responses_score_wrong_quickly(pool, tmp_path):
    marker = tmp_path / "pwned"
    hostile = [
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
        "\\boxed{" + "{" * 10_000,
        "a" * 1_000_000 + "\\boxed{1}",
        "\\boxed{10^{10^{10^{10}}}}",
        "\\boxed{2^{2^{2^{2^{2^{2}}}}}}",
        "\\boxed{9999999!}",
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
        f"The answer is __import__('os').system('touch {marker}')",
        f"\\boxed{{open('{marker}', 'w').write('x')}}",
        f"\\boxed{{exec(\"open('{marker}','w')\")}}",
        "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
        "\\boxed{" + "-" * 5000 + "1}",
    ]
    t0 = time.monotonic()
    rewards = pool.score(hostile, ["1"] * len(hostile))
    assert time.monotonic() - t0 < 30.0
    assert rewards == [-5.0] * len(hostile)
    assert not marker.exists()
    assert pool.stats["too_long"] >= 1


def test_huge_answer_strings_are_bounded(pool):
    assert pool.check(["1" * 1_000_000, "1" * 1_000_000], ["1" * 1_000_000, "1"]) == [False, False]


@pytest.mark.parametrize(
    "text",
    ["10^{10^{10^{10}}}", "2^{10000}", "(10^{999})^{999}", "9999!", "__import__('os')", "open('f')", "a.b", "x;y", "1e99999",
     # sums whose terms or value exceed the size guards (sympy's own summation took 7.6 s on the first)
     "\\sum_{k=1}^{1000} k^{1000}", "\\prod_{k=1}^{1000} k^{1000}", "\\sum_{k=1}^{10^{9}} k", "\\sum_{k=1}^{3000} 2^{k}",
     "\\sum_{k=10^{9}}^{10^{9}+1} k", "\\sum_{k=1}^{n} \\sin(k)", "\\sum_{k=1}^{n} k^{1000}", "\\prod_{k=1}^{n} k^{k}"],
)
def test_parser_refuses(text):
    with pytest.raises(ParseError):
        parse_expr_safe(text)


def test_no_string_is_ever_evaluated(monkeypatch):
    """Every case of the equivalence suite and the answer forms runs with eval/exec of strings and sympy's string parser trapped on any input text."""
    import builtins

    import sympy.parsing.sympy_parser as sympy_parser
    from answer_forms import FORM_CASES
    from equivalence_cases import ALL_CASES

    from areal_mega.reward.equal import clear_caches, equal_unguarded

    equal_unguarded("\\sin(x)+1", "1+\\sin(x)")  # finish sympy's lazy imports (importlib execs code objects)
    clear_caches()  # every case below is checked afresh, not answered from a memo filled by an earlier test
    real_eval, real_exec = builtins.eval, builtins.exec

    # sympy compiles code strings of its own (polys monomials); only our inputs must never reach eval/exec.
    hostile = ["__import__('os').system('true')", "open('f','w')", "zzqq_sentinel+1"]
    # Inputs that cannot occur by chance in the numeric strings sympy builds for itself
    # (`Expr.equals` nsimplifies random rationals like '(2**(137/627)*...)' and parses them).
    def distinctive(t: str) -> bool:
        return len(t) >= 3 and (any(c in t for c in "\\{}$_'\"") or any(c.isalpha() for c in t))

    cases = ALL_CASES + FORM_CASES
    inputs = [t for p, g, _ in cases for t in (p, g) if t and distinctive(t)] + hostile

    def trap(real):
        def guarded(source, *args, **kwargs):
            if isinstance(source, str) and any(t in source for t in inputs):
                raise AssertionError(f"input evaluated: {source!r}")
            return real(source, *args, **kwargs)

        return guarded

    real_parse_expr = sympy_parser.parse_expr

    def no_parse_expr(source, *args, **kwargs):  # sympy parses constant strings of its own on lazy imports
        if any(t in source for t in inputs):
            raise AssertionError(f"sympy parse_expr on input: {source!r}")
        return real_parse_expr(source, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", trap(real_eval))
    monkeypatch.setattr(builtins, "exec", trap(real_exec))
    monkeypatch.setattr(sympy_parser, "parse_expr", no_parse_expr)
    for pred, gold, expected in cases:
        assert equal_unguarded(pred, gold) is expected, (pred, gold)
    for text in hostile:
        assert equal_unguarded(text, "1") is False
    assert str(parse_expr_safe("\\frac{x+1}{2}")) == "x/2 + 1/2"


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="reward.num_workers"):
        RewardConfig(num_workers=0)
    with pytest.raises(ValueError, match="reward.timeout_s"):
        RewardConfig(timeout_s=0)
    with pytest.raises(ValueError, match="reward.checker"):
        RewardConfig(checker="sympy")
    with pytest.raises(ValueError, match="reward.mode"):
        RewardConfig(mode="lenient")
