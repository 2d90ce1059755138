"""Inequalities, intervals and sets of real numbers, compared as sets (on normalised strings).

A one-variable answer is turned into a union of intervals, whatever way it
is written: `0 \\le t \\le 3`, `3 \\ge t \\ge 0`, `t \\in [0,3]`, `[0,3]`,
`\\{t \\mid 0 \\le t \\le 3\\}`, `-y < -2` (solved: `y > 2`), `x<-1 \\lor x>1`
(`or` becomes `\\lor` in `normalize`), `(-\\infty,-1)\\cup(1,\\infty)`,
`\\mathbb{R}`, `\\varnothing`. A comma between relations is "and"
(intersection). Relations in several variables are compared atom by atom:
`a < b` is canonically `a - b < 0`, and two atoms are the same when their
differences are a positive multiple of each other (any nonzero one for `\\ne`).

An interval is `(lo, hi, lo_closed, hi_closed)` with float endpoints
(+-inf allowed); a set is a sorted list of disjoint intervals. Parsing goes
through `parse.py` only, so nothing here executes model text.
"""
from __future__ import annotations

import math
import re

import sympy

from areal_mega.reward.parse import as_float, parse_or_none, split_top_level, symbol_name

REL_TOL = 1e-4
INF = math.inf
_REL = re.compile(r"\\(?:le|ge|ne)(?![a-zA-Z])|<|>|=")
_HAS_INEQ = re.compile(r"\\(?:le|ge|ne|in|mid)(?![a-zA-Z])|<|>|\\mathbb\{R\}")
_IN = re.compile(r"\\in(?![a-zA-Z])")
_ABS = re.compile(r"\|\s*([a-zA-Z])\s*\|")
_FUNCTION_VALUE = re.compile(r"^\s*([a-zA-Z])\(\s*([a-zA-Z])\s*\)\s*$")
_VAR = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*$")
_FLIP = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le", "\\ne": "\\ne", "=": "="}
_EMPTY = ("\\varnothing", "\\{\\}", "\\emptyset")
Interval = tuple  # (lo: float, hi: float, lo_closed: bool, hi_closed: bool)


def is_relational(s: str) -> bool:
    """True when `s` holds an inequality, `\\in`, a set-builder bar or `\\mathbb{R}` outside groups."""
    return _HAS_INEQ.search(s) is not None


def _chain(s: str) -> tuple[list[str], list[str]] | None:
    """(terms, operators) of `a op b op c ...` split at relations outside brackets; None without one."""
    terms, ops, depth, start = [], [], 0, 0
    for m in re.finditer(r"[(\[{]|[)\]}]|" + _REL.pattern, s):
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
        elif depth == 0:
            terms.append(s[start : m.start()].strip())
            ops.append(tok)
            start = m.end()
    if not ops:
        return None
    terms.append(s[start:].strip())
    return (terms, ops) if all(terms) else None


