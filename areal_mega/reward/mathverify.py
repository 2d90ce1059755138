"""HF math-verify as an optional second checker (`reward.checker: math_verify | both`).

Only imported inside a reward worker (`worker.py`), so its calls get the
pool's time limit, memory limit and kill-on-hang. math-verify's own
signal-based time-outs are switched off: the pool enforces ours. Note that
math-verify, unlike our parser, hands plain-text expressions to sympy's
`parse_expr` (which evaluates Python): that is why it is never the default
and always runs in a worker process. Install: `pip install -e .[math-verify]`.
"""
from __future__ import annotations

import logging


def available() -> bool:
    """True when math-verify is installed (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("math_verify") is not None


def _as_latex(s: str) -> str:
    """A bare answer string wrapped in `$...$` so math-verify's LaTeX extractor sees it."""
    return s if ("$" in s or "\\boxed" in s or "\\[" in s or "\\(" in s) else f"${s}$"


def math_verify_equal(a: str | None, gold: str, is_response: bool) -> bool:
    """math-verify's verdict on `a` (a whole response, or an answer string) against `gold`."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every failed parse in full
    if a is None or gold is None:
        return False
    try:
        gold_parsed = parse(_as_latex(str(gold)), parsing_timeout=None)
        pred_parsed = parse(a if is_response else _as_latex(str(a)), parsing_timeout=None)
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - math-verify raises many kinds (MemoryError too) on hostile input: wrong
        return False
