"""Normalise an answer string before comparison (the Qwen math-evaluation rules).

`normalize(s)` returns a canonical LaTeX-ish string: no `$`, `\\(..\\)`/`\\[..\\]`,
`\\left`/`\\right`, spacing commands, `\\text{}`/`\\textnormal{}` wrappers, trailing
units (superscripts too), currency symbols, degree signs, `\\%` and "percent",
thousands separators (`2,500`, `12{,}345`, `11,\\! 111`; not `12, 345`, a list),
trailing `.0` and stray `\\`, leading `x =`; `dfrac`/`tfrac` -> `frac`, `\\frac12`
-> `\\frac{1}{2}`, `\\sqrt3` -> `\\sqrt{3}`, `a/b` -> `\\frac{a}{b}` for integers,
`3\\frac{1}{4}` -> `(3+\\frac{1}{4})`, one spelling per relation (`\\geqslant`, `>=`,
`\\gt` -> `\\ge`, `>`), "or" -> `\\lor`, "and" -> `,`, plain `sqrt(2)`/`pi`/`2**10`,
number words -> digits. `has_percent(s)` says whether the raw
string was written as a percentage. Both are regex passes over bounded input
(callers cap the length), so they cannot hang.
"""
from __future__ import annotations

import functools
import re

_WORD_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_UNITS = (
    "degrees|degree|deg|cm|centimeters|centimeter|meters|meter|km|kilometers|mm|inches|inch|feet|foot|ft|"
    "miles|mile|mph|yards|yard|units|unit|sq|square|cubic|dollars|dollar|cents|cent|hours|hour|minutes|minute|"
    "seconds|second|days|day|weeks|week|years|year|points|point|people|students|ways|pounds|pound|kg|grams|gram|"
    "liters|liter|gallons|gallon|hrs|hr|min|sec"
)
# Ordinals right after digits ("21st"); one-letter units ("m", "s") are left alone: they are variables too.
_TRAILING_UNIT = re.compile(
    rf"(?:(?<=[\d}}])\s*(?:{_UNITS})|(?<=\d)(?:st|nd|rd|th)|(?<=[a-zA-Z])\s+(?:{_UNITS}))"
    rf"\b(?:\^\{{?\d\}}?|\^\d)?\.?$"
)
_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textnormal|textrm|mbox|mathrm|mathbf|mathit|boldsymbol|operatorname)\s*\{([^{}]*)\}"
)
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # "0,111" is not 111
_FRAC_SHORT = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])")
_FRAC_HALF = re.compile(r"\\frac\s*\{([^{}]*)\}\s*([0-9a-zA-Z])")
_FRAC_HALF2 = re.compile(r"\\frac\s*([0-9a-zA-Z])\s*\{")
_SQRT_SHORT = re.compile(r"\\sqrt\s*([0-9a-zA-Z])")
_INT_SLASH = re.compile(r"^(-?\d+)/(\d+)$")
_TRAILING_ZERO = re.compile(r"(\d)\.0+(?![\d])")
_LEADING_VAR = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\eq)\s*(?!.*=)")
# Spellings of one relation, longest first (`\\leqslant` before `\\leq`).
_RELATIONS = (
    ("\\geqslant", "\\ge"), ("\\leqslant", "\\le"), ("\\geqq", "\\ge"), ("\\leqq", "\\le"),
    ("\\geq", "\\ge"), ("\\leq", "\\le"), ("\\neq", "\\ne"), ("\\not=", "\\ne"), ("\\gt", ">"), ("\\lt", "<"),
    (">=", "\\ge "), ("<=", "\\le "), ("!=", "\\ne "),
    ("\u2265", "\\ge "), ("\u2264", "\\le "), ("\u2260", "\\ne "), ("\\vee", "\\lor"),
)
_DOUBLED_BACKSLASH = re.compile(
    r"\\\\(?=(?:le|ge|leq|geq|ne|neq|lt|gt|frac|dfrac|tfrac|sqrt|left|right|pi|cdot|times|in|infty|cup|pm|text)(?![a-zA-Z]))"
)
_PLAIN_NAMES = re.compile(r"(?<![\\a-zA-Z])(sqrt|pi)(?![a-zA-Z])")
_PLAIN_POWER = re.compile(r"\*\*\s*(\d+|\([^()]*\)|[a-zA-Z])")
_SUB_BRACE = re.compile(r"_\{(\w)\}")
_CURRENCY = ("\\euro", "\\pounds", "\u20ac", "\u00a3", "\u00a5", "USD")
_PERCENT_WORDS = re.compile(r"\\?(?:percent(?:age)?|per\s*cent|\bpct\b)\.?", re.IGNORECASE)
_MIXED = re.compile(r"(?<![\w}^_.])(\d+)\\frac\{(\d+)\}\{(\d+)\}(?=$|[,;)\]])")
_CONNECTIVE_TEXT = re.compile(r"\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*(and|or)\s*\}")
_DELIMITERS = re.compile(r"^(?:\\\(|\\\[)|(?:\\\)|\\\])$")


