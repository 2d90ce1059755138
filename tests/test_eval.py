"""Evaluation: pass@k maths, report structure, and an end-to-end run on two reference servers."""
import json
import math

import pytest

from areal_mega.config import ConfigError, load_config
from areal_mega.data import data_dir, load_jsonl
from areal_mega.eval import EvalConfig, main, score_dataset
from areal_mega.eval_report import k_values, markdown_report, pass_at_k
from areal_mega.reward import RewardConfig, RewardPool

needs_data = pytest.mark.skipif(not (data_dir() / "math500.jsonl").is_file(), reason=f"shared data absent at {data_dir()}")


def test_pass_at_k_matches_combinatorics():
    for n, c, k in [(10, 3, 1), (10, 3, 4), (32, 1, 8), (5, 0, 2), (5, 5, 5), (8, 6, 3)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(4, 1, 1) == 0.25 and pass_at_k(4, 1, 4) == 1.0
    assert k_values(32) == [1, 2, 4, 8, 16, 32] and k_values(3) == [1, 2, 3]
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="eval.model_dir"):
        EvalConfig()
    with pytest.raises(ValueError, match="eval.k"):
        EvalConfig(model_dir="m", k=0)
    with pytest.raises(ConfigError, match="eval.top_p"):
        main(["--model", "m", "top_p=1.5"])


def test_eval_extracts_in_eval_mode_and_says_so(tmp_path):
    assert EvalConfig(model_dir="m").reward.mode == "eval"
    cfg = tmp_path / "e.yaml"
    cfg.write_text("model_dir: m\nreward:\n  num_workers: 1\n")
    assert load_config(EvalConfig, cfg).reward.mode == "eval"
    assert RewardConfig().mode == "reward"  # training keeps committed answers only
    assert "Answers extracted in `eval` mode" in markdown_report("m", [], "eval")
    assert "after the last `</think>`" in markdown_report("m", [], "eval")  # the think policy, stated


@needs_data
def test_injected_correct_responses_score_through_the_scorer_path():
    records = load_jsonl("math500")[:10]
    k = 4
    # problem i gets i % 5 correct responses out of 4 (capped): known Pass@1 and pass@k
    responses, n_correct = [], []
    for i, rec in enumerate(records):
        c = min(i % 5, k)
        n_correct.append(c)
        responses += [f"... so \\boxed{{{rec.answer}}}"] * c + ["\\boxed{not an answer}"] * (k - c)
    lengths = [len(r) for r in responses]
    with RewardPool(RewardConfig(num_workers=2)) as pool:
        summary, rows = score_dataset("math500", records, responses, lengths, ["stop"] * len(responses), k, pool)
    assert [r["correct"] for r in rows] == [j % k < n_correct[j // k] for j in range(len(responses))]
    assert summary["pass@1_avg"] == pytest.approx(sum(n_correct) / (k * len(records)))
    assert summary["pass@k"]["pass@4"] == pytest.approx(sum(c > 0 for c in n_correct) / len(records))
    assert summary["response_tokens"]["max"] == max(lengths)
    md = markdown_report("m", [summary])
    assert f"| m | {100 * summary['pass@1_avg']:.1f} |" in md and "MATH-500" in md


@needs_data
@pytest.mark.slow
@pytest.mark.multirank
def test_eval_end_to_end_two_reference_servers(tiny_qwen2_dir, tmp_path):
    out = tmp_path / "eval"
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model_dir: {tiny_qwen2_dir}\nnum_servers: 2\ntemplate: quickstart\nmax_prompt_tokens: 300\n"
                   "max_new_tokens: 12\nlimit: 10\nreward:\n  num_workers: 1\n")
    report = main(["--config", str(cfg), "--data", "math500", "-k", "3", "--output-dir", str(out), "--quiet"])
    [res] = report["results"]
    assert res["dataset"] == "math500" and res["samples_per_problem"] == 3
    assert res["num_filtered"] >= 1  # some MATH-500 problems are longer than 300 characters
    assert res["num_problems"] + res["num_filtered"] == 10
    assert res["num_samples"] == 3 * res["num_problems"]
    assert 0 < res["response_tokens"]["max"] <= 12 and res["num_truncated"] <= res["num_samples"]
    assert 0.0 <= res["pass@1_avg"] <= res["pass@k"]["pass@3"] <= 1.0
    assert report["config"]["temperature"] == 0.6 and report["config"]["top_p"] == 0.95
    assert report["extraction_mode"] == "eval" and report["config"]["reward"]["mode"] == "eval"
    assert report["checker"] == "builtin" and report["checker_disagreement_rate"] == 0.0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["results"] == report["results"]
    rows = [json.loads(line) for line in (out / "samples_math500.jsonl").read_text().splitlines()]
    assert len(rows) == res["num_samples"] and {r["sample"] for r in rows} == {0, 1, 2}
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(res["pass@1_avg"])
    assert "MATH-500" in (out / "eval.md").read_text()


def test_prompts_that_open_think_score_an_unfinished_reasoning_wrong():
    from areal_mega.data import MathRecord

    records = [MathRecord("0", "q", "42", "t")]
    # finished thinking then answered; cut off while thinking with a box in the reasoning; no tags, boxed
    responses = ["so 42.\n</think>\nThe answer is \\boxed{42}", "try \\boxed{42} then check", "\\boxed{41}"]
    with RewardPool(RewardConfig(num_workers=1, mode="eval")) as pool:
        _, opened = score_dataset("t", records, responses, [1, 1, 1], ["stop", "length", "stop"], 3, pool,
                                  opens_think=True)
        _, plain = score_dataset("t", records, responses, [1, 1, 1], ["stop", "length", "stop"], 3, pool)
    assert [r["correct"] for r in opened] == [True, False, False]
    assert [r["correct"] for r in plain] == [True, True, False]
    assert opened[1]["response"] == responses[1]  # the samples file keeps the response as generated
