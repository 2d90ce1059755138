"""Reward checker: agreement with HF math-verify on the real gold answers, false positives / negatives, answers/s.

Gold answers: all of MATH-500, AIME 2024 and AMC 2023 (570, `areal_mega.data`).
Each gold yields the rewrites a model actually produces, all equivalent by
construction (label True): the gold verbatim, `\\dfrac`, plain `a/b`,
spacing and `\\left( \\right)`, a decimal for a terminating fraction, `x = G`,
thousands separators, units added (`\\text{ cm}`, `\\$`, `^\\circ`), intervals
written as inequalities, lists and sets reordered, a mixed number; and wrong
answers (label False): another problem's answer, an integer in it off by one,
an interval bracket flipped, a list with one element dropped, a tuple
swapped, the sign flipped. Each answer is put in a response in one of four
committed styles (`\\boxed{}`, Minerva's "The final answer is $G$. I hope it is
correct.", `**Final Answer:** $G$`, "the answer is $G$").

Checked in one run by the same RewardPool (2 workers, 5 s time-out) with
`reward.checker` builtin (ours), math_verify and both; "both" verdicts are
the OR of the first two, its answers/s is timed on a subset. Ours takes
seconds, so its answers/s is the median of five passes with fresh workers;
math-verify's single pass takes minutes. Reports, per
checker: accuracy against the labels, false positives, false negatives
(and the rate), agreement of ours with math-verify, answers/s, and the false
negatives by rewrite kind. The speed ratio is also measured paired: three
rounds of our full pass timed right before a full math-verify pass, so that
both see the same load; the median of the three ratios. And as cost: the
workers' CPU time per answer for each checker (read from /proc, so it moves
little with the load; ours the median of five passes with fresh workers, as one
pass lasts a fraction of a second), on these samples (identical (response, gold) pairs are
checked once by the pool: `distinct_checks`) and on an RL-like batch: 8
distinct responses per problem to its one gold, their answers drawn from that
gold's cases (the gold repeats 8 times; a response repeats only where two
problems share a gold). Last, math-verify as a user calls it (one process, its
defaults, every sample parsed and verified): its CPU per answer against our
workers'.
"""
from __future__ import annotations

import random
import re
import statistics
import time
from collections import Counter
from fractions import Fraction

from areal_mega.data import load_jsonl
from areal_mega.reward import RewardConfig, RewardPool
from areal_mega.reward.mathverify import available as math_verify_available

DATASETS = ("math500", "aime24", "amc23")
_FRAC = re.compile(r"\\frac\{([^{}]+)\}\{([^{}]+)\}")
_INT = re.compile(r"\d+")
_THOUSANDS = re.compile(r"^\\?\$?-?\d{1,3}(?:,(?:\\!)?\s*\d{3})+(?:\.\d+)?$")
_INTERVAL = re.compile(r"^\s*(\(|\[)\s*([^,()\[\]]+?)\s*,\s*([^,()\[\]]+?)\s*(\)|\])\s*$")


