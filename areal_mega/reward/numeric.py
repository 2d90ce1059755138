"""Double-precision value of a sympy expression at a point, by walking its tree (no code generation).

sympy's `evalf` costs 0.1-1 ms per expression; this walk costs microseconds. `equal.py` uses it only
to prove two answers different, with a margin (1e-6 relative) far above its rounding error, so its
verdicts are those of `evalf`. `value_at` returns None wherever it is unsure: a node it does not
know, a value that is not finite, a principal branch in doubt (a root or logarithm of a negative
real, an inverse sine outside (-1, 1)), or cancellation (an intermediate value more than
MAX_CANCELLATION times the result).
"""
from __future__ import annotations

import cmath
import math

import sympy

MAX_CANCELLATION = 1e6
# Entire functions, or ratios of them (poles come out as non-finite or huge values: unsure).
_ANYWHERE = {
    sympy.sin: cmath.sin, sympy.cos: cmath.cos, sympy.tan: cmath.tan, sympy.exp: cmath.exp,
    sympy.sinh: cmath.sinh, sympy.cosh: cmath.cosh, sympy.tanh: cmath.tanh,
    sympy.cot: lambda z: 1 / cmath.tan(z), sympy.sec: lambda z: 1 / cmath.cos(z), sympy.csc: lambda z: 1 / cmath.sin(z),
}
# Functions with branch cuts, on the part of the real line where they are real and away from the cuts.
_REAL_ONLY = {
    sympy.log: (math.log, lambda x: x > 0), sympy.atan: (math.atan, lambda x: True),
    sympy.asin: (math.asin, lambda x: -1 < x < 1), sympy.acos: (math.acos, lambda x: -1 < x < 1),
}
_CONSTANTS = {sympy.pi: math.pi, sympy.E: math.e, sympy.I: 1j}


class _Unsure(Exception):
    pass


def _real(z: complex) -> float:
    if abs(z.imag) > 1e-12 * max(1.0, abs(z.real)):
        raise _Unsure
    return z.real


def value_at(expr, point: dict) -> complex | None:
    """expr at `point` ({sympy Symbol: float}) in complex double precision; None where unsure."""
    peak = 0.0

    def walk(e) -> complex:
        nonlocal peak
        if e.is_Symbol:
            v = complex(point[e])
        elif e.is_Rational:
            v = complex(e.p / e.q)
        elif e in _CONSTANTS:
            v = complex(_CONSTANTS[e])
        elif e.is_Add:
            v = sum((walk(x) for x in e.args), 0j)
        elif e.is_Mul:
            v = 1 + 0j
            for x in e.args:
                v *= walk(x)
        elif e.is_Pow:
            base = walk(e.base)
            if e.exp.is_Integer:
                v = base ** int(e.exp)
            else:
                b = _real(base)
                if b <= 0:
                    raise _Unsure
                v = complex(b ** walk(e.exp))
        elif e.func in _ANYWHERE and len(e.args) == 1:
            v = _ANYWHERE[e.func](walk(e.args[0]))
        elif e.func in _REAL_ONLY and len(e.args) == 1:
            f, domain = _REAL_ONLY[e.func]
            x = _real(walk(e.args[0]))
            if not domain(x):
                raise _Unsure
            v = complex(f(x))
        else:
            raise _Unsure
        if not (math.isfinite(v.real) and math.isfinite(v.imag)):
            raise _Unsure
        peak = max(peak, abs(v))
        return v

    try:
        value = walk(expr)
    except (_Unsure, KeyError, OverflowError, ZeroDivisionError, ValueError, TypeError, RecursionError):
        return None
    return value if peak <= MAX_CANCELLATION * max(1.0, abs(value)) else None
