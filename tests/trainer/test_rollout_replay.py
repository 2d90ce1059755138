"""Rollout and training apart: dump each step's rollout, train on the dump with no servers
(the same losses as the live run), and generate without training."""
import json
from pathlib import Path

import pytest

from areal_mega.trainer.batch import load_step_rollout
from tests.distributed import run_train

REPO = Path(__file__).resolve().parents[2]


def _train(model_dir, run_dir, *overrides):
    # adv_norm=none with a KL term: every step moves the weights, so step 2 depends on step 1's update
    run_train(2, REPO / "configs/quickstart/rl.yaml", [
        f"engine.model_path={model_dir}", f"trainer.run_dir={run_dir}", "trainer.stages=[{max_new_tokens: 16, steps: 2}]",
        "trainer.eval_samples=8", "trainer.export_hf=false", "algo.adv_norm=none", "algo.kl_coef=0.01",
        "data.batch_size=4", "rollout.n_samples=2", *overrides])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "reward/mean" in r}


@pytest.mark.slow
@pytest.mark.multirank
def test_replayed_rollouts_train_like_the_live_run(model_dir, tmp_path):
    live = _train(model_dir, tmp_path / "live", "trainer.dump_rollouts=true")
    dump = tmp_path / "live" / "rollouts"
    rollout, answers = load_step_rollout(dump, 2)
    assert len(rollout) == len(answers) == 8 and all(rollout.response_ids)

    replay = _train(model_dir, tmp_path / "replay", f"trainer.replay_rollouts={dump}")
    assert not (tmp_path / "replay" / "server_logs").exists()  # no generation server was started
    assert sorted(live) == sorted(replay) == [1, 2]
    assert live[2]["train/loss"] != live[1]["train/loss"]
    for step in (1, 2):
        for key in ("reward/mean", "response_length/mean", "train/loss", "train/grad_norm", "kl_reward"):
            assert replay[step][key] == pytest.approx(live[step][key], rel=1e-6, abs=1e-6), (step, key)


@pytest.mark.slow
@pytest.mark.multirank
def test_rollout_only_generates_and_never_trains(model_dir, tmp_path):
    rows = _train(model_dir, tmp_path / "gen", "trainer.rollout_only=true", "trainer.dump_rollouts=true")
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert row["weight_version"] == 0 and "train/loss" not in row and "time/sync" not in row
        assert 0.0 <= row["reward/accuracy"] <= 1.0
    for step in (1, 2):
        rollout, _ = load_step_rollout(tmp_path / "gen" / "rollouts", step)
        assert set(rollout.weight_versions) == {"default"} or set(rollout.weight_versions) == {"0"}
    with pytest.raises(FileNotFoundError, match="no step 3"):
        load_step_rollout(tmp_path / "gen" / "rollouts", 3)
    # its checkpoint holds no Adam state yet; a longer run resumes from it at step 3
    rows = _train(model_dir, tmp_path / "gen", "trainer.rollout_only=true", "trainer.dump_rollouts=true",
                  "trainer.stages=[{max_new_tokens: 16, steps: 3}]")
    assert sorted(rows) == [1, 2, 3]
    first, third = load_step_rollout(tmp_path / "gen" / "rollouts", 1)[0], load_step_rollout(
        tmp_path / "gen" / "rollouts", 3)[0]
    assert first.prompt_ids != third.prompt_ids  # the sampler went on from its saved position
