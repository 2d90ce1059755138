"""Answer equivalence (the Qwen math-evaluation protocol), without a time limit.

`equal_unguarded(pred, gold)` may spend unbounded time in sympy, so it is
only called inside a reward worker process whose time limit is enforced from
outside (`areal_mega.reward.pool`); use `math_equal` everywhere else.

Steps, first match wins:
1. normalised strings are equal;
2. both are numbers: integers exactly; others exactly when neither was
   written with a decimal point, else to the precision written (relative
   1e-4 and half a unit in the last place: `0.6667` is 2/3, `0.67` is not);
   when either side was written as a percentage, also x/100 and x*100
   (stricter than Qwen, which always accepts those: for a reward, "50" must
   not match a gold "0.5");
3. inequalities, `x \\in S`, set-builder notation and unions of intervals
   as sets of reals (`relations.py`: `0 \\le t \\le 3` is `[0, 3]`);
4. matrices (`pmatrix`/`bmatrix`/`array`, in brackets or not) cell by cell, a sum
   or product of written matrices by its value (`matrices.py`);
   intervals and tuples element by element with the same brackets; sets
   `\\{...\\}` and bare lists (`,`, `;`, `or`) as multisets, a set equal to
   the bare list of its elements;
5. equations `a = b` vs `c = d`: a-b is a nonzero constant times c-d; a side
   `x = v` is compared by `v` only when `x` names a quantity (`x`, `(p,q)`,
   `AB`, `f(x)`), so `a + 3z = 0` is not the value 0, or when `x` is a computation
   without unknowns (`\\binom{5}{2} = 10` is 10); an assignment list on one
   side only is the tuple of its values in the order written (`p=5, q=2` is `(5, 2)`);
6. symbolic: with free symbols, both sides evaluated (sympy evalf) at four
   fixed generic points, a mismatch at any point being proof of difference;
   otherwise, or where some point is undefined, sympy `simplify(a - b) == 0`.

Before that, an equation chain is cut to its last side (`y = 2+3 = 5` is
`y = 5`), `a \\pm b` becomes the list `a+b, a-b`, and in `exact \\approx 0.33`
only the exact part counts (`x \\approx 2.5` is `2.5`). An answer that is
only part of the gold, or assigns the values to other variables, stays wrong.
"""
from __future__ import annotations

import functools
import math
import re

import sympy

from areal_mega.reward.extract import extract_answer
from areal_mega.reward.matrices import matrix_rows
from areal_mega.reward.normalize import has_percent, normalize
from areal_mega.reward.numeric import value_at
from areal_mega.reward.parse import as_float, parse_or_none, split_top_level, symbol_name
from areal_mega.reward.relations import interval_union, relation_equal, sets_equal

MAX_ANSWER_CHARS = 1000
REL_TOL = 1e-4
_VAR = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?$")
# Generic evaluation points (values per free symbol, cycled): mixed signs, no integers or simple fractions.
_POINTS = ((0.5377, -1.3077, 2.7694), (-2.2588, 0.8622, 0.3188), (1.8339, -0.4336, 3.5784), (0.3426, 1.4172, -1.9630))
_INTEGER = re.compile(r"^-?\d{1,100}$")
_PLAIN_DECIMAL = re.compile(r"^-?\d*\.(\d+)$")
_APPROX = re.compile(r"\\approx|\u2248")
_ENV_OR_COMMAND = re.compile(r"\\(?:begin|end)\s*\{[a-zA-Z*]*\}|\\[a-zA-Z]+")
_DECIMAL_COMMA = re.compile(r"^(?!-?[1-9]\d{0,2},\d{3}$)(-?\d+),(\d+)$")  # not a thousands group