def _normalize(ivs: list[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-empty intervals covering the same set."""
    ivs = sorted((iv for iv in ivs if iv[0] < iv[1] or (iv[0] == iv[1] and iv[2] and iv[3])),
                 key=lambda iv: (iv[0], not iv[2]))
    out: list[Interval] = []
    for lo, hi, lc, hc in ivs:
        if out and (lo < out[-1][1] or (lo == out[-1][1] and (out[-1][3] or lc))):
            plo, phi, plc, phc = out[-1]
            if hi > phi or (hi == phi and hc):
                phi, phc = hi, hc if hi > phi else (phc or hc)
            out[-1] = (plo, phi, plc, phc)
        else:
            out.append((lo, hi, lc, hc))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out = []
    for alo, ahi, alc, ahc in a:
        for blo, bhi, blc, bhc in b:
            lo, lc = (alo, alc) if alo > blo else (blo, blc) if blo > alo else (alo, alc and blc)
            hi, hc = (ahi, ahc) if ahi < bhi else (bhi, bhc) if bhi < ahi else (ahi, ahc and bhc)
            out.append((lo, hi, lc, hc))
    return _normalize(out)


def _bound(s: str) -> float | None:
    return as_float(parse_or_none(s.strip())) if s.strip() else None


def interval_union(s: str) -> list[Interval] | None:
    """The set written as intervals / finite sets joined by `\\cup`; None when `s` is not one."""
    out = []
    for part in split_top_level(s.strip(), "\\cup"):
        part = part.strip()
        if part in _EMPTY:
            continue
        if part == "\\mathbb{R}":
            out.append((-INF, INF, False, False))
            continue
        if part.startswith("\\{") and part.endswith("\\}"):
            points = [_bound(x) for x in split_top_level(part[2:-2])]
            if any(p is None or math.isinf(p) for p in points):
                return None
            out += [(p, p, True, True) for p in points]
            continue
        if len(part) < 5 or part[0] not in "([" or part[-1] not in ")]":
            return None
        ends = split_top_level(part[1:-1])
        if len(ends) != 2:
            return None
        lo, hi = _bound(ends[0]), _bound(ends[1])
        if lo is None or hi is None or lo > hi:
            return None
        out.append((lo, hi, part[0] == "[" and not math.isinf(lo), part[-1] == "]" and not math.isinf(hi)))
    return _normalize(out)


def _expanded_parts(expr, var) -> tuple:
    """(coefficient of `var`, the rest) of `expr` (sympy), by expanding it."""
    coef = sympy.expand(expr).coeff(var, 1)
    return coef, sympy.expand(expr - coef * var)


def _linear_parts(expr, var) -> tuple:
    """`_expanded_parts(expr, var)`, read off directly when `expr` is already `c*var + d` with numbers c, d
    (sympy's canonical sum of such terms is its own expansion: `x - 9`, `-2x`, `0.5x + 3`)."""
    coef, rest = None, []
    for term in expr.args if expr.is_Add else (expr,):
        if term.is_Number:
            rest.append(term)
            continue
        if term == var:
            k = sympy.Integer(1)
        elif term.is_Mul and len(term.args) == 2 and term.args[0].is_Number and term.args[0].is_finite \
                and term.args[1] == var:  # (an infinite coefficient leaves nan in the expanded rest)
            k = term.args[0]
        else:
            return _expanded_parts(expr, var)
        if coef is not None:
            return _expanded_parts(expr, var)
        coef = k
    return (coef, sympy.Add(*rest)) if coef is not None else _expanded_parts(expr, var)


def _atom(lhs: str, op: str, rhs: str) -> tuple[str, list[Interval]] | None:
    """(variable, set) of `lhs op rhs` when it is linear in one variable, else None.

    A function value written alone on a side (`0 < f(x) < 1`) is that one unknown."""
    a, b = parse_or_none(_FUNCTION_VALUE.sub(r"\1_{\2}", lhs)), parse_or_none(_FUNCTION_VALUE.sub(r"\1_{\2}", rhs))
    if a is None or b is None:
        return None
    expr = a - b
    free = expr.free_symbols
    if len(free) != 1:
        return None
    (var,) = free
    coef, rest = _linear_parts(expr, var)
    c, d = as_float(coef), as_float(rest)
    if c is None or d is None or c == 0 or math.isinf(d):
        return None
    if c < 0:
        op = _FLIP[op]
    x = -d / c
    sets = {"<": [(-INF, x, False, False)], "\\le": [(-INF, x, False, True)], ">": [(x, INF, False, False)],
            "\\ge": [(x, INF, True, False)], "=": [(x, x, True, True)],
            "\\ne": [(-INF, x, False, False), (x, INF, False, False)]}
    return symbol_name(var), _normalize(sets[op])


def _conjunction(s: str) -> tuple[str | None, list[Interval]] | None:
    """(variable, set) of relations joined by commas (each maybe a chain, or `v \\in S`)."""
    var, acc = None, [(-INF, INF, False, False)]
    for item in split_top_level(s, ","):
        item = item.strip()
        got = _membership(item) or _relation_set(item) or _abs_relation_set(item)
        if got is None:
            return None
        v, ivs = got
        if v is not None and var is not None and v != var:
            return None
        var = var or v
        acc = _intersect(acc, ivs)
    return var, acc


def _membership(s: str) -> tuple[str | None, list[Interval]] | None:
    parts = _IN.split(s)
    if len(parts) != 2 or not _VAR.match(parts[0]):
        return None
    ivs = interval_union(parts[1])
    return (parts[0].strip(), ivs) if ivs is not None else None


def _relation_set(s: str) -> tuple[str, list[Interval]] | None:
    chain = _chain(s)
    if chain is None:
        return None
    terms, ops = chain
    var, acc = None, [(-INF, INF, False, False)]
    for lhs, op, rhs in zip(terms, ops, terms[1:]):
        got = _atom(lhs, op, rhs)
        if got is None or (var is not None and got[0] != var):
            return None
        var, acc = got[0], _intersect(acc, got[1])
    return var, acc


def _abs_relation_set(s: str) -> tuple[str, list[Interval]] | None:
    """(variable, set) of a relation on `|v|` (`1 \\le |z| \\le 2` is `[-2, -1] \\cup [1, 2]`)."""
    names = set(_ABS.findall(s))
    if len(names) != 1 or "|" in _ABS.sub("", s):
        return None
    got = _relation_set(_ABS.sub(r" \1 ", s))  # the set of values of |v| ...
    if got is None:
        return None
    var, ivs = got
    pos = _intersect(ivs, [(0.0, INF, True, False)])  # ... that |v| can take, and their mirror images
    return var, _normalize(pos + [(-hi, -lo, hc, lc) for lo, hi, lc, hc in pos])


def real_set(s: str) -> tuple[str | None, list[Interval]] | None:
    """(variable or None, set) for a one-variable relation, membership, set-builder or interval union."""
    s = s.strip()
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        for sep in ("\\mid", "|", ":"):
            parts = split_top_level(inner, sep)
            if len(parts) == 2:
                head = _IN.split(parts[0])
                if not _VAR.match(head[0]):
                    return None
                got = real_set(parts[1])
                if got is None:
                    return None
                if len(head) == 2:  # {x \in S : cond}
                    domain = interval_union(head[1])
                    if domain is None:
                        return None
                    return head[0].strip(), _intersect(domain, got[1])
                return head[0].strip(), got[1]
    union = split_top_level(s, "\\lor")
    if len(union) > 1:
        var, acc = None, []
        for part in union:
            got = _conjunction(part)
            if got is None or (var is not None and got[0] is not None and got[0] != var):
                return None
            var, acc = var or got[0], acc + got[1]
        return var, _normalize(acc)
    ivs = interval_union(s)
    if ivs is not None:
        return None, ivs
    return _conjunction(s)


def sets_equal(a: list[Interval], b: list[Interval]) -> bool:
    if len(a) != len(b):
        return False
    for (alo, ahi, alc, ahc), (blo, bhi, blc, bhc) in zip(a, b):
        for x, y in ((alo, blo), (ahi, bhi)):
            if not (x == y or math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-12)):
                return False
        if alc != blc or ahc != bhc:
            return False
    return True


def _canonical_atoms(s: str) -> list[tuple[str, object]] | None:
    """[(op in <, \\le, \\ne, =), lhs - rhs or rhs - lhs)] of a relation chain."""
    chain = _chain(s)
    if chain is None:
        return None
    terms, ops = chain
    atoms = []
    for lhs, op, rhs in zip(terms, ops, terms[1:]):
        a, b = parse_or_none(lhs), parse_or_none(rhs)
        if a is None or b is None:
            return None
        if op in (">", "\\ge"):
            atoms.append(("<" if op == ">" else "\\le", b - a))
        else:
            atoms.append((op, a - b))
    return atoms


def _positive_multiple(a, b, any_sign: bool) -> bool:
    try:
        ratio = sympy.simplify(a / b)
    except (TypeError, ValueError, ZeroDivisionError, RecursionError, NotImplementedError):
        return False
    if not ratio.is_number or ratio.is_zero is not False or ratio.is_finite is not True:
        return False
    return any_sign or bool(ratio.is_positive)


def relation_equal(p: str, g: str) -> bool | None:
    """Equality of relational / set answers; None when neither side is one (see module docstring)."""
    if not (is_relational(p) or is_relational(g)):
        return None
    sp, sg = real_set(p), real_set(g)
    if sp is not None and sg is not None:
        if sp[0] is not None and sg[0] is not None and sp[0] != sg[0]:
            return False
        return sets_equal(sp[1], sg[1])
    ap, ag = _canonical_atoms(p), _canonical_atoms(g)
    if ap is None or ag is None or len(ap) != len(ag):
        return False
    left = list(ag)
    for op, e in ap:
        for j, (op2, e2) in enumerate(left):
            if op == op2 and _positive_multiple(e, e2, any_sign=op in ("\\ne", "=")):
                del left[j]
                break
        else:
            return False
    return True
