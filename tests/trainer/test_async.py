"""Asynchronous RL (trainer.async_rollout): eta = 0 is the synchronous loop (the golden metrics of
test_resume's straight run), eta = 2 never trains a token more than 2 versions old, the decoupled
objective runs, a resumed asynchronous run trains every prompt exactly once, and the shortened
quickstart still learns at eta = 2 (test_train_loop's reward-slope bound)."""
import json

import pytest

from tests.distributed import run_train
from tests.trainer.test_resume import CONFIG, KEYS, REPO, _check_golden, _overrides, _steps
from tests.trainer.test_train_loop import _rows, _slope, rl_40_steps


def _args(model_dir, run_dir, steps, *extra):
    return [f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", *_overrides(steps),
            "trainer.async_rollout=true", *extra]


def _dumped(run_dir, step):
    return json.loads((run_dir / "rollouts" / f"step_{step:06d}.json").read_text())


@pytest.mark.slow
@pytest.mark.multirank
def test_eta_zero_is_the_synchronous_loop(model_dir, tmp_path):
    run_train(2, REPO / CONFIG, _args(model_dir, tmp_path / "run", 4, "trainer.max_staleness=0"))
    steps = _steps(tmp_path / "run")
    for row in steps.values():
        assert row["async/staleness_max"] == 0.0 and row["async/interrupted_samples"] == 0.0
    _check_golden({step: {key: row[key] for key in KEYS} for step, row in steps.items()}, _overrides(4))


@pytest.mark.slow
@pytest.mark.multirank
def test_eta_two_bounds_staleness_and_resume_trains_each_prompt_once(model_dir, tmp_path):
    extra = ["trainer.max_staleness=2", "trainer.dump_rollouts=true", "algo.old_logprobs=recompute",
             "algo.objective=decoupled"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(2, REPO / CONFIG, _args(model_dir, straight, 5, *extra))
    rows = _steps(straight)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    lagged = 0
    for step, row in rows.items():
        versions = [int(v) for v in _dumped(straight, step)["weight_versions"]]
        trainer_version = step - 1  # the policy that trains on step `step` has had step - 1 updates
        assert all(trainer_version - v <= 2 for v in versions), (step, versions)
        assert row["async/staleness_max"] <= 2
        lagged += row["async/staleness_max"] > 0
        assert row["train/skipped"] == 0.0 and "train/behav_weight_mean" in row
    assert lagged, "generation never ran ahead of training"

    run_train(2, REPO / CONFIG, _args(model_dir, resumed, 2, *extra))  # stops after step 2, batches 3-4 in flight
    run_train(2, REPO / CONFIG, _args(model_dir, resumed, 5, *extra))
    assert sorted(_steps(resumed)) == [1, 2, 3, 4, 5]
    prompts = {run: [sorted(map(tuple, _dumped(run, step)["prompt_ids"])) for step in range(1, 6)]
               for run in (straight, resumed)}
    assert prompts[resumed] == prompts[straight]  # the same sampler batches, in the same steps
    trained = [p for step in prompts[resumed] for p in set(step)]
    assert len(trained) == len(set(trained)) == 5 * 4  # batch_size 4: every prompt once, none twice


@pytest.mark.slow
@pytest.mark.multirank
def test_eta_two_decoupled_still_learns(quickstart_sft, tmp_path):
    """The synchronous loop's learning test (test_train_loop: same warm start, 40 steps, same bound on the
    least-squares slope of the mean reward) with generation running up to 2 versions ahead and the
    decoupled objective."""
    run_train(2, REPO / "configs/quickstart/rl.yaml",
              [*rl_40_steps(quickstart_sft / "hf", tmp_path / "rl"), "trainer.async_rollout=true",
               "trainer.max_staleness=2", "algo.old_logprobs=recompute", "algo.objective=decoupled"], timeout=1200)
    steps = [r for r in _rows(tmp_path / "rl" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["weight_version"] for r in steps] == list(range(1, 41))
    assert all(r["async/staleness_max"] <= 2 and r["train/skipped"] == 0.0 for r in steps)
    assert sum(r["async/staleness_max"] > 0 for r in steps) >= 10, "generation seldom ran ahead of training"
    # measured (one run, quiet, lr 1e-4, 960-step warm start): slope 0.062 per step (the synchronous loop's 0.057),
    # held-out Pass@1 40% -> 55%; earlier at lr 2e-4 and lr 1e-9: slope 0.071 and 0.011, Pass@1 31% -> 63% and 31% -> 31%
    reward = [r["reward/mean"] for r in steps]
    assert _slope(reward) > 0.02, reward
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["accuracy_after"] > summary["accuracy_before"] + 0.08, summary