def has_percent(s: str) -> bool:
    """True when the answer was written as a percentage (`%` or `\\%`, or the word)."""
    return "%" in s or (("p" in s or "P" in s) and _PERCENT_WORDS.search(s) is not None)


def _has_text_command(s: str) -> bool:
    """True when `s` may hold one of `_TEXT_CMD`'s commands (`\\text...`, `\\mbox`, `\\math...`, ...)."""
    return "\\text" in s or "\\mbox" in s or "\\math" in s or "\\boldsymbol" in s or "\\operatorname" in s


def _strip_units(s: str) -> str:
    # A trailing \text{...} holding letters is a unit or a label ("5 \text{ cm}").
    if _has_text_command(s):
        s = re.sub(r"(?<=\S)\s*\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .^{}0-9]*\}(?:\^\{?\d\}?)?\s*$", "", s)
    prev = None
    while prev != s:
        prev, s = s, (_TRAILING_UNIT.sub("", s) if _may_end_in_unit(s) else s).rstrip()
    return s


_LOWERCASE = re.compile("[a-z]")


def _may_end_in_unit(s: str) -> bool:
    """False when `_TRAILING_UNIT` cannot match `s`: a match ends in a unit or ordinal (lowercase letters)
    and at most `^{2}.` and a newline after it, so one of the last 7 characters is a lowercase letter."""
    return _LOWERCASE.search(s, max(0, len(s) - 7)) is not None


# A plain number (`-12`, `0.50`, `.5`), an integer ratio (`3/4`) or an integer fraction (`-\\dfrac{14}{3}`):
# the common answer, whose canonical form `_plain_form` writes without the passes below.
_PLAIN_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.([0-9]+))?|\.([0-9]+))")
_PLAIN_RATIO = re.compile(r"-?[0-9]+/[0-9]+")
_PLAIN_FRAC = re.compile(r"-?\\[dtc]?frac\{[0-9]+\}\{[0-9]+\}")


def _plain_form(s: str) -> str | None:
    """normalize(s) when the stripped `s` is a plain number, integer ratio or integer fraction (the same
    string the full passes give: `.5` -> `0.5`, `5.00` -> `5`, `3/4` -> `\\frac{3}{4}`, `\\dfrac` -> `\\frac`);
    None for anything else. `tests/reward/test_fast_paths.py` checks it against the full passes."""
    t = s.strip()
    m = _PLAIN_NUMBER.fullmatch(t)
    if m:
        if t.startswith((".", "-.")):
            t = t.replace(".", "0.", 1)
        fraction = m.group(1) or m.group(2)
        return t[: t.index(".")] if fraction is not None and fraction.strip("0") == "" else t
    if _PLAIN_RATIO.fullmatch(t):
        num, den = t.split("/")
        return f"\\frac{{{num}}}{{{den}}}"
    if _PLAIN_FRAC.fullmatch(t):
        return t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    return None


@functools.lru_cache(maxsize=4096)  # pure; golds repeat for every sample of a problem
def normalize(s: str, strip_lhs: bool = True) -> str:
    """Canonical form of an answer string (see module docstring).

    strip_lhs: drop a leading `x =` (False keeps equations whole).
    """
    plain = _plain_form(str(s))
    return plain if plain is not None else normalize_full(s, strip_lhs)