def _numbers_equal(a: float, b: float, percent: bool, p: str = "", g: str = "") -> bool:
    """a == b within the precision written: exact (1e-9) when neither string `p` (pred), `g` (gold) has a
    decimal point; else relative REL_TOL, and no more than half a unit in the last place of the prediction
    when it is a plain decimal, else of the gold (`0.6667` matches 2/3, `0.67` does not; `.35626` is not
    `.35625`; `0.0666668` is `0.066666793` rounded, `0.50001` is not `0.5`)."""
    candidates = (b, b / 100.0, b * 100.0) if percent else (b,)
    tol = math.inf
    for s in (g, p):
        m = _PLAIN_DECIMAL.match(s)
        if m:
            tol = 0.5 * 10.0 ** -len(m.group(1)) + 1e-12
    rel = REL_TOL if ("." in p or "." in g or percent) else 1e-9
    return any(math.isclose(a, c, rel_tol=rel, abs_tol=1e-12) and abs(a - c) <= tol for c in candidates)


def _decimal_comma(s: str) -> str:
    """`1,22` read with a decimal comma (`1.22`); `s` itself when it is not one number, one comma, no space.

    Used on the raw strings (normalising drops the space that makes `1, 2` a list) and only
    when the other side has no comma, so `1,2` still equals the list `1, 2`."""
    m = _DECIMAL_COMMA.match(s) if "," in s else None
    return f"{m.group(1)}.{m.group(2)}" if m else s


def _decimal_comma_equal(p: str, g: str, percent: bool) -> bool | None:
    """Equality with one raw side read with a decimal comma and the other a single number; else None."""
    dp, dg = _decimal_comma(p.strip("$ ")), _decimal_comma(g.strip("$ "))
    if (dp, dg) == (p.strip("$ "), g.strip("$ ")):
        return None
    np_, ng = normalize(dp), normalize(dg)
    if as_float(parse_or_none(np_)) is None or as_float(parse_or_none(ng)) is None:
        return None  # "2,1" against "x=1 or x=2" is a list
    return _equal_normalized(np_, ng, percent)