def _top_split(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return [p.strip() for p in parts + [s[start:]]]


def _is_int(s: str) -> bool:
    return re.fullmatch(r"-?\d+", s) is not None


def _inequality(interval: str, var: str = "x") -> str | None:
    m = _INTERVAL.match(interval)
    if not m:
        return None
    lo_b, lo, hi, hi_b = m.groups()
    lo_inf, hi_inf = "infty" in lo, "infty" in hi
    if lo_inf and hi_inf:
        return None
    lo_op = "\\le" if lo_b == "[" else "<"
    hi_op = "\\le" if hi_b == "]" else "<"
    if lo_inf:
        return f"{var} {hi_op} {hi}"
    if hi_inf:
        return f"{var} {'>=' if lo_b == '[' else '>'} {lo}"
    return f"{lo} {lo_op} {var} {hi_op} {hi}"


def rewrites(gold: str) -> list[tuple[str, str]]:
    """[(kind, answer)] equivalent to `gold` (each kind only where it changes the string)."""
    g = gold.strip()
    out = [("verbatim", g)]
    if "\\frac" in g:
        out.append(("dfrac", g.replace("\\frac", "\\dfrac")))
        plain = _FRAC.sub(lambda m: f"({m[1]})/({m[2]})" if re.search(r"[-+ ]", m[1] + m[2]) else f"{m[1]}/{m[2]}", g)
        if "\\frac" not in plain and "/" in plain and not re.search(r"[\^_]|\d\s*\d+/", plain):
            out.append(("plain_frac", plain))
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        value = Fraction(int(m[2]), int(m[3])) * (-1 if m[1] else 1)
        den = value.denominator
        while den % 2 == 0:
            den //= 2
        while den % 5 == 0:
            den //= 5
        if den == 1:
            out.append(("decimal", str(float(value))))
        if abs(value) > 1 and value.denominator > 1:
            whole, rest = divmod(abs(value.numerator), value.denominator)
            out.append(("mixed_number", f"{m[1]}{whole}\\frac{{{rest}}}{{{value.denominator}}}"))
    number = _THOUSANDS.match(g) is not None  # "10,\\!080" is one number, not a list
    spaced = g if number else re.sub(r"\s*([,+=])\s*", r" \1 ", g).replace("( ", "(").strip()
    spaced = re.sub(r"(?<=[\w}])-", " - ", spaced)
    if spaced != g:
        out.append(("spacing", spaced))
    if g.startswith("(") and g.endswith(")") and "\\left" not in g and g.count("(") == 1:
        out.append(("left_right", "\\left(" + g[1:-1] + "\\right)"))
    single = len(_top_split(g)) == 1 and "=" not in g and "\\in" not in g
    if _is_int(g):
        out.append(("decimal", f"{g}.0"))
        if len(g.lstrip("-")) >= 4:
            out.append(("thousands", f"{int(g):,}"))
            out.append(("thousands_braces", f"{int(g):,}".replace(",", "{,}")))
        out.append(("units", random.Random(g).choice([f"{g}\\text{{ cm}}", f"{g} \\text{{ units}}"] + ([f"\\${g}"] if g[0] != "-" else []))))
    if re.fullmatch(r"-?\d+\^\\circ", g):
        out.append(("units", g.replace("^\\circ", "^{\\circ}")))
        out.append(("units", g.replace("^\\circ", " \\text{ degrees}")))
    if single and not g.startswith("\\text") and "\\begin" not in g:
        out.append(("x_equals", f"x = {g}"))
    parts = [p.strip() for p in g.split("\\cup")]
    ineqs = [_inequality(p) for p in parts]
    if all(ineqs) and len(ineqs) <= 2 and re.search(r"\[|\]|\\infty|\\cup", g):  # (15,-29) is a point
        out.append(("inequality", " \\text{ or } ".join(ineqs)))
    items = _top_split(g[2:-2] if g.startswith("\\{") and g.endswith("\\}") else g)
    if len(items) > 1 and not number and not (g.startswith(("(", "[")) and g.endswith((")", "]"))) \
            and len(set(items)) == len(items):
        body = ", ".join(reversed(items))
        out.append(("reordered", f"\\{{{body}\\}}" if g.startswith("\\{") else body))
    return out


def wrongs(gold: str, others: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """[(kind, answer)] not equivalent to `gold`."""
    g = gold.strip()
    out = []
    other = rng.choice(others)
    for _ in range(20):
        if other.strip() != g and not (_is_int(other) and _is_int(g) and int(other) == int(g)):
            break
        other = rng.choice(others)
    out.append(("other_gold", other))
    ints = list(_INT.finditer(g))
    if ints:  # the first integer: the last may be a unit's exponent ("cm}^2")
        m = ints[0]
        out.append(("off_by_one", g[: m.start()] + str(int(m.group()) + 1) + g[m.end() :]))
    if _INTERVAL.match(g) or "\\cup" in g:
        ends = [i for i, ch in enumerate(g) if ch in ")]" and not g[:i].rstrip().endswith("\\infty")]
        if ends:  # a bracket at a finite end (at infinity it would not change the set)
            i = ends[0]
            out.append(("bracket_flip", g[:i] + ("]" if g[i] == ")" else ")") + g[i + 1 :]))
    items = _top_split(g[2:-2] if g.startswith("\\{") and g.endswith("\\}") else g)
    if len(items) > 1 and not g.startswith(("(", "[")) and _THOUSANDS.match(g) is None:
        out.append(("partial", ", ".join(items[:-1])))
    if g.startswith("(") and g.endswith(")") and len(items := _top_split(g[1:-1])) >= 2 and items[0] != items[1]:
        out.append(("swapped_tuple", "(" + ", ".join([items[1], items[0]] + items[2:]) + ")"))
    if len(_top_split(g)) == 1 and g not in ("0", "-0") and not g.startswith(("\\text", "\\begin", "(", "[")):
        out.append(("sign", g[1:] if g.startswith("-") else f"-({g})" if re.search(r"[-+]", g) else f"-{g}"))
    return out


_STYLES = (
    "We simplify step by step, and so the answer is $\\boxed{{{a}}}$.",
    "Collecting the cases gives the result.\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    "Putting it together.\n\n**Final Answer:** ${a}$",
    "After checking the edge cases, the answer is ${a}$.",
)


def make_samples(quick: bool, seed: int = 0) -> list[tuple[str, str, bool, str]]:
    """[(response, gold, label, kind)] over all gold answers of DATASETS."""
    rng = random.Random(seed)
    golds = [rec.answer for name in DATASETS for rec in load_jsonl(name)]
    samples = []
    for i, gold in enumerate(golds):
        cases = [(k, a, True) for k, a in rewrites(gold)] + [(k, a, False) for k, a in wrongs(gold, golds, rng)]
        if quick:
            cases = [rng.choice([c for c in cases if c[2]]), rng.choice([c for c in cases if not c[2]])]
        for j, (kind, answer, label) in enumerate(cases):
            samples.append((_STYLES[(i + j) % len(_STYLES)].format(a=answer), gold, label, kind))
    return samples


def _run(checker: str, responses: list[str], golds: list[str]) -> tuple[list[bool], float, dict]:
    with RewardPool(RewardConfig(num_workers=2, timeout_s=5.0, checker=checker)) as pool:
        pool.correct(responses[:4], golds[:4])  # workers up
        t0 = time.perf_counter()
        verdicts = pool.correct(responses, golds)
        seconds = time.perf_counter() - t0
        return verdicts, seconds, dict(pool.stats)


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds the processes `pids` have run so far (Linux /proc/PID/schedstat, nanoseconds)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def _worker_cpu_us(checker: str, responses: list[str], golds: list[str], passes: int = 1) -> float:
    """CPU microseconds per answer spent in the workers over one full pass (started and warmed up first):
    unlike answers/s it does not move much with the other engineers' load. Fresh workers, so the
    checker's caches start empty. With `passes` > 1, the median of that many passes, each with fresh
    workers: our pass takes a fraction of a second, so one pass catches a load spike whole."""
    per_pass = []
    for _ in range(passes + 3):  # a pass whose worker was replaced (a time-out under load) is measured again
        with RewardPool(RewardConfig(num_workers=2, timeout_s=5.0, checker=checker)) as pool:
            pool.correct(responses[:4], golds[:4])
            pids = pool.worker_pids()
            before = _cpu_s(pids)
            pool.correct(responses, golds)
            if pool.worker_pids() == pids:
                per_pass.append(1e6 * (_cpu_s(pids) - before) / len(responses))
        if len(per_pass) == passes:
            return statistics.median(per_pass)
    raise RuntimeError(f"a reward worker was replaced in {passes + 3 - len(per_pass)} of {passes + 3} CPU measurement passes")


def _math_verify_standalone_cpu_us(responses: list[str], golds: list[str]) -> float:
    """CPU microseconds per answer of math-verify as a user calls it: in this process, its defaults
    (its own time-outs included), `parse` of the gold and of the response, then `verify`, for every
    sample (no pool, no de-duplication, no caches of ours). Its first call's imports are paid before."""
    from math_verify import parse, verify

    from areal_mega.reward.mathverify import _as_latex

    verify(parse("$1$"), parse("so \\boxed{1}"))
    t0 = time.process_time()
    for response, gold in zip(responses, golds):
        try:
            verify(parse(_as_latex(gold)), parse(response))
        except Exception:  # noqa: BLE001 - counted as wrong, as a user's try/except would
            pass
    return 1e6 * (time.process_time() - t0) / len(responses)


def make_rl_batch(samples: list[tuple[str, str, bool, str]], per_gold: int = 8, seed: int = 2) -> tuple[list[str], list[str]]:
    """(responses, golds): for each problem, `per_gold` distinct responses (a numbered attempt) to its gold,
    the answers drawn with replacement from that problem's cases in `samples` (consecutive, same gold)."""
    rng = random.Random(seed)
    groups: list[list[tuple[str, str, bool, str]]] = []
    for sample in samples:
        if groups and groups[-1][0][1] == sample[1]:
            groups[-1].append(sample)
        else:
            groups.append([sample])
    responses, golds = [], []
    for group in groups:
        for k in range(per_gold):
            responses.append(f"Attempt {k + 1}: we work through the problem.\n" + rng.choice(group)[0])
            golds.append(group[0][1])
    return responses, golds


def _score(name: str, verdicts: list[bool], labels: list[bool], kinds: list[str], seconds: float) -> dict:
    fp = sum(v and not y for v, y in zip(verdicts, labels))
    fn = sum(y and not v for v, y in zip(verdicts, labels))
    positives = sum(labels)
    fn_kinds = Counter(k for v, y, k in zip(verdicts, labels, kinds) if y and not v)
    fp_kinds = Counter(k for v, y, k in zip(verdicts, labels, kinds) if v and not y)
    return {
        f"{name}_accuracy": sum(v == y for v, y in zip(verdicts, labels)) / len(labels),
        f"{name}_false_positives": fp,
        f"{name}_false_negatives": fn,
        f"{name}_false_negative_rate": fn / positives if positives else 0.0,
        f"{name}_answers_per_s": len(labels) / seconds if seconds else 0.0,
        f"{name}_fn_by_kind": ", ".join(f"{k}={n}" for k, n in fn_kinds.most_common()) or "-",
        f"{name}_fp_by_kind": ", ".join(f"{k}={n}" for k, n in fp_kinds.most_common()) or "-",
    }


def main(quick: bool) -> dict:
    samples = make_samples(quick)
    responses, golds = [s[0] for s in samples], [s[1] for s in samples]
    labels, kinds = [s[2] for s in samples], [s[3] for s in samples]
    # Ours finishes in seconds, so one pass measures the other engineers' load as much as the checker:
    # the median of five passes, each with fresh workers (the memo caches start empty).
    passes = [_run("builtin", responses, golds) for _ in range(5)]
    ours, _, stats = passes[0]
    ours_s = statistics.median(p[1] for p in passes)
    figures = {"samples": len(samples), "equivalent": sum(labels), "wrong": len(labels) - sum(labels),
               "problems": sum(len(load_jsonl(name)) for name in DATASETS), "distinct_golds": len(set(golds)),
               "distinct_checks": len(set(zip(responses, golds))), "pool_workers": 2, "ours_timeouts": stats["timeouts"]}
    figures.update(_score("ours", ours, labels, kinds, ours_s))
    if not math_verify_available():
        figures["math_verify"] = "not installed"
        return figures
    ours_paired_s = _run("builtin", responses, golds)[1]  # timed right before math-verify: paired round 1
    mv, mv_s, mv_stats = _run("math_verify", responses, golds)
    figures["math_verify_timeouts"] = mv_stats["timeouts"]
    figures.update(_score("math_verify", mv, labels, kinds, mv_s))
    subset = sorted(random.Random(1).sample(range(len(samples)), min(len(samples), 300)))
    _, both_s, _ = _run("both", [responses[i] for i in subset], [golds[i] for i in subset])
    both = [a or b for a, b in zip(ours, mv)]
    figures.update(_score("both", both, labels, kinds, 0.0))
    figures["both_answers_per_s"] = len(subset) / both_s
    figures["agreement_ours_math_verify"] = sum(a == b for a, b in zip(ours, mv)) / len(samples)
    figures["ours_speedup_vs_math_verify"] = figures["ours_answers_per_s"] / figures["math_verify_answers_per_s"]
    # The ratio above divides a median of five short passes by one pass of minutes, so the others' load
    # moves it a lot (44x to 150x within 15 minutes). Paired: in each of three rounds our full pass is
    # timed right before a full math-verify pass (the first is the one above), so both see the same
    # load; the median of the round ratios.
    ratios = [len(samples) / ours_paired_s / figures["math_verify_answers_per_s"]]
    for _ in range(2):
        ours_rate = len(samples) / _run("builtin", responses, golds)[1]
        ratios.append(ours_rate / (len(samples) / _run("math_verify", responses, golds)[1]))
    figures["ours_speedup_vs_math_verify_paired"] = statistics.median(ratios)
    figures["paired_ratios"] = ", ".join(f"{r:.0f}" for r in ratios)
    figures["ours_worker_cpu_us_per_answer"] = _worker_cpu_us("builtin", responses, golds, passes=5)
    figures["math_verify_worker_cpu_us_per_answer"] = _worker_cpu_us("math_verify", responses, golds)
    figures["math_verify_cpu_per_answer_over_ours"] = (figures["math_verify_worker_cpu_us_per_answer"]
                                                      / figures["ours_worker_cpu_us_per_answer"])
    figures["math_verify_standalone_cpu_us_per_answer"] = _math_verify_standalone_cpu_us(responses, golds)
    figures["math_verify_standalone_cpu_over_ours"] = (figures["math_verify_standalone_cpu_us_per_answer"]
                                                      / figures["ours_worker_cpu_us_per_answer"])
    rl_responses, rl_golds = make_rl_batch(samples)
    figures["rl_batch_samples"] = len(rl_responses)
    figures["rl_batch_distinct_checks"] = len(set(zip(rl_responses, rl_golds)))
    figures["ours_rl_batch_worker_cpu_us_per_answer"] = _worker_cpu_us("builtin", rl_responses, rl_golds, passes=5)
    figures["math_verify_rl_batch_worker_cpu_us_per_answer"] = _worker_cpu_us("math_verify", rl_responses, rl_golds)
    figures["rl_batch_math_verify_cpu_per_answer_over_ours"] = (figures["math_verify_rl_batch_worker_cpu_us_per_answer"]
                                                               / figures["ours_rl_batch_worker_cpu_us_per_answer"])
    return figures
