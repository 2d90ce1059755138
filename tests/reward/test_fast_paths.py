"""The checker's fast paths give exactly what its full passes give.

Each fast path skips work whose outcome it can tell in advance: a plain number's normal form and
sympy node (`normalize._plain_form`, `parse._plain_value`), two Rationals' doubles
(`equal._rationals_as_floats`), the unit pass on strings that cannot end in a unit
(`normalize._may_end_in_unit`), the text where no answer line can start (`extract._last_answer_match`),
a linear relation's coefficients (`relations._linear_parts`), splits with nothing to split (`split_top_level`),
a symbol's name without sympy's printer (`parse.symbol_name`), a box's closing brace and label
(`extract._braced_end`, `extract._box_label`), math blocks delimited by `$` alone (`extract._dollar_spans`), answer lines without 'is' (`extract._may_say_is`),
per-expression memos of free symbols, double-precision values, i and unevaluated sums (`equal._TREE_MEMOS`), matrices only after `\\begin`
and a verdict already found (`equal_unguarded`'s memo). The `full_path` fixture turns them all off;
the tests compare outputs and verdicts with and without them, on the project's cases, randomised
numbers and, where `../shared/data` exists, the reward benchmark's samples.
"""
import random

import pytest
import sympy
from answer_forms import FORM_CASES  # noqa: E402 (tests/reward is on sys.path under pytest)
from equivalence_cases import ALL_CASES

from areal_mega.reward import equal, extract, matrices, normalize, parse, relations
from areal_mega.reward.numeric import value_at


@pytest.fixture
def full_path(monkeypatch):
    """Every fast path off (and every memo empty before and after); yields the check without its memo."""
    equal.clear_caches()
    monkeypatch.setattr(normalize, "_plain_form", lambda s: None)
    monkeypatch.setattr(parse, "_plain_value", lambda s: None)
    monkeypatch.setattr(normalize, "_may_end_in_unit", lambda s: True)
    monkeypatch.setattr(equal, "_rationals_as_floats", lambda a, b: None)
    monkeypatch.setattr(extract, "_last_answer_match", _last_match_by_full_scan)
    monkeypatch.setattr(relations, "_linear_parts", relations._expanded_parts)
    monkeypatch.setattr(extract, "_braced_end", _braced_end_by_characters)
    monkeypatch.setattr(extract, "_box_label", lambda text, box: extract._BOX_LABEL.search(text, max(0, box - 40), box))
    monkeypatch.setattr(extract, "_dollar_spans", lambda text: None)
    monkeypatch.setattr(extract, "_may_say_is", lambda line: True)
    monkeypatch.setattr(equal, "_free_symbols", lambda expr: expr.free_symbols)
    monkeypatch.setattr(equal, "_double_value", lambda expr, placed: value_at(expr, dict(placed)))
    monkeypatch.setattr(equal, "_unevaluated", equal._unevaluated.__wrapped__)
    monkeypatch.setattr(equal, "_has_i", equal._has_i.__wrapped__)
    monkeypatch.setattr(equal, "matrix_rows", _matrix_rows_without_guard)
    monkeypatch.setattr(parse, "split_top_level", _split_by_scan)
    monkeypatch.setattr(equal, "split_top_level", _split_by_scan)
    monkeypatch.setattr(relations, "split_top_level", _split_by_scan)
    monkeypatch.setattr(equal, "symbol_name", str)
    monkeypatch.setattr(relations, "symbol_name", str)
    yield equal.equal_unguarded.__wrapped__
    equal.clear_caches()


def _braced_end_by_characters(text: str, start: int, stop: int) -> int | None:
    depth = 0
    for i in range(start, stop):
        depth += text[i] == "{"
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def test_brace_and_box_label_shortcuts_find_what_the_scans_find():
    rng = random.Random(6)
    for _ in range(20000):
        text = "".join(rng.choice("{}ab\\x ") for _ in range(rng.randint(1, 20)))
        if "{" in text:
            start = text.index("{")
            stop = rng.randint(start, len(text))
            assert extract._braced_end(text, start, stop) == _braced_end_by_characters(text, start, stop), text
    parts = ["y_1", "=", " ", "\n", "x", "a", "_{12}", "\\", "$", "b =", "\t", "\u00e9", "\u00a0", "\x1c"]
    for _ in range(20000):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 20))) + "\\boxed{1}"
        box = text.rindex("\\boxed")
        fast, full = extract._box_label(text, box), extract._BOX_LABEL.search(text, max(0, box - 40), box)
        assert (fast and fast.span()) == (full and full.span()), text