def _enclosed(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when the whole of `s` is one bracketed group: `(..)`, `[..)`, `\\{..\\}`."""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        return ("{", inner, "}") if _balanced(inner) else None
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and i < len(s) - 1:
            return None
    return s[0], s[1:-1], s[-1]


def _balanced(s: str) -> bool:
    """True when no bracket closes below depth 0 in `s` (so `\\{1\\},\\{2\\}` is not one set)."""
    depth = 0
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _tuple_items(inner: str) -> list[str]:
    """Entries of a tuple or interval body: `1, 2` or `1; 2`."""
    parts = split_top_level(inner)
    return parts if len(parts) > 1 else split_top_level(inner, ";")


def _items(s: str) -> list[str]:
    """Elements of a bare list or set body: split at top-level `,`, `;` and `\\lor`."""
    items = [x for part in split_top_level(s) for y in split_top_level(part, ";") for x in split_top_level(y, "\\lor")]
    return [e for x in items for e in split_top_level(_expand_pm(x.strip()))] if len(items) > 1 else items


def _multiset_equal(preds: list[str], golds: list[str]) -> bool:
    """Same elements, in any order; an element written twice counts once when both sides keep two or
    more distinct ones (a solution set: `(1,2), (3,4), (1,2)` is `(3,4), (1,2)`, but `2, 2` is not `2`)."""
    if len(preds) != len(golds):
        preds, golds = list(dict.fromkeys(x.strip() for x in preds)), list(dict.fromkeys(x.strip() for x in golds))
        if len(preds) != len(golds) or len(preds) < 2:
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
    pm, gm = matrix_rows(p), matrix_rows(g)
    if pm is not None or gm is not None:
        if pm is None or gm is None or len(pm) != len(gm):
            return False
        return all(_ordered_equal(pr, gr) for pr, gr in zip(pm, gm))
    pu, gu = split_top_level(p, "\\cup"), split_top_level(g, "\\cup")
    if len(pu) > 1 or len(gu) > 1:
        ps, gs = interval_union(p), interval_union(g)
        if ps is not None and gs is not None:
            return sets_equal(ps, gs)
        return _multiset_equal(pu, gu)
    pe, ge = _enclosed(p), _enclosed(g)
    p_set, g_set = pe is not None and pe[0] == "{", ge is not None and ge[0] == "{"
    if p_set or g_set:  # a set equals another set, or the bare list of its elements
        if (p_set and ge is not None and not g_set) or (g_set and pe is not None and not p_set):
            return False
        return _multiset_equal(_items(pe[1] if p_set else p), _items(ge[1] if g_set else g))
    if pe and ge and (len(_tuple_items(pe[1])) > 1 or len(_tuple_items(ge[1])) > 1):
        if (pe[0], pe[2]) != (ge[0], ge[2]):
            return False
        return _ordered_equal(_tuple_items(pe[1]), _tuple_items(ge[1]))
    pl, gl = _items(p), _items(g)
    if len(pl) > 1 or len(gl) > 1:
        return _multiset_equal(pl, gl)
    return None


def _probe(a, b, stop_at_mismatch: bool = False) -> list[tuple[complex, complex]] | None:
    """(a, b) evaluated at fixed generic points of their free symbols (sympy evalf, no code generation);
    None when they have none. Points where either side is undefined are left out; with
    `stop_at_mismatch`, evaluation ends at the first point where they differ."""
    free = sorted(_free_symbols(a) | _free_symbols(b), key=symbol_name)
    if not free or _unevaluated(a) or _unevaluated(b):
        return None
    values = []
    for point in _POINTS:
        if stop_at_mismatch and values and not _close(*values[-1]):
            break
        subs = _placed(free, point)
        va = _value_at(a, subs)
        vb = _value_at(b, subs) if va is not None else None
        if vb is not None and all(math.isfinite(v.real) and math.isfinite(v.imag) for v in (va, vb)):
            values.append((va, vb))
    return values


def _placed(free: list, point: tuple) -> tuple:
    """((symbol, value), ...): symbol j of `free` at point[j % len(point)], shifted by 0.1 per wrap-around."""
    return tuple((x, point[j % len(point)] + 0.1 * (j // len(point))) for j, x in enumerate(free))


@functools.lru_cache(maxsize=8192)  # the gold side is evaluated at the same points for every sample of a problem
def _value_at(expr, subs: tuple) -> complex | None:
    """expr (sympy) evaluated at `subs` ((symbol, value) pairs) to 15 digits; None where undefined."""
    try:
        return complex(expr.evalf(15, subs=dict(subs)))
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError, RecursionError):
        return None


# Looked up structurally: asking sympy's `is_infinite` runs its assumption deduction (~5 ms a polynomial).
_INFINITIES = (sympy.oo, -sympy.oo, sympy.zoo)


@functools.lru_cache(maxsize=8192)  # a tree walk; the gold's answer is asked for every sample of a problem
def _unevaluated(expr) -> bool:
    """True for an expression holding a sum or product left unevaluated (never evaluated numerically)."""
    return expr.has(sympy.Sum, sympy.Product)


@functools.lru_cache(maxsize=8192)  # sympy walks the whole tree on every access to expr.free_symbols
def _free_symbols(expr) -> frozenset:
    """expr.free_symbols, memoised (the gold's are asked for every sample of a problem, several times)."""
    return frozenset(expr.free_symbols)


@functools.lru_cache(maxsize=8192)  # the gold side is walked at the same points for every sample of a problem
def _double_value(expr, placed: tuple) -> complex | None:
    """value_at(expr, dict(placed)): expr in double precision at `placed` ((symbol, value) pairs); None where unsure."""
    return value_at(expr, dict(placed))


@functools.lru_cache(maxsize=8192)  # a tree walk, as _unevaluated
def _has_i(expr) -> bool:
    """True when expr holds the imaginary unit."""
    return expr.has(sympy.I)


_TREE_MEMOS = (_unevaluated, _free_symbols, _double_value, _has_i)  # cleared by clear_caches, even while a test swaps them out


def _close(x: complex, y: complex) -> bool:
    return abs(x - y) <= 1e-8 * max(1.0, abs(x), abs(y))


def _numbers_differ_in_double_precision(a, b, percent: bool) -> bool:
    """True when a and b (sympy) are real numbers (no symbols, no i) whose double-precision values differ
    by ten times `_numbers_equal`'s widest tolerance (REL_TOL; also x/100 and x*100 when `percent`), as
    `as_float` + `_numbers_equal` would find with sympy's N. False when not, or unsure."""
    if a is None or b is None:
        return False
    pair = _rationals_as_floats(a, b)
    if pair is not None:
        x, y = pair
    else:
        if _free_symbols(a) or _free_symbols(b) or _has_i(a) or _has_i(b):
            return False
        va, vb = _double_value(a, ()), _double_value(b, ())
        if va is None or vb is None or va.imag or vb.imag:
            return False
        x, y = va.real, vb.real
    candidates = (y, y / 100.0, y * 100.0) if percent else (y,)
    return all(abs(x - c) > 10 * REL_TOL * max(abs(x), abs(c)) + 1e-9 for c in candidates)


def _rationals_as_floats(a, b) -> tuple[float, float] | None:
    """(a, b) in double precision when both are sympy Rationals (what `value_at` gives, without its walk);
    None otherwise or when one overflows a double (there `value_at` is None too)."""
    if not (a.is_Rational and b.is_Rational):
        return None
    try:
        return a.p / a.q, b.p / b.q
    except OverflowError:
        return None


def _far(x: complex, y: complex) -> bool:
    """x and y differ by far more than double rounding (1e-6 relative; `_close` tests 1e-8)."""
    return abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y))