def normalize_full(s: str, strip_lhs: bool = True) -> str:
    """normalize(s) by every pass, without the plain-number fast path (its reference in the tests)."""
    s = str(s).strip().replace("\n", " ").replace("\r", " ")
    s = s.replace("\\$", "").replace("$", "")
    # Each regex pass below runs only where the text it needs is there (same result, less time).
    s = s.strip()
    if "\\(" in s or "\\[" in s or "\\)" in s or "\\]" in s:
        s = _DELIMITERS.sub("", _DELIMITERS.sub("", s).strip())
    for sym in _CURRENCY:
        s = s.replace(sym, "")
    if "\\\\" in s and "\\begin" not in s:  # a doubled backslash before a command is an escaping slip, not a line break
        s = _DOUBLED_BACKSLASH.sub(r"\\", s)
    s = s.replace("\\displaystyle", "").replace("\\left", "").replace("\\right", "")
    if "\\big" in s or "\\Big" in s:
        s = re.sub(r"\\(?:big|Big|bigg|Bigg)[lr]?", "", s)
    if "**" in s:
        s = _PLAIN_POWER.sub(r"^{\1}", s)
    if "sqrt" in s or "pi" in s:
        s = _PLAIN_NAMES.sub(r"\\\1", s)  # plain-text sqrt(2), 3pi, 2**10
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    if _may_hold_relation(s):
        for old, new in _RELATIONS:
            s = s.replace(old, new)
    s = s.replace("\\infty", "\\infty ").replace("infinity", "\\infty").replace("\\emptyset", "\\varnothing")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "").replace("°", "")
    s = s.replace("\\%", "").replace("%", "")
    if "p" in s or "P" in s:
        s = _PERCENT_WORDS.sub("", s)
    if ",\\!" in s:
        s = re.sub(r"(?<=\d),\\!\s*(?=\d)", ",", s)  # "11,\\! 111" is a thousands separator
    if "{" in s:
        s = re.sub(r"\{\s*,\s*\}", ",", s)
    if "~" in s or "\\," in s or "\\;" in s or "\\:" in s or "\\!" in s or "\\ " in s or "\\quad" in s or "\\qquad" in s:
        s = _SPACING.sub("", s)
    s = _strip_units(s)
    if _has_text_command(s):
        s = _CONNECTIVE_TEXT.sub(r" \1 ", s)
        for _ in range(3):  # nested \text{\textbf{...}}
            s = _TEXT_CMD.sub(r"\1", s)
    if "and" in s:
        s = re.sub(r"\s+and\s+", ",", s)
    if "or" in s:
        s = re.sub(r"\s+or\s+|(?<=[)\]}])or(?=[(\[{\\])", r"\\lor ", s)
    s = s.strip().rstrip(".").rstrip("\\").strip()
    s = _strip_units(s)
    low = s.lower()
    if low in _WORD_NUMBERS:
        s = _WORD_NUMBERS[low]
    m = _LEADING_VAR.match(s) if strip_lhs else None
    if m and len(s) > m.end():
        s = s[m.end() :]
    list_comma = "," in s and re.search(r",\s", s) is not None  # "12, 345" is two numbers, "12,345" one
    # Spaces go, except one that ends a command before a letter ("\\pi r" must not become "\\pir").
    if "\\" in s and " " in s:
        s = re.sub(r"(\\[a-zA-Z]+) +(?=[a-zA-Z])", "\\1\x00", s).replace(" ", "").replace("\x00", " ")
    else:
        s = s.replace(" ", "").replace("\x00", " ")
    if not list_comma and "," in s and _THOUSANDS.match(s):
        s = s.replace(",", "")
    if "\\frac" in s:
        s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_HALF.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_HALF2.sub(r"\\frac{\1}{", s)
    if "\\sqrt" in s:
        s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    if "\\frac" in s:
        s = _MIXED.sub(lambda m: f"({m[1]}+\\frac{{{m[2]}}}{{{m[3]}}})" if int(m[2]) < int(m[3]) else m[0], s)
    m = _INT_SLASH.match(s) if "/" in s else None
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if "." in s:
        s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
        s = _TRAILING_ZERO.sub(r"\1", s)
    s = s.replace("+\\infty", "\\infty")
    if "_{" in s:
        s = _SUB_BRACE.sub(r"_\1", s)
    if s.startswith("\\{") is False and len(s) > 2 and s[0] == "{" and s[-1] == "}" and _balanced_group(s):
        s = s[1:-1]
    return s


def _may_hold_relation(s: str) -> bool:
    """False when no spelling in `_RELATIONS` occurs in `s`: each holds one of these substrings."""
    return ("\\g" in s or "\\l" in s or "\\n" in s or "\\v" in s or ">" in s or "<" in s or "!" in s
            or "\u2265" in s or "\u2264" in s or "\u2260" in s)


def _balanced_group(s: str) -> bool:
    """True when s[0] == '{' closes at the last character (so the braces are redundant)."""
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0 and i < len(s) - 1:
            return False
    return depth == 0