def test_dollar_spans_are_the_token_scans():
    atoms = ["$", "$$", "\\$", "\\[", "\\]", "\\(", "\\)", "\\", "x", " ", "\n", "{", "1"]
    rng = random.Random(7)
    fast_taken = 0
    for _ in range(20000):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 16)))
        spans = extract._dollar_spans(text)
        if spans is not None:
            assert spans == _math_spans_by_tokens(text), text
            fast_taken += 1
    assert fast_taken > 1000
    assert extract._dollar_spans("a $x$ b \\] $y") == [(0, 2, 3, 4, 5)] and extract._dollar_spans("$$x$$") is None


def test_is_guard_only_skips_lines_without_a_match():
    atoms = ["is", "are", "equals", "i", "s", "ar", "e", "equal", " ", "\t", "\n", "5", "-", "$", "\\", "(", "x", "IS"]
    rng = random.Random(9)
    for _ in range(20000):
        line = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 10)))
        if not extract._may_say_is(line):
            assert extract._IS.search(line) is None, line


def _math_spans_by_tokens(text: str) -> list[tuple[int, int, int, int, int]]:
    """`extract._math_spans` by its token scan alone (no `_dollar_spans`)."""
    saved = extract._dollar_spans
    extract._dollar_spans = lambda t: None
    try:
        return extract._math_spans(text)
    finally:
        extract._dollar_spans = saved


def _matrix_rows_without_guard(s: str):
    """matrices.matrix_rows without its '\\begin' guard."""
    value = matrices._evaluated(s)
    if value is not None:
        return [[sympy.latex(sympy.simplify(value[i, j])) for j in range(value.cols)] for i in range(value.rows)]
    return matrices._single_rows(s)


