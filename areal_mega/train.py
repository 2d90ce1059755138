"""The RL loop (DESIGN.md §3): `torchrun ... -m areal_mega.train --config FILE [key=value ...]`.

Per step: sample prompts -> n rollouts each on the generation servers ->
rewards -> logprobs (policy, reference) -> advantages -> PPO updates ->
weight sync -> metrics, checkpoint, evaluation. `trainer.mode=sft` trains
on the gold answers instead (the quickstart's warm start). Stages lengthen
the context (AReaL v0.1: 8K -> 16K -> 24K), each continuing the last.
"""
from __future__ import annotations

import argparse
import time

from areal_mega.config import load_config
from areal_mega.engine.export import save_hf_checkpoint
from areal_mega.engine.sft import sft_loss
from areal_mega.metrics import eval_line, step_line
from areal_mega.platform.quiet import silence_known_warnings
from areal_mega.trainer.config import RunConfig, stage_of
from areal_mega.trainer.session import Session, sft_batch, timed


def rollout_metrics(rollout, rewards, correct) -> dict:
    """Reward and length figures of a rollout (rewards `[num_samples]`, correct `[num_generated]` 0/1)."""
    lengths = [len(r) for r in rollout.response_ids]
    return {
        "reward/mean": float(rewards.mean()), "reward/accuracy": float(correct.mean()),
        "response_length/mean": sum(lengths) / len(lengths), "response_length/max": max(lengths),
        "rollout/tokens_per_s": rollout.metrics.get("gen_tokens_per_s", 0.0),
        **{k: v for k, v in rollout.metrics.items() if k.startswith(("async/", "reward/"))},
    }


def rl_step(s: Session, max_new_tokens: int) -> dict:
    times: dict = {}
    rollout, golds = timed(times, "rollout", s.rollout, max_new_tokens)
    rewards, correct = timed(times, "reward", s.score, rollout, golds)
    if s.cfg.trainer.rollout_only:
        return {**rollout_metrics(rollout, rewards, correct), **times} if s.is_controller else {}
    rollout, rewards, mask = s.prepare(rollout, rewards) if s.is_controller else (None, None, None)
    old_lp, ref_lp = timed(times, "logprobs", s.logprobs, rollout)
    batch, algo_stats = s.advantages(rollout, rewards, mask, old_lp, ref_lp) if s.is_controller else (None, {})
    train_stats, mismatch = timed(times, "train", s.train, batch)
    sync_stats = timed(times, "sync", s.sync_weights)
    if not s.is_controller:
        return {}
    return {
        **rollout_metrics(rollout, rewards, correct),
        "train/tokens_per_s": sum(len(ids) for ids in batch.input_ids) / times["time/train"],
        **algo_stats, **mismatch, **{f"train/{k}": v for k, v in train_stats.items()}, **sync_stats, **times,
    }


def sft_step(s: Session) -> dict:
    stats = s.policy.train_step(sft_batch(s), sft_loss)
    return {f"train/{k}": v for k, v in stats.items()}


def evaluate(s: Session, quiet: bool = False) -> dict:
    """Held-out evaluation (controller); logged and printed unless `quiet` (then the caller does)."""
    metrics = s.evaluate()
    if metrics and not quiet:
        s.log(metrics)
        print(eval_line(s.step, metrics), flush=True)
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. algo.kl_coef=0.001")
    args = parser.parse_args(argv)
    silence_known_warnings()
    cfg = load_config(RunConfig, args.config, args.overrides)
    s = Session(cfg)
    start = time.time()
    total = sum(stage.steps for stage in cfg.trainer.stages)
    evaluated_at = None  # the step of the last held-out evaluation
    if not s.resumed:
        evaluate(s)
        evaluated_at = s.step
    while s.step < total:
        s.step += 1
        stage = stage_of(cfg, s.step)
        metrics = sft_step(s) if cfg.trainer.mode == "sft" else rl_step(s, stage.max_new_tokens)
        if cfg.trainer.eval_every and s.step % cfg.trainer.eval_every == 0:
            if cfg.trainer.mode == "sft":
                s.sync_weights()
            metrics.update(evaluate(s, quiet=True))
            evaluated_at = s.step
        s.log({**metrics, "weight_version": s.weight_version, "wall_seconds": time.time() - start})
        if s.is_controller and (s.step % cfg.trainer.log_every == 0 or s.step == total):
            print(step_line(s.step, total, metrics), flush=True)
            if "eval/accuracy" in metrics:
                print(eval_line(s.step, metrics), flush=True)
        if cfg.trainer.save_every and s.step % cfg.trainer.save_every == 0:
            s.save()
        if s.stop_requested():
            s.save()
            s.close()
            return
    if evaluated_at != s.step:  # the last step's evaluation, unless trainer.eval_every just ran it
        if cfg.trainer.mode == "sft":
            s.sync_weights()
        evaluate(s)
    s.save()
    if cfg.trainer.export_hf:
        save_hf_checkpoint(s.policy, s.run_dir / "hf")
    s.write_summary(time.time() - start)
    s.close()


if __name__ == "__main__":
    main()
