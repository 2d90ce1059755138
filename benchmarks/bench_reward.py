"""Reward throughput: our worker pool vs in-process checks vs HF math-verify, on the same mixed samples.

Samples (10,000; 1,000 with --quick) pair gold answers from MATH-500 and
DeepScaleR (synthetic arithmetic if the shared data is absent) with responses
of six kinds: the gold verbatim in \\boxed{}, an equivalent rewrite, another
problem's answer, no answer, a long rambling response, and a hostile one.
Reports answers/s of each path, the pool's speed-up over in-process checks,
agreement with math-verify (where it is installed; it is slow, so it checks a
seeded random subset of the same samples, in a child process under a memory
limit), and peak memory.
"""
from __future__ import annotations

import logging
import random
import resource
import time

from areal_mega.data import data_dir, load_jsonl, synthetic_split
from areal_mega.reward import RewardConfig, RewardPool, extract_answer
from areal_mega.reward.equal import equal_unguarded


def _golds() -> list[str]:
    if (data_dir() / "math500.jsonl").is_file():
        return [r.answer for r in load_jsonl("math500") + load_jsonl("deepscaler_train")[:3000]]
    return [r.answer for r in synthetic_split()[0]]


def _rewrite(gold: str) -> str:
    if gold.lstrip("-").isdigit():
        return random.choice([f"x = {gold}", f"{gold}.0", f"\\frac{{{2 * int(gold)}}}{{2}}", f"{gold}\\text{{ units}}"])
    return random.choice([f"${gold}$", f"\\left({gold}\\right)" if "," not in gold else gold, f" {gold} "])


def make_samples(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    random.seed(seed)
    golds = _golds()
    responses, targets = [], []
    for i in range(n):
        gold = random.choice(golds)
        kind = i % 6
        if kind == 0:
            resp = f"Let me think. Adding things up, we get \\boxed{{{gold}}}."
        elif kind == 1:
            resp = f"Working... The final answer is \\boxed{{{_rewrite(gold)}}}"
        elif kind == 2:
            resp = f"Hence \\boxed{{{random.choice(golds)}}}."
        elif kind == 3:
            resp = "I am not sure how to finish this problem."
        elif kind == 4:
            resp = "We expand step by step. " * 400 + f"So the answer is \\boxed{{{gold}}}"
        else:
            resp = random.choice(["\\boxed{10^{10^{10^{10}}}}", "\\boxed{__import__('os').system('true')}",
                                  "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}"])
        responses.append(resp)
        targets.append(gold)
    return responses, targets


def _limit_memory(mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def _math_verify_guarded(responses: list[str], golds: list[str]) -> list[bool] | None:
    """math-verify in a child process under a 4 GiB address-space limit (it reached 8.8 GB in-process)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_limit_memory, initargs=(4096,)) as ex:
        return ex.submit(_math_verify, responses, golds).result()


def _math_verify(responses: list[str], golds: list[str]) -> list[bool] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every hostile input in full
    out = []
    for resp, gold in zip(responses, golds):
        try:
            out.append(bool(verify(parse(f"${gold}$"), parse(resp))))
        except Exception:  # math-verify raises on some hostile inputs (MemoryError too); count as wrong
            out.append(False)
    return out


def main(quick: bool) -> dict:
    n, mv_samples = (1000, 200) if quick else (10_000, 1000)
    responses, golds = make_samples(n)
    with RewardPool(RewardConfig(num_workers=2, timeout_s=5.0)) as pool:
        pool.correct(responses[:20], golds[:20])  # workers up
        t0 = time.perf_counter()
        ours = pool.correct(responses, golds)
        pool_s = time.perf_counter() - t0
        stats = dict(pool.stats)
    t0 = time.perf_counter()
    inline = [equal_unguarded(extract_answer(r), g) for r, g in zip(responses, golds)]
    inline_s = time.perf_counter() - t0
    peak_before_mv = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # math-verify ran at ~1.6 answers/s here, so it sees a seeded random subset of the same samples.
    subset = sorted(random.Random(1).sample(range(n), min(n, mv_samples)))
    t0 = time.perf_counter()
    mv = _math_verify_guarded([responses[i] for i in subset], [golds[i] for i in subset])
    mv_s = time.perf_counter() - t0
    ours_sub = [ours[i] for i in subset]
    figures = {
        "samples": n,
        "pool_workers": 2,
        "pool_answers_per_s": n / pool_s,
        "inprocess_answers_per_s": n / inline_s,
        "pool_speedup_vs_inprocess": inline_s / pool_s,
        "ours_accuracy_rate": sum(ours) / n,
        "pool_inprocess_agreement": sum(a == b for a, b in zip(ours, inline)) / n,
        "pool_timeouts": stats["timeouts"],
        "pool_crashes": stats["crashes"],
        "peak_rss_parent_mb": peak_before_mv,
        "peak_rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if mv is not None:
        figures.update({
            "math_verify_samples": len(subset),
            "math_verify_answers_per_s": len(subset) / mv_s,
            "math_verify_accuracy_rate": sum(mv) / len(subset),
            "ours_accuracy_rate_on_subset": sum(ours_sub) / len(subset),
            "agreement_with_math_verify": sum(a == b for a, b in zip(ours_sub, mv)) / len(subset),
            "pool_speedup_vs_math_verify": (n / pool_s) / (len(subset) / mv_s),
        })
    return figures
