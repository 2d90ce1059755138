"""Find the final answer in a model response (untrusted text), in one of two modes.

`mode="reward"` (training) takes only an answer the model committed to, in
this order:
1. Minerva's `The final answer is $X$. I hope it is correct.` (the last one);
2. the last `\\boxed{...}` / `\\fbox{...}` (nested braces matched) or
   `\\boxed x`; boxes just before it that are separated from it only by
   connectives (`,`, `;`, `and`, `or`, `\\quad`, `\\text{and}`, `$`) belong to
   the same answer and are joined with ", " (`\\boxed{a=3}` and `\\boxed{b=4}`
   is `a=3, b=4`; a repeated box counts once), and so are boxes that a few
   words ending in "and" or "," separate (`\\boxed{1} papers and \\boxed{2} bins`);
   when every joined box has a label just before it (`y_1 = \\boxed{A}` and
   `y_2 = \\boxed{B}`), the labels are kept: `y_1 = A, y_2 = B`;
3. the last answer line: "(the) answer is", "final answer is", `Final Answer:`, GSM8K's `#### 42`,
   `**Answer:**` (bold or not, any case), a `**Final Answer**` heading line. The rest of that line (or the next
   non-empty line when the rest is empty), where math in it
   (`$..$`, `\\(..\\)`, `\\[..\\]`) is taken in preference to the words around it,
   and a sentence of words with one number in it is that number
   (`Final Answer: Jane started 3 hours ago.` is 3). `Final Answer:` may also
   start a sentence in the middle of a line.
There is deliberately no fall-back: an uncommitted response earns nothing.

`mode="eval"` (benchmarks, Table 1) is the Qwen2.5-Math evaluation protocol
as AReaL reported it: the same steps, then its fall-backs, the last math
block (`$$..$$`, `$..$`, `\\[..\\]`, `\\(..\\)`, possibly over several lines)
(with the blocks before it that only connectives separate from it:
`$1$, $2$ or $3$` is `1, 2, 3`) unless a number follows it in the prose, and finally the last number in the text
(`1,000.99`, `2,74` with a decimal comma, `2/3`, `40%`).

Both modes first cut away the reasoning of an R1-style response (`answer_part`): only the
text after the last `</think>` can hold the answer, and a response that opens `<think>` and
never closes it (truncated while thinking) has none. This is what TRL's
`reasoning_accuracy_reward` does (split at the last `</think>`, no `</think>` scores 0) and
what DeepScaleR's reward does (the text after `</think>`; no think block is a format error,
where we read a response without one whole, for models that do not think in tags); AReaL's
current reward hands the whole response to math-verify, so a box inside the reasoning counts
there. The same holds in `eval` mode: an R1-distill model's answer follows `</think>`, and no
evaluation code we read looks inside the reasoning. When the prompt itself opens the block
(the R1-distill chat template ends with `<think>\\n`), a response cut off before `</think>`
holds no tag at all: the trainer and `areal_mega.eval` then score `continue_think(responses)`
(the opening tag put back, `data.templates.opens_think` tells when), so the truncation rule holds.

Everything here is a linear scan: a 1 MB response or 10,000 unbalanced braces
costs a few passes and returns None.
"""
from __future__ import annotations

import re

