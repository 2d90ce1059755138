"""Evaluation metrics and reports: Pass@1 averaged over k, unbiased pass@k, response lengths, Table 1.

`pass_at_k(n, c, k)` is the unbiased estimator 1 - C(n-c, k) / C(n, k) of
the chance that at least one of k samples is correct, given c correct out of
n samples (Chen et al., 2021). Pass@1 averaged over k samples is its k = 1
case: the mean correctness over all samples of a problem, then over problems.
"""
from __future__ import annotations

import statistics

TITLES = {"math500": "MATH-500", "aime24": "AIME 2024", "amc23": "AMC 2023"}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` of `n` samples correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def _length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "min": 0, "max": 0}
    s = sorted(lengths)
    return {
        "mean": statistics.fmean(s),
        "median": float(statistics.median(s)),
        "p90": float(s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]),
        "min": s[0],
        "max": s[-1],
    }


def summarize(name: str, correct: list[list[bool]], lengths: list[int], finish_reasons: list[str], num_filtered: int) -> dict:
    """Figures of one data set: `correct[p]` holds the n sample verdicts of problem p; `lengths` are response tokens."""
    n = len(correct[0]) if correct else 0
    if any(len(c) != n for c in correct):
        raise ValueError(f"{name}: every problem needs the same number of samples")
    pass_k = {
        f"pass@{k}": statistics.fmean(pass_at_k(n, sum(c), k) for c in correct) if correct else 0.0 for k in k_values(n)
    } if n else {}
    return {
        "dataset": name,
        "num_problems": len(correct),
        "num_filtered": num_filtered,
        "samples_per_problem": n,
        "num_samples": len(lengths),
        "pass@1_avg": pass_k.get("pass@1", 0.0),
        "pass@k": pass_k,
        "response_tokens": _length_stats(lengths),
        "num_truncated": finish_reasons.count("length"),
    }


def markdown_report(model: str, results: list[dict], mode: str = "eval", checker: str = "builtin") -> str:
    """Table 1 (Pass@1 averaged over k, in %) plus a details table per data set and the answer-extraction mode."""
    head = "| Model | " + " | ".join(TITLES.get(r["dataset"], r["dataset"]) for r in results) + " |"
    sep = "| --- |" + " ---: |" * len(results)
    row = f"| {model} | " + " | ".join(f"{100 * r['pass@1_avg']:.1f}" for r in results) + " |"
    lines = [head, sep, row, "", "| data set | problems (filtered) | k | Pass@1 avg | pass@k | mean / p90 / max response tokens | truncated |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in results:
        pk = ", ".join(f"{k}={100 * v:.1f}" for k, v in r["pass@k"].items())
        t = r["response_tokens"]
        lines.append(
            f"| {r['dataset']} | {r['num_problems']} ({r['num_filtered']}) | {r['samples_per_problem']} | "
            f"{100 * r['pass@1_avg']:.1f} | {pk} | {t['mean']:.0f} / {t['p90']:.0f} / {t['max']} | {r['num_truncated']} |"
        )
    lines += ["", f"Answers extracted in `{mode}` mode (from the text after the last `</think>`; a think block "
              f"never closed has no answer), checked by `{checker}`."]
    return "\n".join(lines) + "\n"
