"""Evaluate a model on math benchmarks: `python -m areal_mega.eval --config FILE --data math500,aime24,amc23 -k 32`.

For each data set: render and tokenize the prompts (over-long ones are
dropped and counted), draw k samples per problem at temperature T / top_p on
generation servers (running ones from `urls`, or `num_servers` launched here
from `model_dir`), score every sample with the reward worker pool, and report
Pass@1 averaged over k, unbiased pass@k and response-length statistics.
Answers are extracted in `reward.mode` "eval" by default (the Qwen protocol
with its fall-backs); the report records the mode and checker used.
Writes `<output_dir>/eval.json`, `eval.md` (Table-1 style) and
`samples_<data set>.jsonl` (every response with its verdict). Defaults are
AReaL v0.1's: k = 32, T = 0.6, top_p = 0.95, MATH-500 / AIME 2024 / AMC 2023.
Extra `key=value` arguments override the config file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from areal_mega.config import load_config, to_dict
from areal_mega.data.config import TEMPLATES
from areal_mega.data.jsonl import load_jsonl
from areal_mega.data.templates import build_prompts
from areal_mega.eval_report import markdown_report, summarize
from areal_mega.reward.config import RewardConfig
from areal_mega.reward.extract import continue_think
from areal_mega.reward.pool import RewardPool


@dataclass
class EvalConfig:
    """model_dir: HF directory (tokenizer; servers launched from it when `urls` is empty).
    data: data set names or .jsonl paths; limit: first N problems of each (0 = all).
    k: samples per problem; temperature / top_p / top_k / max_new_tokens: sampling.
    reward: the checker; reward.mode defaults to "eval" here (the Qwen protocol with its
        fall-backs, as AReaL's Table 1), where training uses "reward" (committed answers only).
    """

    model_dir: str = ""
    urls: list[str] = field(default_factory=list)
    backend: str = "reference"
    num_servers: int = 1
    api_key: Optional[str] = None
    data: list[str] = field(default_factory=lambda: ["math500", "aime24", "amc23"])
    limit: int = 0
    template: str = "r1_distill"
    max_prompt_tokens: int = 2048
    k: int = 32
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = -1
    max_new_tokens: int = 32768
    max_concurrency: int = 256
    output_dir: str = "eval_results"
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(mode="eval"))

    def __post_init__(self):
        if not self.model_dir:
            raise ValueError("eval.model_dir is required (the tokenizer, and the model when servers are launched)")
        if not self.data:
            raise ValueError("eval.data must name at least one data set")
        if self.template not in TEMPLATES:
            raise ValueError(f"eval.template must be one of {TEMPLATES}, got {self.template!r}")
        for name in ("k", "num_servers", "max_new_tokens", "max_prompt_tokens", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.limit < 0:
            raise ValueError(f"eval.limit must be >= 0, got {self.limit}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"eval.temperature must be >= 0 and eval.top_p in (0, 1], got {self.temperature}, {self.top_p}")

    def sampling_params(self, eos_token_id: int | None) -> dict:
        params = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                  "max_new_tokens": self.max_new_tokens}
        if eos_token_id is not None:
            params["stop_token_ids"] = [int(eos_token_id)]
        return params


def score_dataset(name: str, records, responses: list[str], lengths: list[int], finish_reasons: list[str],
                  k: int, pool: RewardPool, num_filtered: int = 0, opens_think: bool = False) -> tuple[dict, list[dict]]:
    """(summary, per-sample rows) for `records` with k consecutive `responses` each; `opens_think`: the
    prompts ended inside `<think>`, so each response is scored with that tag in front (`continue_think`)."""
    if len(responses) != k * len(records):
        raise ValueError(f"{name}: {len(responses)} responses for {len(records)} problems x k={k}")
    golds = [rec.answer for rec in records for _ in range(k)]
    verdicts = pool.correct(continue_think(responses) if opens_think else responses, golds)
    correct = [verdicts[i * k : (i + 1) * k] for i in range(len(records))]
    rows = [
        {"id": records[j // k].id, "sample": j % k, "gold": golds[j], "correct": verdicts[j],
         "response_tokens": lengths[j], "finish_reason": finish_reasons[j], "response": responses[j]}
        for j in range(len(responses))
    ]
    return summarize(name, correct, lengths, finish_reasons, num_filtered), rows


@contextlib.contextmanager
def _servers(cfg: EvalConfig):
    if cfg.urls:
        yield list(cfg.urls)
        return
    from areal_mega.rollout.launcher import launch_servers

    with launch_servers(cfg.model_dir, cfg.num_servers, backend=cfg.backend, api_key=cfg.api_key) as pool:
        yield pool.urls


def evaluate(cfg: EvalConfig, quiet: bool = False) -> dict:
    """Run the evaluation (see module docstring); returns the JSON report as a dict."""
    from areal_mega.models.tiny import load_tokenizer
    from areal_mega.rollout.client import GenerationClient
    from areal_mega.rollout.manager import generate_sync

    tokenizer = load_tokenizer(cfg.model_dir)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with _servers(cfg) as urls, RewardPool(cfg.reward) as pool:
        for name in cfg.data:
            records = load_jsonl(name)
            records = records[: cfg.limit] if cfg.limit else records
            prompts = build_prompts(records, tokenizer, cfg.template, cfg.max_prompt_tokens)
            client = GenerationClient(urls, api_key=cfg.api_key, backend=cfg.backend, max_concurrency=cfg.max_concurrency)
            batch = generate_sync(client, prompts.input_ids, cfg.k, cfg.sampling_params(tokenizer.eos_token_id),
                                  quiet=quiet)
            responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch.response_ids]
            summary, rows = score_dataset(name, prompts.records, responses, batch.response_lengths,
                                          batch.finish_reasons, cfg.k, pool, prompts.num_filtered,
                                          prompts.opens_think)
            summary["gen_tokens_per_s"] = batch.metrics.get("gen_tokens_per_s", 0.0)
            results.append(summary)
            with open(out_dir / f"samples_{Path(name).stem}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            if not quiet:
                print(f"{name}: Pass@1 (avg of {cfg.k}) = {100 * summary['pass@1_avg']:.1f}%")
        disagreement = pool.disagreement_rate()
    report = {"model": cfg.model_dir, "extraction_mode": cfg.reward.mode, "checker": cfg.reward.checker,
              "checker_disagreement_rate": disagreement, "config": to_dict(cfg), "results": results}
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    (out_dir / "eval.md").write_text(markdown_report(Path(cfg.model_dir).name or cfg.model_dir, results,
                                                     cfg.reward.mode, cfg.reward.checker))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file for EvalConfig")
    parser.add_argument("--data", help="comma-separated data sets, e.g. math500,aime24,amc23")
    parser.add_argument("-k", type=int, help="samples per problem (default 32)")
    parser.add_argument("--model", help="model_dir")
    parser.add_argument("--urls", help="comma-separated URLs of running servers")
    parser.add_argument("--output-dir", help="where eval.json / eval.md go")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data=[{','.join(args.data.split(','))}]")
    if args.k is not None:
        overrides.append(f"k={args.k}")
    if args.model:
        overrides.append(f"model_dir={args.model}")
    if args.urls:
        overrides.append("urls=[" + ",".join(f"'{u}'" for u in args.urls.split(",")) + "]")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(EvalConfig, args.config, overrides)
    report = evaluate(cfg, quiet=args.quiet)
    print(markdown_report(Path(cfg.model_dir).name, report["results"], cfg.reward.mode, cfg.reward.checker))
    return report


if __name__ == "__main__":
    main()