MODES = ("reward", "eval")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOX = re.compile(r"\\(?:boxed|fbox)")
_MINERVA = "final answer is $"
_MINERVA_END = "$. I hope"
_ANSWER_LINE = re.compile(
    r"(?:final answer|\banswer) is\b[:\s]*|(?:^|(?<=\s))####(?![ \t]*[a-zA-Z#])[ \t]*|(?:^|\n|(?<=[.!?] ))[ \t#>*_]*(?:final answer|answer)[ \t*_]*[:：][ \t*_]*"
    r"|(?:^|\n)[ \t#>*_]*final answer[ \t*_]*(?=\n)",
    re.IGNORECASE,
)
_ANSWER_KEYWORD = re.compile(r"answer|####", re.IGNORECASE)
_IS = re.compile(r"\s(?:is|are|equals)\s+(?=[-\d$\\(])")
_HOPE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_CONNECTIVE = re.compile(
    r"(?:\s|\$|,|;|&|\\\\|\\quad|\\qquad|\\[,;:! ]|\\\[|\\\]|\\\(|\\\)|\band\b|\bor\b"
    r"|\\(?:text|textrm|mathrm|mbox)\s*\{\s*(?:and|or|,|;)?\s*\})*"
)
_MATH_TOKEN = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)")
_CLOSER = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}
# A number in prose: thousands groups (`1,000.99`), a decimal point or comma (`2,74`), `2/3`, `100%`.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_BOX_LABEL = re.compile(r"(?<![\\\w])([a-zA-Z](?:_\{?\w+\}?)?)\s*=\s*$")  # "y_1 = " just before a box
_BRACE = re.compile(r"[{}]")
_LABEL = re.compile(r"[a-zA-Z() ]{0,30}(?:\band|,)")
_WORD = re.compile(r"\b[a-zA-Z]{3,}\b")
_NUMBER = re.compile(r"-?(?:(?P<grouped>[1-9]\d{0,2}(?:,\d{3}(?!\d))+)|\d+)(?:[.,]\d+|/\d+)?%?|-?\.\d+")
MAX_JOINED_BOXES = 10
MAX_CONNECTIVE_CHARS = 60


def _braced_end(text: str, start: int, stop: int) -> int | None:
    """Index just past the brace group opening at text[start] == '{' (within text[:stop]), or None."""
    depth = 0
    for m in _BRACE.finditer(text, start, stop):  # from brace to brace, not character by character
        if m.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def _box_at(text: str, m: re.Match, stop: int) -> tuple[str, int] | None:
    """(content, end) of the box command matched by `m`, looking no further than `stop`."""
    i = m.end()
    if i < stop and text[i] == "{":
        end = _braced_end(text, i, stop)
        return (text[i + 1 : end - 1], end) if end is not None else None
    if i < stop and text[i] == " ":
        rest = text[i:stop].lstrip(" ")
        token = re.split(r"[\s$]", rest, maxsplit=1)[0] if rest else ""
        return (token, stop - len(rest) + len(token)) if token else None
    return None


def _box_label(text: str, box: int) -> re.Match | None:
    """`_BOX_LABEL` in the 40 characters before the box at `box`; looked for only when they end in "="
    (and whitespace), as every match does."""
    window = max(0, box - 40)
    if not text[window:box].rstrip().endswith("="):
        return None
    return _BOX_LABEL.search(text, window, box)


def _labelled_gap(gap: str) -> bool:
    """A few words that end in "and" or ",": `\\boxed{1} papers and \\boxed{2}`, `\\text{ for part (a) and }`."""
    words = _TEXT_WRAPPER.sub(r" \1 ", gap).replace("$", " ").strip()
    return _LABEL.fullmatch(words) is not None


