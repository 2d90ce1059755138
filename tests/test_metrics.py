"""MetricsLogger: metrics.jsonl rows, rank-0 only, resume truncation, wandb modes; timer."""
import json
import math
import time

import pytest
import torch

from areal_mega.metrics import MetricsLogger, WandbConfig, read_metrics, resolve_wandb_mode, timer

OFF = WandbConfig(mode="disabled")


def test_rows_are_plain_json_with_step(tmp_path):
    with MetricsLogger(tmp_path, OFF) as m:
        m.log(1, {"reward/mean": torch.tensor(2.5), "loss": float("nan"), "lr": 1e-6, "tag": "sft", "n": 3})
        m.log(2, {"reward/mean": 3.0, "grad_norm": torch.tensor(float("inf"))})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "reward/mean": 2.5, "loss": None, "lr": 1e-6, "tag": "sft", "n": 3},
        {"step": 2, "reward/mean": 3.0, "grad_norm": None},
    ]
    assert not (tmp_path / "wandb").exists()


def test_only_rank_zero_writes(tmp_path):
    with MetricsLogger(tmp_path / "r1", OFF, rank=1) as m:
        m.log(1, {"x": 1.0})
    assert not (tmp_path / "r1").exists()


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    with MetricsLogger(tmp_path, OFF) as m:
        for step in range(1, 5):
            m.log(step, {"x": float(step)})
    with MetricsLogger(tmp_path, OFF, resume_step=2) as m:
        m.log(3, {"x": 30.0})
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_read_metrics_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1}\n{"step": 2, "x": \n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_metrics(path)
    path.write_text('{"step": 1}\n\n["x"]\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:3.*'step'"):
        read_metrics(path)


def test_wandb_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="wandb.mode"):
        WandbConfig(mode="cloud")
    with pytest.raises(ValueError, match="wandb.project"):
        WandbConfig(project="")


def test_wandb_offline_run_carries_project_name_tags(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = WandbConfig(project="areal-test", name="tiny-run", tags=["cpu", "test"])
    m = MetricsLogger(tmp_path, cfg, config={"algo": {"kl_coef": 0.001}})
    run = m._wandb
    assert (run.project, run.name, sorted(run.tags), run.config["algo"]["kl_coef"]) == (
        "areal-test", "tiny-run", ["cpu", "test"], 0.001,
    )
    m.log(1, {"reward/mean": 1.0})
    m.close()
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert any(p.name.startswith("offline-run-") and p.name.endswith(run_id) for p in (tmp_path / "wandb").iterdir())


def test_timer_accumulates_seconds():
    times = {}
    with timer(times, "rollout"):
        time.sleep(0.05)
    with timer(times, "rollout"):
        time.sleep(0.02)
    with pytest.raises(RuntimeError):
        with timer(times, "train"):
            raise RuntimeError("boom")
    assert 0.07 <= times["time/rollout"] < 0.5
    assert "time/train" in times and math.isfinite(times["time/train"])


def test_step_line_shows_the_step_at_a_glance():
    from areal_mega.metrics import eval_line, step_line

    m = {"reward/mean": 1.25, "reward/accuracy": 0.625, "response_length/mean": 12.4, "train/clip_fraction": 0.031,
         "train/approx_kl": 1.2e-13, "logprob_diff_abs_mean": 3e-7, "time/rollout": 0.31, "time/reward": 0.05,
         "time/logprobs": 0.0, "time/train": 0.8, "time/sync": 0.04}
    line = step_line(7, 80, m)
    assert line.startswith("step  7/80 | reward +1.25 | acc 0.625 | len 12.4 | clip 0.031 | kl 1.2e-13")
    assert line.endswith("s: rollout 0.31 reward 0.05 logprobs 0.00 train 0.80 sync 0.04")
    assert step_line(3, 720, {"train/nll": 0.51234, "train/loss": 0.5}) == "step   3/720 | nll 0.5123"
    e = {"eval/accuracy": 0.4, "eval/accuracy_greedy": 0.85, "eval/metric": "Pass@1 averaged over k=4 samples at T=1"}
    assert eval_line(20, e) == ("eval at step 20: held-out accuracy 0.400 (Pass@1 averaged over k=4 samples at T=1)"
                                ", greedy 0.850")
