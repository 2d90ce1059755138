"""Answer equivalence (the Qwen math-evaluation protocol), without a time limit.

`equal_unguarded(pred, gold)` may spend unbounded time in sympy, so it is
only called inside a reward worker process whose time limit is enforced from
outside (`areal_mega.reward.pool`); use `math_equal` everywhere else.

Steps, first match wins:
1. normalised strings are equal;
2. both are numbers: relative tolerance 1e-4; when either side was written
   as a percentage, also x/100 and x*100 (stricter than Qwen, which always
   accepts those: for a reward, "50" must not match a gold "0.5");
3. matrices (`pmatrix`/`bmatrix`) cell by cell; intervals and tuples element
   by element with the same brackets; unions by part; sets `\\{...\\}` and bare
   comma lists as multisets;
4. equations `a = b` vs `c = d`: a-b equals +-(c-d) symbolically; a side
   written `x = v` is compared by `v`;
5. symbolic: sympy `simplify(a - b) == 0` on the safely parsed expressions.
"""
from __future__ import annotations

import math

import sympy

from areal_mega.reward.normalize import has_percent, normalize
from areal_mega.reward.parse import ParseError, parse_expr_safe

MAX_ANSWER_CHARS = 1000
REL_TOL = 1e-4
_OPEN = {"(": ")", "[": "]", "{": "}"}


def _parse(s: str):
    try:
        return parse_expr_safe(s)
    except (ParseError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


def _as_float(expr) -> float | None:
    if expr is None or not expr.is_number:
        return None
    try:
        value = complex(sympy.N(expr, 20))
    except (TypeError, ValueError, OverflowError):
        return None
    if abs(value.imag) > 1e-12 or math.isnan(value.real):
        return None
    return value.real


def _numbers_equal(a: float, b: float, percent: bool) -> bool:
    candidates = (b, b / 100.0, b * 100.0) if percent else (b,)
    return any(math.isclose(a, c, rel_tol=REL_TOL, abs_tol=1e-12) for c in candidates)


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split `s` at `sep` outside brackets and braces (including `\\{ \\}`)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _enclosed(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when the whole of `s` is one bracketed group: `(..)`, `[..)`, `\\{..\\}`."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "{", s[2:-2], "}"
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and i < len(s) - 1:
            return None
    return s[0], s[1:-1], s[-1]


def _matrix_rows(s: str) -> list[list[str]] | None:
    for env in ("pmatrix", "bmatrix", "matrix", "vmatrix"):
        head, tail = f"\\begin{{{env}}}", f"\\end{{{env}}}"
        if s.startswith(head) and s.endswith(tail):
            body = s[len(head) : -len(tail)]
            return [row.split("&") for row in body.split("\\\\") if row.strip()]
    return None


def _multiset_equal(preds: list[str], golds: list[str]) -> bool:
    if len(preds) != len(golds):
        return False
    left = list(golds)
    for p in preds:
        for j, g in enumerate(left):
            if _equal_normalized(p, g, False):
                del left[j]
                break
        else:
            return False
    return True


def _ordered_equal(preds: list[str], golds: list[str]) -> bool:
    return len(preds) == len(golds) and all(_equal_normalized(p, g, False) for p, g in zip(preds, golds))


def _structure_equal(p: str, g: str) -> bool | None:
    """Equality of structured answers; None when neither side is structured."""
    pm, gm = _matrix_rows(p), _matrix_rows(g)
    if pm is not None or gm is not None:
        if pm is None or gm is None or len(pm) != len(gm):
            return False
        return all(_ordered_equal(pr, gr) for pr, gr in zip(pm, gm))
    pu, gu = split_top_level(p, "\\cup"), split_top_level(g, "\\cup")
    if len(pu) > 1 or len(gu) > 1:
        return _ordered_equal(pu, gu)
    pe, ge = _enclosed(p), _enclosed(g)
    if pe and ge and (len(split_top_level(pe[1])) > 1 or len(split_top_level(ge[1])) > 1):
        if pe[0] == "{" or ge[0] == "{":
            return pe[0] == ge[0] and _multiset_equal(split_top_level(pe[1]), split_top_level(ge[1]))
        if (pe[0], pe[2]) != (ge[0], ge[2]):
            return False
        return _ordered_equal(split_top_level(pe[1]), split_top_level(ge[1]))
    pl, gl = split_top_level(p), split_top_level(g)
    if len(pl) > 1 or len(gl) > 1:
        return _multiset_equal(pl, gl)
    return None


def _symbolic_equal(a, b) -> bool:
    if a is None or b is None:
        return False
    if a == b:
        return True
    try:
        diff = sympy.simplify(a - b)
        if diff == 0:
            return True
        return bool(a.equals(b))
    except (TypeError, ValueError, AttributeError, RecursionError, ZeroDivisionError, NotImplementedError):
        return False


def _proportional(a, b) -> bool:
    """a = c * b for a nonzero constant c (the equations a = 0 and b = 0 are the same)."""
    if _symbolic_equal(a, b) or _symbolic_equal(a, -b):
        return True
    try:
        ratio = sympy.simplify(a / b)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError, NotImplementedError):
        return False
    return bool(ratio.is_number and ratio.is_zero is False and ratio.is_finite)


def _equation_equal(p: str, g: str) -> bool | None:
    ps, gs = split_top_level(p, "="), split_top_level(g, "=")
    if len(ps) == 2 and len(gs) == 2:
        dp = _parse(ps[0]) if ps[0] else None
        dg = _parse(gs[0]) if gs[0] else None
        rp, rg = _parse(ps[1]), _parse(gs[1])
        if None in (dp, dg, rp, rg):
            return p == g
        return _proportional(dp - rp, dg - rg)
    if len(ps) == 2 and len(gs) == 1:
        return _equal_normalized(ps[1], g, False)
    if len(gs) == 2 and len(ps) == 1:
        return _equal_normalized(p, gs[1], False)
    return None


def _equal_normalized(p: str, g: str, percent: bool) -> bool:
    p, g = p.strip(), g.strip()
    if p == g:
        return True
    if not p or not g:
        return False
    pa, ga = _parse(p), _parse(g)
    pv, gv = _as_float(pa), _as_float(ga)
    if pv is not None and gv is not None:
        return _numbers_equal(pv, gv, percent)
    structured = _structure_equal(p, g)
    if structured is not None:
        return structured
    if "=" in p or "=" in g:
        eq = _equation_equal(p, g)
        if eq is not None:
            return eq
    if pa is not None and ga is not None and pa.is_infinite is not True and ga.is_infinite is not True:
        return _symbolic_equal(pa, ga)
    return pa is not None and pa == ga


def equal_unguarded(pred: str | None, gold: str) -> bool:
    """True when answer `pred` is equivalent to `gold` (no time limit: call inside a worker)."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    percent = has_percent(pred) or has_percent(gold)
    if "=" in pred and "=" in gold:
        if _equal_normalized(normalize(pred, strip_lhs=False), normalize(gold, strip_lhs=False), percent):
            return True
    return _equal_normalized(normalize(pred), normalize(gold), percent)