def _boxed(text: str) -> str | None:
    """The last box, joined with the boxes before it that only connectives separate from it."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    starts = list(_BOX.finditer(text))
    parts, labels, stop = [], [], len(text)
    for k in range(len(starts) - 1, max(-1, len(starts) - 1 - MAX_JOINED_BOXES), -1):
        got = _box_at(text, starts[k], stop)
        if got is None:
            break
        content, end = got
        if parts:
            gap = text[end:stop]
            if labels[-1] is not None:  # "y_1 = \\boxed{A} and y_2 = \\boxed{B}": the label is not a gap
                gap = gap[: len(gap) - len(labels[-1].group())]
            if len(gap) > MAX_CONNECTIVE_CHARS or not (_CONNECTIVE.fullmatch(gap) or _labelled_gap(gap)):
                break
        if content.strip():
            parts.append(content.strip())
            labels.append(_box_label(text, starts[k].start()))
        stop = starts[k].start()
    if len(parts) > 1 and all(labels):
        parts = [f"{m.group(1)} = {p}" for m, p in zip(labels, parts)]
    parts = list(dict.fromkeys(reversed(parts)))  # a box repeated ("\\boxed{5} \\boxed{5}") is one answer
    return ", ".join(parts) or None


def math_blocks(text: str) -> list[tuple[str, str]]:
    """[(between-text, content)] of each complete math block in `text`, in order (one linear pass).

    between-text is what precedes the block since the previous one; escaped `\\$` is not a delimiter.
    """
    return [(text[prev:start], text[body:end]) for prev, start, body, end, _ in _math_spans(text)]


def _math_spans(text: str) -> list[tuple[int, int, int, int, int]]:
    """(previous block's end, open start, body start, body end, close end) of each math block."""
    spans = _dollar_spans(text)
    if spans is not None:
        return spans
    blocks, closer, open_end, last_end = [], None, 0, 0
    for m in _MATH_TOKEN.finditer(text):
        tok = m.group()
        if tok == "\\$":
            continue
        if closer is None:
            if tok in _CLOSER:
                closer, open_end, open_start = _CLOSER[tok], m.end(), m.start()
        elif tok == closer:
            blocks.append((last_end, open_start, open_end, m.start(), m.end()))
            closer, last_end = None, m.end()
    return blocks


def _dollar_spans(text: str) -> list[tuple[int, int, int, int, int]] | None:
    """`_math_spans(text)` when its only delimiter is a single `$` (no `\\$`, `$$`, `\\[`, `\\(` anywhere:
    then every `$` is a token and the `\\]`, `\\)` tokens close nothing), by `str.find` instead of the
    token scan: consecutive `$` pairs, an unpaired last one left out; None for any other text."""
    if "$$" in text or "\\$" in text or "\\[" in text or "\\(" in text:
        return None
    blocks, last_end, i = [], 0, text.find("$")
    while i >= 0:
        j = text.find("$", i + 1)
        if j < 0:
            break
        blocks.append((last_end, i, i + 1, j, j + 1))
        last_end = j + 1
        i = text.find("$", last_end)
    return blocks


def _inside_math(line: str, pos: int) -> bool:
    return sum(1 for m in _MATH_TOKEN.finditer(line[:pos]) if m.group() != "\\$") % 2 == 1


def _from_line(rest: str) -> str | None:
    """The answer in the text after an answer phrase: its math if any, else the line's words."""
    rest = rest.lstrip()
    line = rest.split("\n", 1)[0].strip()
    if not line and rest:
        line = rest.strip().split("\n", 1)[0].strip()
    if line.startswith(("$$", "\\[")) and not math_blocks(line):  # display math over several lines
        blocks = math_blocks(rest[:2000])
        if blocks:
            return blocks[0][1].strip() or None
    if not line.isascii() or "hope" in line.lower():  # the closing "I hope it is correct."
        line = _HOPE.sub("", line)
    is_at = [m.end() for m in _IS.finditer(line) if not _inside_math(line, m.start())] if _may_say_is(line) else []
    if is_at:  # "The volume of $V$ is 120": the part after the last "is"
        line = line[is_at[-1] :]
    blocks = math_blocks(line)
    if blocks:
        contents = [c.strip() for _, c in blocks if c.strip()]
        if len(blocks) > 1 and all(len(b) <= MAX_CONNECTIVE_CHARS and _CONNECTIVE.fullmatch(b) for b, _ in blocks[1:]):
            return ", ".join(contents) or None
        return contents[0] if contents else None
    line = re.split(r"\.\s", line, maxsplit=1)[0]  # the first sentence: "6. Then 8." is 6
    line = line.strip("*_ ").rstrip(".").strip("*_ ")
    return _sentence_number(line) or line or None


def _may_say_is(line: str) -> bool:
    """False when `_IS` cannot match `line`: each match holds "is", "are" or "equals"."""
    return "is" in line or "are" in line or "equals" in line


def _sentence_number(line: str) -> str | None:
    """The one number in a sentence of words ("Jane started 3 hours ago" is 3); None otherwise."""
    if len(_WORD.findall(line)) < 3:
        return None  # "x + 3", "3 apples": not a sentence
    numbers = [m for m in re.finditer(r"(?<![\w.^_-])-?\d+(?:\.\d+)?(?![\w.^_])", line)]
    return numbers[0].group() if len(numbers) == 1 and not re.search(r"[=+*/^\\<>]", line) else None


def _keyword_positions(text: str) -> list[int]:
    """Where "answer" (any case) or "####" starts in `text`, in order: every start for an ASCII text
    (`str.find` on its lower case), else `_ANSWER_KEYWORD`'s matches (any case as `re` folds it)."""
    if not text.isascii():
        return [m.start() for m in _ANSWER_KEYWORD.finditer(text)]
    low, found = text.lower(), []
    for word in ("answer", "####"):
        i = low.find(word)
        while i >= 0:
            found.append(i)
            i = low.find(word, i + 1)
    return sorted(found)


def _may_start_answer_line(text: str, p: int) -> bool:
    """False where no `_ANSWER_LINE` match can begin in an ASCII text: one begins with a keyword's first
    letter, a newline, or a `[ \\t#>*_]` run character at the start or after whitespace (its lookbehinds)."""
    c = text[p]
    return c in "fFaA\n" or (c in " \t#>*_" and (p == 0 or text[p - 1].isspace()))  # isspace() is re's \s


def _last_answer_match(text: str) -> re.Match | None:
    """The last match `_ANSWER_LINE.finditer(text)` gives, trying the pattern only where a match can start.

    Every match holds "answer" or "####" at k and starts at k, at "final " before it (k - 6), or in the
    `[ \\t#>*_]` run (and newline) that leads up to either; so the candidates are those windows, tried in
    order as finditer tries every position, each taken match moving on past its end."""
    windows = []
    for k in _keyword_positions(text):
        for end in (k, max(0, k - len("final "))):
            j = end
            while j > 0 and text[j - 1] in " \t#>*_":
                j -= 1
            windows.append((j - 1 if j > 0 and text[j - 1] == "\n" else j, end))
    last, cursor, ascii_text = None, 0, text.isascii()
    for p in sorted({p for lo, hi in windows for p in range(lo, hi + 1)}):
        if p >= cursor and (not ascii_text or _may_start_answer_line(text, p)):
            m = _ANSWER_LINE.match(text, p)
            if m is not None:
                last, cursor = m, m.end()
    return last


def _minerva(text: str) -> str | None:
    i = text.rfind(_MINERVA)
    if i < 0:
        return None
    j = text.find(_MINERVA_END, i + len(_MINERVA))
    if j < 0:
        return None
    return text[i + len(_MINERVA) : j].strip() or None


def _answer_line(text: str) -> str | None:
    last = _last_answer_match(text)
    return _from_line(text[last.end() :]) if last is not None else None


def _last_math_or_number(text: str) -> str | None:
    """The last math block, joined with the blocks before it that only connectives separate from it,
    unless a number follows it in the prose ("$d = 90/n$ ... there are 12")."""
    spans = _math_spans(text)
    if not spans:
        return _last_number(text)
    number = _last_number(text[spans[-1][4] :])
    if number is not None:
        return number
    parts = []
    for k in range(len(spans) - 1, max(-1, len(spans) - 1 - MAX_JOINED_BOXES), -1):
        prev, start, body, end, _ = spans[k]
        parts.append(text[body:end].strip())
        gap = text[prev:start]
        if k == 0 or len(gap) > MAX_CONNECTIVE_CHARS or _CONNECTIVE.fullmatch(gap) is None:
            break
    parts = [p for p in reversed(parts) if p]  # "$1$ and $2$ or $3$" is the list 1, 2, 3
    return ", ".join(parts) or _last_number(text)


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    # "1,000.99" loses its separators; a comma left ("2,74") is a decimal comma
    return last.group().replace(",", "") if last.group("grouped") else last.group().replace(",", ".")


def answer_part(text: str) -> str | None:
    """The part of a response that can hold its answer: the text after the last `</think>`; None when
    `<think>` opens and never closes (cut off while thinking); the whole text when it has neither tag."""
    end = text.rfind(THINK_CLOSE)
    if end >= 0:
        return text[end + len(THINK_CLOSE) :]
    return None if THINK_OPEN in text else text


def continue_think(responses: list[str]) -> list[str]:
    """`responses` to a prompt that ends inside an open `<think>` block, with that tag put back in front."""
    return [THINK_OPEN + r for r in responses]


def extract_answer(text: str, mode: str = "reward") -> str | None:
    """The final answer in `text` under `mode` ("reward" or "eval", see module docstring); None when there is none."""
    if mode not in MODES:
        raise ValueError(f"extract_answer: mode must be one of {MODES}, got {mode!r}")
    if not isinstance(text, str) or not text:
        return None
    text = answer_part(text)
    if not text:
        return None
    for find in (_minerva, _boxed, _answer_line):
        got = find(text)
        if got is not None:
            return got
    if mode == "eval":
        return _last_math_or_number(text)
    return None
