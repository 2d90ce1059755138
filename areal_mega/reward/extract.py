"""Find the final answer in a model response (untrusted text).

Order of preference:
1. the content of the last `\\boxed{...}` or `\\fbox{...}` (nested braces
   matched), or `\\boxed x` (the token after a space, up to `$`/space/end);
2. the text after the last "the answer is" / "final answer is"
   (case-insensitive), up to the end of that line, without a trailing period.

There is deliberately no "last number in the text" fall-back: for an RL reward
it would credit responses that never committed to an answer.

Everything here is a linear scan: a 1 MB response or 10,000 unbalanced braces
costs one pass and returns None.
"""
from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_IS = re.compile(r"(?:final answer|the answer) is[:\s]*", re.IGNORECASE)


def _braced(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start] == '{', or None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _last_boxed(text: str) -> str | None:
    pos, cmd = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if pos < 0:
        return None
    i = pos + len(cmd)
    if i < len(text) and text[i] == "{":
        return _braced(text, i)
    if i < len(text) and text[i] == " ":
        rest = text[i:].lstrip(" ")
        return re.split(r"[\s$]", rest, maxsplit=1)[0] if rest else None
    return None


def _after_answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is None:
        return None
    line = text[last.end() :].split("\n", 1)[0].strip()
    line = line.strip("$ ").rstrip(".").strip("$ ")
    return line or None


def extract_answer(text: str) -> str | None:
    """The final answer in `text` (see module docstring), stripped; None when there is none."""
    if not isinstance(text, str) or not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        boxed = boxed.strip()
        return boxed or None
    return _after_answer_is(text)