def _double_values(a, b, points) -> list[tuple[complex, complex]] | None:
    """(a, b) in double precision (`numeric.py`) at `points` of their free symbols, as `_probe` places them;
    None when they have none or the walk is unsure at any point."""
    free = sorted(_free_symbols(a) | _free_symbols(b), key=symbol_name)
    if not free:
        return None
    values = []
    for point in points:
        at = _placed(free, point)
        va, vb = _double_value(a, at), _double_value(b, at)
        if va is None or vb is None:
            return None
        values.append((va, vb))
    return values


def _differ_in_double_precision(a, b) -> bool:
    """True when a and b at the probe's first point differ by far more than rounding: what `_probe`
    finds there with evalf, in microseconds instead of milliseconds. False when not, or unsure."""
    values = _double_values(a, b, _POINTS[:1])
    return values is not None and _far(*values[0])


def _not_proportional_in_double_precision(a, b) -> bool:
    """True when a / b at the probe's points clearly differs from point to point (b far from 0 at all of
    them): what `_proportional` finds there with evalf. False when not, or unsure."""
    values = _double_values(a, b, _POINTS)
    if values is None or any(abs(vb) < 1e-6 for _, vb in values):
        return False
    ratios = [va / vb for va, vb in values]
    return any(_far(r, ratios[0]) for r in ratios[1:])


