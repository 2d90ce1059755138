"""The shortened quickstart: a noisy SFT teacher through the engine, then RL at TP=2 corrects it."""
import json
from pathlib import Path

import pytest

from tests.distributed import run_train

REPO = Path(__file__).resolve().parents[2]


def _train(config: str, overrides: list[str]):
    run_train(2, config, overrides, timeout=1200)


def rl_40_steps(warm_start, run_dir) -> list[str]:
    """The shortened quickstart RL from the SFT warm start: 40 steps at TP=2 and the quickstart's lr 1e-4,
    held-out evaluation on 50 problems before and after. (lr 2e-4 learned faster from the 720-step warm start;
    from the 960-step one, seed 0, it fell apart: Pass@1 40% -> 47%, greedy 86% -> 64%.)"""
    return [f"engine.model_path={warm_start}", f"trainer.run_dir={run_dir}",
            "trainer.stages=[{max_new_tokens: 16, steps: 40}]", "trainer.eval_samples=50", "trainer.eval_every=0",
            "trainer.export_hf=false", "engine.parallel.tp=2", "engine.optimizer.lr=1.0e-4"]


def _slope(y: list[float]) -> float:
    """Least-squares slope of y against 0, 1, 2, ..."""
    n = len(y)
    t_mean, y_mean = (n - 1) / 2, sum(y) / n
    return sum((t - t_mean) * (v - y_mean) for t, v in enumerate(y)) / sum((t - t_mean) ** 2 for t in range(n))


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.multirank
def test_quickstart_shortened_reward_goes_up(quickstart_sft, tmp_path):
    nll = [r["train/nll"] for r in _rows(quickstart_sft / "metrics.jsonl") if "train/nll" in r]
    assert sum(nll[-20:]) / 20 < 0.5 * sum(nll[:20]) / 20
    assert (quickstart_sft / "hf" / "model.safetensors.index.json").is_file()
    # the noisy teacher (60% of its answers off by one): its samples at T = 1 are right ~40% of the time
    # (measured 39% on 200 held-out problems), while its most likely answer is mostly right (greedy 85%)
    sft = json.loads((quickstart_sft / "summary.json").read_text())
    assert sft["metric"].startswith("Pass@1 averaged over k=4 samples at T=1")
    assert 0.1 < sft["accuracy_after"] < 0.65 and sft["greedy_after"] > sft["accuracy_after"] + 0.1, sft

    _train(str(REPO / "configs/quickstart/rl.yaml"), rl_40_steps(quickstart_sft / "hf", tmp_path / "rl"))
    steps = [r for r in _rows(tmp_path / "rl" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["weight_version"] for r in steps] == list(range(1, 41))
    for r in steps:
        assert r["logprob_diff_abs_max"] < 1e-3  # after each sync the servers sample from the trainer's weights
        # one minibatch, old log-probs from the rollout: the PPO KL (k3, token mean) is taken in the forward
        # before the update, so it is only the train/rollout rounding (measured 1.5e-13 .. 4.1e-12; slime's bound)
        assert r["train/approx_kl"] < 1e-8, f"step {r['step']}: approx_kl {r['train/approx_kl']:.3g} before the update"
        assert r["train/skipped"] == 0.0 and r["train/entropy"] > 0
        assert {"time/rollout", "time/reward", "time/logprobs", "time/train", "time/sync"} <= r.keys()
    # the least-squares slope of the mean reward (sampled at T = 1) over the 40 steps: measured 0.057 per step
    # (TP=2, lr 1e-4, 960-step warm start, one run); one step's mean moves ~0.5
    reward = [r["reward/mean"] for r in steps]
    assert _slope(reward) > 0.02, reward
    # held-out Pass@1 (k=4 at T=1, 200 samples: one reading moves ~3.5 points) rises: measured 40% -> 53.5%
    # in 40 steps (50 problems; the asynchronous test's run 40% -> 55%)
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["accuracy_after"] > summary["accuracy_before"] + 0.08, summary
