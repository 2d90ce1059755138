"""Matrix answers: the cells of one written matrix, or of a sum or product of written matrices.

`matrix_rows(s)` takes a normalised answer string (`equal.normalize`) and returns its
cells row by row as strings: one `pmatrix`/`bmatrix`/`matrix`/`vmatrix`/`array`
(optionally inside `[...]` or `(...)`), or an unevaluated `M1 + M2`, `M1 - M2`,
`M1 M2`, `M1 \\cdot M2`, `M1 \\times M2` of up to MAX_MATRICES written matrices, which
is evaluated (cells parsed by our own parser, never by sympy's string parser; the
result's cells are rendered back to LaTeX). None when `s` is neither.
"""
from __future__ import annotations

import re

import sympy

from areal_mega.reward.parse import parse_or_none

MAX_MATRICES = 4
MAX_CELLS = 64
_ENVS = ("pmatrix", "bmatrix", "matrix", "vmatrix", "array")
_ARRAY_SPEC = re.compile(r"^\{[lcr|]*\}")
_WRITTEN = re.compile(r"\\begin\{(pmatrix|bmatrix)\}((?:(?!\\begin|\\end).)*)\\end\{\1\}")
_OPERATORS = {"+": "+", "-": "-", "": "*", "\\cdot": "*", "\\times": "*"}


def _single_rows(s: str) -> list[list[str]] | None:
    """Cells of one matrix environment spanning all of `s` (optionally inside brackets)."""
    if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and s[1:].startswith("\\begin{"):
        s = s[1:-1]
    for env in _ENVS:
        head, tail = f"\\begin{{{env}}}", f"\\end{{{env}}}"
        if s.startswith(head) and s.endswith(tail):
            body = s[len(head) : -len(tail)]
            if env == "array":
                body = _ARRAY_SPEC.sub("", body)
            return [row.split("&") for row in body.split("\\\\") if row.strip()]
    return None


def _matrix(body: str) -> sympy.Matrix | None:
    rows = [row.split("&") for row in body.split("\\\\") if row.strip()]
    if not rows or len({len(r) for r in rows}) != 1 or len(rows) * len(rows[0]) > MAX_CELLS:
        return None
    cells = [[parse_or_none(c.strip()) for c in row] for row in rows]
    if any(c is None for row in cells for c in row):
        return None
    return sympy.Matrix(cells)


def _evaluated(s: str) -> sympy.Matrix | None:
    """Value of a sum/product of two or more written matrices filling all of `s`; None otherwise."""
    blocks = list(_WRITTEN.finditer(s))
    if not 2 <= len(blocks) <= MAX_MATRICES or blocks[0].start() != 0 or blocks[-1].end() != len(s):
        return None
    ops = [s[a.end() : b.start()].strip() for a, b in zip(blocks, blocks[1:])]
    if any(op not in _OPERATORS for op in ops):
        return None
    mats = [_matrix(b.group(2)) for b in blocks]
    if any(m is None for m in mats):
        return None
    try:
        terms, signs = [mats[0]], [1]
        for op, m in zip(ops, mats[1:]):
            if _OPERATORS[op] == "*":
                terms[-1] = terms[-1] * m
            else:
                terms.append(m)
                signs.append(1 if op == "+" else -1)
        total = terms[0]
        for sign, term in zip(signs[1:], terms[1:]):
            total = total + term if sign > 0 else total - term
    except sympy.matrices.exceptions.ShapeError:
        return None
    return total


def matrix_rows(s: str) -> list[list[str]] | None:
    """Cells (strings) of the matrix that `s` writes or evaluates to, row by row; None when it is none."""
    if "\\begin" not in s:  # every written matrix opens with \\begin{...}
        return None
    value = _evaluated(s)
    if value is not None:
        return [[sympy.latex(sympy.simplify(value[i, j])) for j in range(value.cols)] for i in range(value.rows)]
    return _single_rows(s)
