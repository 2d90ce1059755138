"""The double-precision tree walk that proves answers different before sympy's evalf is asked."""
import math

import pytest
import sympy

from areal_mega.reward.numeric import value_at
from areal_mega.reward.parse import parse_expr_safe

X, Y = sympy.symbols("x y")
AT = {X: 0.5377, Y: -1.3077}


@pytest.mark.parametrize("text", [
    "x^2 + 3x - \\frac{1}{7}", "\\frac{x+1}{y-2}", "\\sqrt{x} + \\sqrt[3]{2}", "2^{x} + x^{-3}", "\\sin(x)\\cot(y) + \\exp(x)",
    "\\ln(x) + \\arctan(y) + \\arcsin(x)", "\\pi x - \\cos^{2}(y)", "(1+2\\pi)x", "\\tan(x) + \\sec(y) + \\csc(x)", "|x| + y",
])
def test_matches_evalf(text):
    expr = parse_expr_safe(text)
    want = complex(expr.evalf(15, subs=AT))
    got = value_at(expr, AT)
    if got is None:  # the walk may refuse (|x| is sympy's Abs, not walked); it must never be wrong
        assert text == "|x| + y"
        return
    assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (text, got, want)


@pytest.mark.parametrize("text", [
    "\\sqrt{y}",  # root of a negative real: branch in doubt
    "\\ln(y)",
    "\\arcsin(y)",  # outside (-1, 1)
    "\\frac{1}{x - x^{1}} + 1",  # x - x folds to 0: 1/0 is sympy's zoo, a node the walk refuses
    "10^{400} x",  # overflows a double
    "(x + 10^{9}) - 10^{9}",  # sympy folds this to x
    "\\lfloor x \\rfloor",  # unknown to the parser, refused before
])
def test_unsure_is_none_never_wrong(text):
    try:
        expr = parse_expr_safe(text)
    except ValueError:
        return
    got = value_at(expr, AT)
    if got is not None:
        want = complex(expr.evalf(15, subs=AT))
        assert math.isfinite(want.real) and abs(got - want) <= 1e-9 * max(1.0, abs(want)), (text, got, want)
    if text in ("\\sqrt{y}", "\\ln(y)", "\\arcsin(y)", "10^{400} x"):
        assert got is None


def test_cancellation_is_unsure():
    big = sympy.Integer(10) ** 9
    expr = sympy.Add(sympy.Mul(big, X, evaluate=False), -sympy.Mul(big, X - sympy.Rational(1, 10**12), evaluate=False),
                     evaluate=False)  # 1e-3 after cancelling values near 5e8
    assert value_at(expr, AT) is None
    assert value_at(X - 1, {}) is None  # a symbol without a value


def test_wrong_symbolic_answers_are_decided_without_evalf(monkeypatch):
    import areal_mega.reward.equal as equal

    def no_probe(*args, **kwargs):
        raise AssertionError("evalf probe called")

    monkeypatch.setattr(equal, "_probe", no_probe)
    assert equal.equal_unguarded("x^2 + 2x", "x^2 + 3x") is False
    assert equal.equal_unguarded("y = 3x + 3", "y = 2x + 3") is False
    assert equal.equal_unguarded("-\\cot x", "\\cot x") is False
    with pytest.raises(AssertionError, match="evalf probe"):  # an equal answer is still proved by evalf
        equal.equal_unguarded("x^2 + 2x", "x(x+2)")


def test_wrong_numbers_are_decided_without_sympy_n(monkeypatch):
    import areal_mega.reward.equal as equal
    import areal_mega.reward.parse as parse

    def no_n(*args, **kwargs):
        raise AssertionError("sympy.N called")

    monkeypatch.setattr(parse.sympy, "N", no_n)
    assert equal.equal_unguarded("47\\sqrt{131}", "46\\sqrt{131}") is False
    assert equal.equal_unguarded("289\\pi", "\\frac{577}{2}") is False
    assert equal.equal_unguarded("3\\sqrt{7}\\%", "0.0812") is False  # 3 sqrt 7 = 7.937...: 0.0812 is 2% off 7.937/100
    with pytest.raises(AssertionError, match="sympy.N"):  # close values still go through sympy's N
        equal.equal_unguarded("\\sqrt{8}\\pi", "8.8858")