def _split_by_scan(s: str, sep: str = ",") -> list[str]:
    """split_top_level without its shortcuts (no `sep` in `s`; no brackets at all): the bracket scan alone."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        if s[i] in "([{":
            depth += 1
        elif s[i] in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    return parts + [s[start:]]


def _plain_spellings(rng: random.Random, n: int) -> list[str]:
    """Random numbers in the spellings models write, and near misses that are not plain numbers."""
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 2000), rng.randint(0, 40)
        sign = rng.choice(["", "-", "+", "- "])
        out += [
            f"{sign}{a}", f"{sign}{a}.{b}", f"{sign}{a}.{b:03d}", f"{sign}.{b}", f"{sign}{a}.", f"{sign}0{a}",
            f"{sign}{a}.000", f"{sign}\\frac{{{a}}}{{{b}}}", f"{sign}\\dfrac{{{a}}}{{{b}}}", f"{sign}\\tfrac{a % 10}{b % 10}",
            f"{sign}{a}/{b}", f"{sign}\\frac{{-{a}}}{{{b}}}", f" {sign}{a} ", f"{a:,}", f"{a}, {b}", f"{a}{{,}}{b:03d}",
            f"{sign}{a % 10}\\frac{{{b % 7}}}{{7}}", f"{a}e{b % 5}", f"{a}\\%", f"{a}\\text{{ cm}}", f"{a}th", f"{a}.{b}\n",
        ]
    return out


def _corpus_strings() -> list[str]:
    strings = [x for p, g, _ in ALL_CASES + FORM_CASES for x in (p, g) if isinstance(x, str)]
    return strings + _plain_spellings(random.Random(0), 300) + ["-0", "+0", "0.0", "-.0", "00.50", "\u0663", "1\u06602"]


def _pairs() -> list[tuple[str, str]]:
    """(pred, gold) pairs: the project's cases both ways and random numbers against each other's spellings."""
    pairs = [(p, g) for p, g, _ in ALL_CASES + FORM_CASES] + [(g, p) for p, g, _ in ALL_CASES + FORM_CASES]
    rng = random.Random(1)
    numbers = _plain_spellings(rng, 60)
    pairs += [(rng.choice(numbers), rng.choice(numbers)) for _ in range(1500)]
    for k in range(0, len(numbers) - 22, 22):  # each spelling of one number against the others
        group = numbers[k : k + 22]
        pairs += [(x, y) for x in group[:12] for y in group[:12]]
    return pairs


def _bench_responses() -> list[tuple[str, str]]:
    try:
        from benchmarks.bench_reward import make_samples

        return list(dict.fromkeys((s[0], s[1]) for s in make_samples(False)))
    except FileNotFoundError:  # no ../shared/data next to this checkout: the other corpora still run
        return []


def test_plain_forms_are_the_full_normal_forms():
    for s in _corpus_strings():
        plain = normalize._plain_form(s)
        if plain is not None:
            assert plain == normalize.normalize_full(s), s
    assert normalize._plain_form("12, 345") is None and normalize._plain_form("+5") is None


def test_plain_values_are_the_parsers_nodes():
    checked = 0
    for s in _corpus_strings():
        t = normalize.normalize_full(s)
        try:
            fast = parse._plain_value(t)
        except parse.ParseError:
            with pytest.raises(parse.ParseError):
                parse.parse_tokens(t)
            continue
        if fast is not None:
            assert sympy.srepr(fast) == sympy.srepr(parse.parse_tokens(t)), t
            checked += 1
    assert checked > 1000


def test_rationals_as_floats_are_value_at():
    rng = random.Random(2)
    for _ in range(2000):
        a = sympy.Rational(rng.randint(-10**6, 10**6), rng.randint(1, 10**6))
        b = sympy.Integer(rng.randint(-10**30, 10**30))
        assert equal._rationals_as_floats(a, b) == (value_at(a, {}).real, value_at(b, {}).real)
    assert equal._rationals_as_floats(sympy.Integer(10) ** 400, sympy.Integer(1)) is None
    assert value_at(sympy.Integer(10) ** 400, {}) is None


def test_split_shortcuts_split_as_the_scan():
    seps = [",", ";", "=", "+", "-", "\\cup", "\\lor", "<", "\\le"]
    for s in _corpus_strings():
        for t in (s, normalize.normalize_full(s)):
            for sep in seps:
                assert parse.split_top_level(t, sep) == _split_by_scan(t, sep), (t, sep)


def test_linear_parts_are_the_expanded_parts():
    x = sympy.Symbol("x")
    numbers = [sympy.Integer(0), sympy.Integer(3), sympy.Integer(-2), sympy.Rational(1, 3), sympy.Float(0.5),
               sympy.oo, -sympy.oo, sympy.zoo, sympy.nan, sympy.pi, sympy.sqrt(2), sympy.I]
    rng = random.Random(4)
    read_off = 0
    for _ in range(600):
        a, b, c = (rng.choice(numbers) for _ in range(3))
        for e in (a * x + b, x * a - b + c, -x + b, a * (x + b), x / 3 + a, a * x + b * x + c, x + b, 2 * x):
            if e.free_symbols != {x}:
                continue
            assert sympy.srepr(relations._linear_parts(e, x)) == sympy.srepr(relations._expanded_parts(e, x)), e
            read_off += 1
    assert read_off > 2000


def test_symbol_names_are_what_the_printer_writes():
    names = {x for p, g, _ in ALL_CASES + FORM_CASES for t in (p, g) if isinstance(t, str)
             for x in (parse.parse_or_none(normalize.normalize(t)) or sympy.Integer(0)).free_symbols}
    names |= {sympy.Symbol(n) for n in ("x_1", "F_n-k-1", "\u03b1", "f_{x}", "_x")} | {sympy.Dummy("x")}
    assert len(names) > 20
    for symbol in names:
        assert parse.symbol_name(symbol) == str(symbol), symbol


def test_percent_guard_is_the_full_search():
    for s in _corpus_strings() + ["50 PERCENT", "5 pct", "50 per cent", "12 Percentage", "\\%", "p"]:
        assert normalize.has_percent(s) == ("%" in s or normalize._PERCENT_WORDS.search(s) is not None), s


def test_unit_guard_only_skips_strings_without_a_unit():
    for s in _corpus_strings() + ["5 cm  ", "5 cm\n", "3 cm^{2}.", "21st", "x \\text{ units}^2", "4 feet."]:
        if not normalize._may_end_in_unit(s):
            assert normalize._TRAILING_UNIT.search(s) is None, s


def test_relation_and_spacing_guards_only_skip_strings_without_one():
    atoms = [r[0] for r in normalize._RELATIONS] + ["\\", "g", "l", "n", "v", "q", "quad", "e", "=", "x", " ", "1", "\\,", "~"]
    rng = random.Random(8)
    strings = _corpus_strings() + ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 8))) for _ in range(20000)]
    for s in strings:
        if not normalize._may_hold_relation(s):
            assert all(old not in s for old, _ in normalize._RELATIONS), s
    assert normalize.normalize_full("1\\qquad 2") == normalize.normalize_full("12")  # \\qquad alone is spacing


def _last_match_by_full_scan(text: str):
    last = None
    for last in extract._ANSWER_LINE.finditer(text):
        pass
    return last


def test_answer_line_candidates_find_the_same_last_match():
    atoms = ["answer", "Answer", "ANSWER", "final answer", "Final Answer", "FINAL ANSWER", "####", "##", " ", "\n",
             "\t", "#", ">", "*", "_", ".", "!", "?", ":", "\uff1a", " is ", "is", "x", "5", "$", "the",
             "an\u017fwer", "\u0130",  # the long s matches "s" under re.IGNORECASE: the non-ASCII path
             ". ", "! ", "? ", "\r", "\f", "\v", "\x1c", "\x1f", "f", "a"]  # lookbehinds, all of re's \s, first letters
    rng = random.Random(3)
    for _ in range(30000):
        text = "".join(rng.choice(atoms) for _ in range(rng.randint(1, 14)))
        full, fast = _last_match_by_full_scan(text), extract._last_answer_match(text)
        assert (fast and fast.span()) == (full and full.span()), text
    assert extract._last_answer_match("x" * 5000 + "\n## Final Answer\n 5").group() == "\n## Final Answer"
    assert extract._last_answer_match("x\x1c#### 5").span() == (2, 7)  # \x1c is whitespace to re's lookbehind


def _verdicts(pairs, responses, check=equal.equal_unguarded):
    equal.clear_caches()
    out = [check(p, g) for p, g in pairs]
    for mode in extract.MODES:
        out += [check(extract.extract_answer(r, mode), g) for r, g in responses]
    equal.clear_caches()
    return out


@pytest.fixture(scope="module")
def corpus():
    responses = _bench_responses() + [(f"so the answer is $\\boxed{{{p}}}$", g) for p, g in _pairs()[:400]]
    return _pairs(), responses


@pytest.fixture(scope="module")
def fast_verdicts(corpus):
    return _verdicts(*corpus)


def test_fast_and_full_paths_give_identical_verdicts(corpus, fast_verdicts, full_path):
    full = _verdicts(*corpus, check=full_path)
    assert len(full) > 10000
    diff = [i for i, (a, b) in enumerate(zip(fast_verdicts, full)) if a != b]
    assert diff == []
    assert any(full) and not all(full)


EDGE_CASES = [
    ("0.5", "1/2", True), ("0.5", "\\frac{1}{2}", True), ("\\dfrac{1}{2}", ".5", True), ("0.50", "0.5", True),
    ("1,000", "1000", True), ("12, 345", "12345", False), ("12{,}345", "12345", True),
    ("-0", "0", True), ("-0.0", "0", True), ("+5", "5", True), ("- 5", "-5", True), ("007", "7", True),
    ("3\\frac14", "3.25", True), ("3\\frac{1}{4}", "\\frac{13}{4}", True), ("3\\frac{1}{4}", "3.5", False),
    ("5.00", "5", True), ("5.", "5", True), ("1.50", "1.5", True), ("10.05", "10.5", False),
    ("0.33", "\\frac{1}{3}", False), ("0.3333", "1/3", True), ("-\\frac{14}{3}", "-4.6667", True),
    ("-\\frac{14}{3}", "\\frac{14}{3}", False), ("3/4", "0.75", True), ("-3/4", "\\frac{-3}{4}", True),
    ("\\frac{-3}{4}", "0.75", False), ("2.5", "5/2", True), ("\\frac{1}{0}", "0", False), ("1/0", "1/0", True),
    ("12346", "12345", False), ("1e3", "1000", True), ("50\\%", "0.5", True), ("50", "0.5", False),
]


@pytest.mark.parametrize("pred, gold, expected", EDGE_CASES)
def test_edge_case_with_fast_paths(pred, gold, expected):
    equal.clear_caches()
    assert equal.equal_unguarded(pred, gold) is expected


@pytest.mark.parametrize("pred, gold, expected", EDGE_CASES)
def test_edge_case_on_the_full_path(pred, gold, expected, full_path):
    assert full_path(pred, gold) is expected


def test_memo_answers_a_repeated_check_without_rechecking():
    equal.clear_caches()
    assert equal.equal_unguarded("\\frac{3}{4}", "0.75") is True
    assert equal.equal_unguarded("\\frac{3}{4}", "0.75") is True
    info = equal.equal_unguarded.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    equal.clear_caches()