def _symbolic_equal(a, b) -> bool:
    """a == b: decided numerically at generic points when they have free symbols (fast, and a mismatch
    at any point is proof), otherwise or when undecided by sympy simplify."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    if _unevaluated(a) or _unevaluated(b):
        return False  # a sum over a sequence (`F_{n-k-1}`) compares by its structure only
    if _differ_in_double_precision(a, b):
        return False  # what the probe below finds at its first point, in microseconds instead of evalf's milliseconds
    probe = _probe(a, b, stop_at_mismatch=True)
    if probe:
        if not all(_close(va, vb) for va, vb in probe):
            return False
        if len(probe) == len(_POINTS):
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
    if _not_proportional_in_double_precision(a, b):
        return False
    probe = _probe(a, b)
    if probe and len(probe) == len(_POINTS) and all(abs(vb) > 1e-12 for _, vb in probe):
        ratios = [va / vb for va, vb in probe]
        return abs(ratios[0]) > 1e-12 and all(_close(r, ratios[0]) for r in ratios)
    if _symbolic_equal(a, b) or _symbolic_equal(a, -b):
        return True
    if _unevaluated(a) or _unevaluated(b):
        return False
    try:
        ratio = sympy.simplify(a / b)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError, NotImplementedError):
        return False
    return bool(ratio.is_number and ratio.is_zero is False and ratio.is_finite)


def _equation_equal(p: str, g: str) -> bool | None:
    ps, gs = split_top_level(p, "="), split_top_level(g, "=")
    if len(ps) == 2 and len(gs) == 2:
        dp = parse_or_none(ps[0]) if ps[0] else None
        dg = parse_or_none(gs[0]) if gs[0] else None
        rp, rg = parse_or_none(ps[1]), parse_or_none(gs[1])
        if None in (dp, dg, rp, rg):
            return p == g
        return _proportional(dp - rp, dg - rg)
    if len(ps) == 2 and len(gs) == 1:
        value = _assigned_value(ps)
        return value is not None and _equal_normalized(value, g, False)
    if len(gs) == 2 and len(ps) == 1:
        value = _assigned_value(gs)
        return value is not None and _equal_normalized(p, value, False)
    return None


def _is_target(side: str) -> bool:
    """True when `side` names a quantity: letters (subscripts allowed), no numbers, no top-level + or -."""
    t = re.sub(r"_\{[^{}]*\}|_\w", "", side)
    return bool(re.search(r"[a-zA-Z]", t)) and not re.search(r"\d", t) and len(split_top_level(t, "+")) == 1 \
        and len(split_top_level(t, "-")) == 1 and "\\infty" not in t


def _closed(side: str) -> bool:
    """True when `side` names no unknown: no letter outside LaTeX command and environment names
    (`\\binom{5}{2}`, `17 \\bmod 5`, `\\begin{vmatrix}2&1\\\\1&2\\end{vmatrix}`, `\\frac{1}{2}`)."""
    return re.search(r"[a-zA-Z]", _ENV_OR_COMMAND.sub("", side)) is None


def _assigned_value(sides: list[str]) -> str | None:
    """The value of `x = v` (or `v = x`), or of a computation `2 \\cdot 3 = 6`, `\\binom{5}{2} = 10`; None for
    other equations.

    The named side may be any single term without numbers: `x_1`, `(p,q)`, `AB`, `|AB|`, `f(x)`,
    `\\frac{NO}{BO}`, `A:B`. `a + 3z = 0` and `7 = 11a + c` are equations, not the values 0 and 11a + c.
    A computation is a side without unknowns before a number: as in a chain `y = 2+3 = 5`, the number
    written last is the answer, checked or not (`\\frac{1}{2} = \\frac{10}{9}` answers 10/9).
    """
    lhs, rhs = sides[0].strip(), sides[1].strip()
    if _is_target(lhs):
        return rhs
    if _is_target(rhs):
        return lhs
    if lhs and _closed(lhs) and as_float(parse_or_none(rhs)) is not None:
        return rhs
    return None


def _last_side(s: str) -> str:
    """`y = 2+3 = 5` -> `y=5`; `2+3 = 5` -> `5`; anything else unchanged."""
    sides = split_top_level(s, "=")
    if len(sides) < 3 or not all(x.strip() for x in sides) or len(_items(s)) > 1:
        return s
    return f"{sides[0].strip()}={sides[-1].strip()}" if _VAR.match(sides[0].strip()) else sides[-1].strip()


def _expand_pm(s: str) -> str:
    """`a \\pm b` -> `a+b,a-b` (one `\\pm` or `\\mp`, not inside a list)."""
    if _enclosed(s) is not None:
        return s
    for sym, first, second in (("\\pm", "+", "-"), ("\\mp", "-", "+")):
        if s.count(sym) == 1 and len(split_top_level(s)) == 1:
            return f"{s.replace(sym, first)},{s.replace(sym, second)}"
    return s


def _equal_normalized(p: str, g: str, percent: bool) -> bool:
    p, g = p.strip(), g.strip()
    if p == g:
        return True
    if not p or not g:
        return False
    p, g = _expand_pm(_last_side(p)), _expand_pm(_last_side(g))
    if p == g:
        return True
    pa, ga = parse_or_none(p), parse_or_none(g)
    if pa is not None and ga is not None and pa.is_Integer and ga.is_Integer and not percent:
        return pa == ga  # 12346 is not 12345, whatever the tolerance
    if _numbers_differ_in_double_precision(pa, ga, percent):
        return False  # what as_float + _numbers_equal below find, without sympy's N
    pv, gv = as_float(pa), as_float(ga)
    if pv is not None and gv is not None:
        return _numbers_equal(pv, gv, percent, p, g)
    relational = relation_equal(p, g)
    if relational is not None:
        return relational
    structured = _structure_equal(p, g)
    if structured is not None:
        return structured
    if "=" in p or "=" in g:
        eq = _equation_equal(p, g)
        if eq is not None:
            return eq
    if pa is not None and ga is not None and not pa.has(*_INFINITIES) and not ga.has(*_INFINITIES):
        return _symbolic_equal(pa, ga)
    return pa is not None and pa == ga


def clear_caches() -> None:
    """Empty every memo of the checker (verdicts, normal forms, parses, values), as in a fresh worker."""
    for cached in (equal_unguarded, normalize, parse_or_none, as_float, _value_at) + _TREE_MEMOS:
        cached.cache_clear()


def _assignments_as_tuples(s: str) -> str | None:
    """`p=5,q=2` as the tuple `(5,2)` (values in the order written), `p=5,q=2;p=7,q=2` as `(5,2),(7,2)`;
    None unless every item assigns a value to a variable, each variable once per group, two or more."""
    groups = split_top_level(s, ";")
    tuples = []
    for group in groups:
        sides = [item.split("=") for item in split_top_level(group)]
        if len(sides) < 2 or any(len(x) != 2 or not _VAR.match(x[0].strip()) or not x[1].strip() for x in sides):
            return None
        if len({x[0].strip() for x in sides}) != len(sides):
            return None
        tuples.append("(" + ",".join(x[1].strip() for x in sides) + ")")
    return ",".join(tuples)


def _tuple_equal(pred: str, gold: str, percent: bool) -> bool:
    """An assignment list on one side (no `=` on the other) against tuples: `p=5,q=2` is `(5,2)`."""
    side, other = (pred, gold) if "=" not in gold else (gold, pred)
    if "=" not in side or "=" in other:
        return False
    tuples = _assignments_as_tuples(normalize(side, strip_lhs=False))
    return tuples is not None and _equal_normalized(tuples, normalize(other), percent)


def _unbox(s: str) -> str | None:
    """The boxed answer when `s` holds a `\\boxed{}` (math_equal may be given `$\\boxed{5}$`)."""
    if "\\boxed" not in s and "\\fbox" not in s:
        return s
    return extract_answer(s)


def _exact_part(s: str | None) -> str | None:
    """In `exact \\approx decimal` the exact part; in `x \\approx 2.5` (or `\\approx 2.5`) the value."""
    if s is None or ("\\approx" not in s and "\u2248" not in s):
        return s
    parts = _APPROX.split(s)
    if len(parts) == 1:
        return s
    first = parts[0].strip().strip("$ ").rstrip("=").strip()
    return parts[-1] if not first or _VAR.match(first) else parts[0]


# Pure, so memoised: the responses of an RL group often end in the same answer (the pool runs identical
# (response, gold) pairs once, but two responses that differ in their reasoning still check the same pair).
@functools.lru_cache(maxsize=8192)
def equal_unguarded(pred: str | None, gold: str) -> bool:
    """True when answer `pred` is equivalent to `gold` (no time limit: call inside a worker)."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred), str(gold)
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    pred, gold = _exact_part(_unbox(pred)), _exact_part(_unbox(gold))
    if pred is None or gold is None:
        return False
    p, g = pred.strip(), gold.strip()
    if p and p == g:
        return True
    if _INTEGER.match(p) and _INTEGER.match(g):  # the common case, without normalising
        return int(p) == int(g)
    percent = has_percent(pred) or has_percent(gold)
    decimal = _decimal_comma_equal(p, g, percent)
    if decimal is not None:
        return decimal
    if "=" in pred and "=" in gold:
        if _equal_normalized(normalize(pred, strip_lhs=False), normalize(gold, strip_lhs=False), percent):
            return True
    return _equal_normalized(normalize(pred), normalize(gold), percent) or _tuple_equal(pred, gold, percent)
